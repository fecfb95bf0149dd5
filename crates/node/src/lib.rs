//! node (placeholder)
