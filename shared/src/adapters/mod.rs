//! Adapters of the store and queue ports.

pub mod embedded;
