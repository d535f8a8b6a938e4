//! Leaves every layer may use, with no knowledge of microscaler: locks that survive a panic, the
//! fault injection of the end-to-end tests, and tickets for "a pass that began after my change".

pub mod failpoint;
pub mod tickets;
pub mod unpoisoned;
