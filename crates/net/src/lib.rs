//! net (placeholder)
