//! resp (placeholder)
