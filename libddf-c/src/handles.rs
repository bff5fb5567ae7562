//! Handles given to C: numbers, not pointers to library memory.
//!
//! Every object C holds (a reply, a waker, a client ...) lives in a
//! [`Table`] under a number that is never reused, and C gets that number
//! dressed as an opaque pointer. A handle that was answered, freed or never
//! given out is then simply not found, instead of being memory the library
//! would read: the library can say "answered twice" rather than crash or
//! corrupt itself. One counter numbers the objects of every table, so a
//! handle of one kind is never found in the table of another.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::ffi::violation;

/// The next handle number; steps of 16 keep them looking like (aligned)
/// pointers in a debugger and far from NULL.
static NEXT: AtomicUsize = AtomicUsize::new(0x1000);

/// Objects of one kind, by handle number.
#[derive(Debug)]
pub(crate) struct Table<T> {
    map: Mutex<BTreeMap<usize, T>>,
    /// What the objects are, for messages ("a reply").
    kind: &'static str,
    /// What ends a handle's life ("answered", "freed").
    ends: &'static str,
}

impl<T> Table<T> {
    /// An empty table (for a `static`) of `kind` objects whose handles end
    /// when they are `ends`.
    pub(crate) const fn new(kind: &'static str, ends: &'static str) -> Table<T> {
        Table { map: Mutex::new(BTreeMap::new()), kind, ends }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<usize, T>> {
        // A panic while the lock was held (caught at the boundary) leaves a
        // consistent map: every operation is one insert, remove or lookup.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `v`; returns its handle as an opaque pointer.
    pub(crate) fn insert<P>(&self, v: T) -> *mut P {
        let id = NEXT.fetch_add(16, Ordering::Relaxed);
        self.lock().insert(id, v);
        std::ptr::without_provenance_mut(id)
    }

    /// Removes and returns the object behind `handle`, if there is one.
    pub(crate) fn take<P>(&self, handle: *const P) -> Option<T> {
        self.lock().remove(&handle.addr())
    }

    /// Runs `f` on the object behind `handle`, if there is one, under the
    /// table's lock (keep `f` short: clone what a long call needs).
    pub(crate) fn with<P, R>(&self, handle: *const P, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.lock().get_mut(&handle.addr()).map(f)
    }

    /// Why the handle `what` of `func` is not in the table: an API
    /// violation, which ends the process.
    fn not_found<P>(&self, func: &str, what: &str, handle: *const P) -> ! {
        if handle.is_null() {
            violation(func, format_args!("{what} is NULL"));
        }
        violation(
            func,
            format_args!("{what} {handle:p} was {} already, or is not {} the library gave out", self.ends, self.kind),
        )
    }

    /// Runs `f` on the object behind the argument `what` of `func`; a
    /// handle that is NULL or not in the table ends the process.
    pub(crate) fn expect_with<P, R>(&self, func: &str, what: &str, handle: *const P, f: impl FnOnce(&mut T) -> R) -> R {
        match self.with(handle, f) {
            Some(r) => r,
            None => self.not_found(func, what, handle),
        }
    }

    /// Takes the object behind the argument `what` of `func`; a handle that
    /// is NULL or not in the table ends the process.
    pub(crate) fn expect_take<P>(&self, func: &str, what: &str, handle: *const P) -> T {
        match self.take(handle) {
            Some(v) => v,
            None => self.not_found(func, what, handle),
        }
    }

    /// How many objects the table holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_found_once_and_never_again() {
        let t: Table<u32> = Table::new("a number", "taken");
        let h = t.insert::<u8>(7);
        assert!(!h.is_null());
        assert_eq!(t.with(h, |v| *v), Some(7));
        assert_eq!(t.take(h), Some(7));
        assert_eq!(t.take(h), None, "a handle was found after it was taken");
        let h2 = t.insert::<u8>(8);
        assert_ne!(h, h2, "a handle number was reused");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn handles_of_two_tables_never_meet() {
        let a: Table<u32> = Table::new("a number", "taken");
        let b: Table<u32> = Table::new("a number", "taken");
        let ha = a.insert::<u8>(1);
        let hb = b.insert::<u8>(2);
        assert_eq!(b.with(ha, |v| *v), None);
        assert_eq!(a.with(hb, |v| *v), None);
        assert_eq!(a.take(std::ptr::null::<u8>()), None);
    }
}
