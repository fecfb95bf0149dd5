//! sim (placeholder)
