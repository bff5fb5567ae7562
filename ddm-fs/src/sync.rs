//! The DDM's locks: `Mutex`, `RwLock` and `Condvar` that recover from
//! poisoning in one place, and that check the lock order.
//!
//! A thread that panics while it holds a lock poisons it; the DDM keeps
//! serving rather than cascading one bug into every thread, so every lock
//! here hands out the data anyway.
//!
//! Every lock has a [`Rank`]. A thread may only take a lock of a higher rank
//! than every lock it holds; the ranks are the DDM's lock order, written
//! down once, here. Debug builds (the tests) check it at every acquisition
//! and panic with both locks named when it is broken, so an order that could
//! deadlock under load fails a test the first time the path runs, not once
//! in a blue moon. Release builds check nothing and pay nothing.

use std::ops::{Deref, DerefMut};
use std::sync::PoisonError;
use std::time::Duration;

/// The lock order: a lock may be taken only while every lock held has a
/// lower rank. Leaf locks (nothing is taken under them) come last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// Serializes permission changes (chmod, chown, ACLs): held across the
    /// durable write, so that changes land in the store and the tree in the
    /// same order, while the tree itself stays free for lookups.
    PermChange,
    /// `Core::tree`.
    Tree,
    /// `Instance::live`.
    Live,
    /// `Core::files`.
    Files,
    /// `Core::backings`.
    Backings,
    /// `Conn::failed`: held while a link is killed, so that a second killer
    /// waits for the first and learns what was in flight.
    Kill,
    /// `Conn::pending`.
    Pending,
    /// `Conn::out`.
    Out,
    /// Leaves, taken under anything, nothing under them: `Core::bindings`,
    /// `Core::instances`, the permission store, a driver's state store,
    /// counters and DMA memory, the event listeners.
    Leaf,
}

#[cfg(debug_assertions)]
mod order {
    use super::Rank;
    use std::cell::RefCell;

    thread_local! {
        static HELD: RefCell<Vec<Rank>> = const { RefCell::new(Vec::new()) };
    }

    /// Records that this thread takes a lock of `rank`, after checking it
    /// may.
    pub fn acquire(rank: Rank) {
        HELD.with(|h| {
            let mut held = h.borrow_mut();
            if let Some(top) = held.iter().max().copied() {
                if top >= rank {
                    drop(held);
                    panic!("lock order broken: taking {rank:?} while holding {top:?} (see ddm_fs::sync::Rank)");
                }
            }
            held.push(rank);
        });
    }

    /// Records that this thread let go of a lock of `rank`.
    pub fn release(rank: Rank) {
        HELD.with(|h| {
            let mut held = h.borrow_mut();
            if let Some(i) = held.iter().rposition(|r| *r == rank) {
                held.remove(i);
            }
        });
    }
}

#[cfg(not(debug_assertions))]
mod order {
    use super::Rank;

    #[inline(always)]
    pub fn acquire(_rank: Rank) {}

    #[inline(always)]
    pub fn release(_rank: Rank) {}
}

/// A mutex with a rank that recovers from poisoning.
#[derive(Debug)]
pub struct Mutex<T> {
    rank: Rank,
    inner: std::sync::Mutex<T>,
}

/// The guard of a [`Mutex`].
#[derive(Debug)]
pub struct MutexGuard<'a, T> {
    rank: Rank,
    inner: std::sync::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    /// A mutex of `rank` holding `value`.
    pub const fn new(rank: Rank, value: T) -> Mutex<T> {
        Mutex { rank, inner: std::sync::Mutex::new(value) }
    }

    /// Takes the lock (after the order check, in debug builds).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        order::acquire(self.rank);
        MutexGuard { rank: self.rank, inner: self.inner.lock().unwrap_or_else(PoisonError::into_inner) }
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let inner = match self.inner.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        order::acquire(self.rank);
        Some(MutexGuard { rank: self.rank, inner })
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        order::release(self.rank);
    }
}

/// A condition variable for a [`Mutex`].
#[derive(Debug, Default)]
pub struct Condvar(std::sync::Condvar);

impl Condvar {
    /// A new condition variable.
    pub const fn new() -> Condvar {
        Condvar(std::sync::Condvar::new())
    }

