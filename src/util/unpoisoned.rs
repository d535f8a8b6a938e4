//! Locks that stay usable after a panic elsewhere: one group's failure must never stop the others.
//!
//! A `std::sync::Mutex` is poisoned when a thread panics while holding it, and every later
//! `lock().expect(..)` panics too. State shared between groups (the reconciler's memory, the
//! autoscaler's per-group history, the zones' caches, the queue) is kept per key, so a panic in
//! one group's code leaves at worst that group's entry half-updated: the others must go on
//! (issue 9: one tenant's policy poisoned the autoscaler's lock, and then every reconcile of
//! every tenant panicked). These helpers take the guard whether or not the lock is poisoned.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `lock()` that ignores poisoning.
pub trait LockExt<T> {
    /// The guard, even when another thread panicked while holding the lock.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `read()` / `write()` that ignore poisoning.
pub trait RwLockExt<T> {
    /// A read guard, even after a panic while the lock was held.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// A write guard, even after a panic while the lock was held.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> RwLockExt<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The message of a caught panic (`panic!("...")` payloads are `&str` or `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_holding_the_lock_does_not_stop_later_users() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("one group's bug");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);

        let rw = std::sync::Arc::new(RwLock::new(1));
        let rw2 = rw.clone();
        let _ = std::thread::spawn(move || {
            let _g = rw2.write().unwrap();
            panic!("one group's bug");
        })
        .join();
        *rw.write_locked() += 1;
        assert_eq!(*rw.read_locked(), 2);
    }
}
