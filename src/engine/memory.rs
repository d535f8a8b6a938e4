//! In-memory engine.
