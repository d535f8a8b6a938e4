//! Leaves every layer may use, with no knowledge of microscaler: locks that survive a panic, and
//! the fault injection of the end-to-end tests.

pub mod crypto;
pub mod failpoint;
pub mod unpoisoned;