    /// Waits for a notification (the lock is let go meanwhile).
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        let rank = guard.rank;
        let inner = take_inner(guard);
        MutexGuard { rank, inner: self.0.wait(inner).unwrap_or_else(PoisonError::into_inner) }
    }

    /// Waits for a notification or `timeout`.
    pub fn wait_timeout<'a, T>(&self, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
        let rank = guard.rank;
        let inner = take_inner(guard);
        let (inner, _) = self.0.wait_timeout(inner, timeout).unwrap_or_else(PoisonError::into_inner);
        MutexGuard { rank, inner }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.0.notify_all();
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.0.notify_one();
    }
}

/// The std guard inside ours, without recording a release: the lock stays
/// ours in the order check while a condition variable waits on it (the
/// thread takes nothing else meanwhile).
fn take_inner<T>(guard: MutexGuard<'_, T>) -> std::sync::MutexGuard<'_, T> {
    let guard = std::mem::ManuallyDrop::new(guard);
    // SAFETY: `guard` is never used or dropped again (ManuallyDrop), so
    // moving its field out by `ptr::read` neither duplicates nor leaks it:
    // the std guard moves on to the caller, and our Drop (which would record
    // a release) does not run.
    unsafe { std::ptr::read(&guard.inner) }
}

/// A reader-writer lock with a rank that recovers from poisoning.
#[derive(Debug)]
pub struct RwLock<T> {
    rank: Rank,
    inner: std::sync::RwLock<T>,
}

/// A read guard of a [`RwLock`].
#[derive(Debug)]
pub struct ReadGuard<'a, T> {
    rank: Rank,
    inner: std::sync::RwLockReadGuard<'a, T>,
}

/// A write guard of a [`RwLock`].
#[derive(Debug)]
pub struct WriteGuard<'a, T> {
    rank: Rank,
    inner: std::sync::RwLockWriteGuard<'a, T>,
}

impl<T> RwLock<T> {
    /// A lock of `rank` holding `value`.
    pub const fn new(rank: Rank, value: T) -> RwLock<T> {
        RwLock { rank, inner: std::sync::RwLock::new(value) }
    }

    /// Takes the lock shared.
    pub fn read(&self) -> ReadGuard<'_, T> {
        order::acquire(self.rank);
        ReadGuard { rank: self.rank, inner: self.inner.read().unwrap_or_else(PoisonError::into_inner) }
    }

    /// Takes the lock exclusive.
    pub fn write(&self) -> WriteGuard<'_, T> {
        order::acquire(self.rank);
        WriteGuard { rank: self.rank, inner: self.inner.write().unwrap_or_else(PoisonError::into_inner) }
    }

    /// Takes the lock shared if no writer holds it now.
    pub fn try_read(&self) -> Option<ReadGuard<'_, T>> {
        let inner = match self.inner.try_read() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        order::acquire(self.rank);
        Some(ReadGuard { rank: self.rank, inner })
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        order::release(self.rank);
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        order::release(self.rank);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_in_order_are_fine_and_release_in_any_order() {
        let a = Mutex::new(Rank::Tree, 1);
        let b = Mutex::new(Rank::Live, 2);
        let c = RwLock::new(Rank::Files, 3);
        let ga = a.lock();
        let gb = b.lock();
        let gc = c.read();
        drop(gb);
        drop(ga);
        assert_eq!(*gc, 3);
        drop(gc);
        // After letting go of everything, a low rank may be taken again.
        let mut ga = a.lock();
        *ga += 1;
        assert_eq!(*ga, 2);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "lock order broken: taking Live while holding Files")]
    fn a_lower_rank_under_a_higher_one_is_caught() {
        let files = Mutex::new(Rank::Files, ());
        let live = Mutex::new(Rank::Live, ());
        let _f = files.lock();
        let _l = live.lock();
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "taking Tree while holding Tree")]
    fn the_same_rank_twice_is_caught() {
        let t = RwLock::new(Rank::Tree, ());
        let _a = t.read();
        let _b = t.read();
    }

    #[test]
    fn a_poisoned_lock_still_hands_out_its_data() {
        let m = std::sync::Arc::new(Mutex::new(Rank::Leaf, 5));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            panic!("poison it");
        })
        .join();
        assert_eq!(*m.lock(), 5);
    }

    #[test]
    fn a_condvar_wait_keeps_the_lock_counted_and_gives_it_back() {
        let m = Mutex::new(Rank::Live, false);
        let cv = Condvar::new();
        let g = m.lock();
        let g = cv.wait_timeout(g, Duration::from_millis(1));
        assert!(!*g);
        drop(g);
        let tree = Mutex::new(Rank::Tree, ());
        let _t = tree.lock();
    }
}
