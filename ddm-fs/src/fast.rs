//! The fast path of a driver link: calls through the ring ddm shares with
//! the driver ([`ddf::ring`]), answered on the FUSE worker's own thread.
//!
//! A FUSE worker that makes a call while the driver spins on another CPU
//! writes it into a free slot and spins a bounded, adaptive time for the
//! answer. If the answer comes in time, the worker copies it out of the slot
//! once, validates the copy, and replies to the kernel itself: no reader
//! thread is woken, and no socket is crossed. If not, it leaves the answer
//! to the socket ([`SlotState::Orphan`]) and the request stays parked, as on
//! the slow path; a driver that keeps a call (a keyboard read with no key)
//! says so at once ([`SlotState::Deferred`]). No worker waits longer than
//! the budget, microseconds.
//!
//! When not to spin: when the driver does not spin (it sleeps: wake-ups cost
//! more than the socket), when it last ran on this worker's CPU, when as
//! many ddm threads spin as there are CPUs but one, or when ddm has too many
//! busy links for spinning to pay ([`govern`]).
//!
//! Anything wrong in the slot (a state, a length, a frame, an id) is the
//! driver's protocol violation: it is killed and restarted, and the caller
//! gets `EIO`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ddf::proto::{Call, DdmToDriver, RequestId, RingSpec};
use ddf::ring::{current_cpu, spin_until, usable_cpus, Doorbell, Ring, RingError, SlotState, SpinBudget};

use crate::conn::Conn;
use crate::reply::Parked;
use crate::sync::{Mutex, Rank};

/// ddm threads spinning on a ring now (across every link).
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// A link's ring, as ddm holds it.
#[derive(Debug)]
pub struct LinkRing {
    /// The ring.
    pub ring: Ring,
    /// The driver's doorbell.
    pub bell: Doorbell,
    budget: Mutex<SpinBudget>,
    /// Calls made by the ring, and in all (for the governor).
    pub fast_calls: AtomicU64,
    calls_seen: AtomicU64,
    /// The most ddm threads that may spin at once.
    max_spinners: usize,
    /// The slots ddm's workers hold now, one bit each.
    owned: AtomicU64,
}

impl LinkRing {
    /// A new ring for a link, its doorbell, and the budget a worker spins;
    /// at most `max_spinners` ddm threads spin at once (see
    /// [`default_spinners`]).
    pub fn new(max_spinners: usize, fixed_spin: Option<Duration>) -> Result<LinkRing, RingError> {
        let spec = RingSpec { slots: ddf::ring::DEFAULT_SLOTS, slot_size: ddf::ring::DEFAULT_SLOT_SIZE };
        let ring = Ring::create(spec)?;
        ring.set_spin_allowed(true);
        let budget = match fixed_spin {
            Some(d) => SpinBudget::new(d, d, d),
            None => SpinBudget::new(Duration::from_micros(30), Duration::from_micros(5), Duration::from_micros(100)),
        };
        Ok(LinkRing {
            ring,
            bell: Doorbell::new()?,
            budget: Mutex::new(Rank::Leaf, budget),
            fast_calls: AtomicU64::new(0),
            calls_seen: AtomicU64::new(0),
            max_spinners,
            owned: AtomicU64::new(0),
        })
    }

    /// Claims a free slot for a call. A slot no worker holds may only be
    /// free, or orphaned (the driver still owes it): anything else means
    /// the driver writes where it may not, a protocol violation.
    fn claim(&self) -> Result<Option<usize>, String> {
        let owned = self.owned.load(Ordering::Acquire);
        for slot in 0..self.ring.slots() {
            if owned & (1 << slot) != 0 {
                continue;
            }
            match self.ring.state(slot).map_err(|e| e.to_string())? {
                SlotState::Free => {
                    if self.ring.transition(slot, SlotState::Free, SlotState::Claimed).is_ok() {
                        self.owned.fetch_or(1 << slot, Ordering::AcqRel);
                        return Ok(Some(slot));
                    }
                }
                SlotState::Orphan | SlotState::OrphanBusy | SlotState::Abandoned | SlotState::Claimed => {}
                other => {
                    // Another worker may have claimed it since `owned` was
                    // read: it sets its bit before it publishes anything.
                    if self.owned.load(Ordering::Acquire) & (1 << slot) == 0 {
                        return Err(format!("slot {slot}, held by no call, went {other:?}"));
                    }
                }
            }
        }
        Ok(None)
    }

    /// A worker is done with `slot`.
    fn release(&self, slot: usize) {
        self.owned.fetch_and(!(1 << slot), Ordering::AcqRel);
    }
}

/// As many spinners as CPUs but one (the caller's): a worker spins while
/// the driver spins on another CPU.
pub fn default_spinners() -> usize {
    usable_cpus().saturating_sub(1).max(1)
}

/// What went wrong with an answer that came by the ring.
#[derive(Debug)]
pub enum FastError<E> {
    /// The slot held something that is no answer to the call.
    Ring(String),
    /// The answer was refused by whoever took it.
    Answer(E),
}

/// A held place among the spinners; let go when dropped.
struct Spinner;

impl Spinner {
    fn take(limit: usize) -> Option<Spinner> {
        if SPINNING.fetch_add(1, Ordering::AcqRel) >= limit {
            SPINNING.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Spinner)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        SPINNING.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conn {
    /// Makes `call` like [`Conn::call`], by the ring when that pays. An
    /// answer that comes in the ring within the spin budget is handed to
    /// `answered` (its request id, the parked reply, the reply frame copied
    /// out of the slot) on this thread; any other answer completes the parked
    /// reply later, from the reader, as on the slow path.
    pub fn call_fast<E>(
        &self,
        call: Call,
        payload: &[u8],
        parked: Parked,
        pid: u32,
        answered: impl FnOnce(RequestId, Parked, &[u8]) -> Result<(), E>,
    ) -> Result<(), FastError<E>> {
        let Some(id) = self.register(&call, parked, pid) else { return Ok(()) };
        let Some(fast) = self.fast.get() else {
            self.send_call(id, call, payload);
            return Ok(());
        };
        let cpu = current_cpu();
        let ring = &fast.ring;
        let spinner =
            (ring.driver_spinning() && ring.driver_cpu() != cpu).then(|| Spinner::take(fast.max_spinners)).flatten();
        let slot = match spinner.as_ref().map(|_| fast.claim()) {
            Some(Ok(slot)) => slot,
            Some(Err(why)) => return Err(FastError::Ring(why)),
            None => None,
        };
        let (Some(_spinner), Some(slot)) = (spinner, slot) else {
            // By the socket; still, the driver learns where its caller runs:
            // one that spins on this CPU after its answer holds the CPU
            // that the answer's reader (and the next call) needs.
            ring.set_caller_cpu(cpu);
            self.send_call(id, call, payload);
            return Ok(());
        };
        let outcome = self.in_slot(fast, slot, id, call, payload, cpu, answered);
        fast.release(slot);
        outcome
    }

    /// The fast path of call `id`, in `slot` (claimed).
    #[allow(clippy::too_many_arguments)]
    fn in_slot<E>(
        &self,
        fast: &LinkRing,
        slot: usize,
        id: RequestId,
        call: Call,
        payload: &[u8],
        cpu: u32,
        answered: impl FnOnce(RequestId, Parked, &[u8]) -> Result<(), E>,
    ) -> Result<(), FastError<E>> {
        let ring = &fast.ring;
        FRAME.with_borrow_mut(|(header, frame)| {
            if ddf::ipc::encode_header(&DdmToDriver::Call { id, call: call.clone() }, header).is_err()
                || !ring.write_frame(slot, header, payload)
            {
                ring.set(slot, SlotState::Free);
                self.send_call(id, call, payload);
                return Ok(());
            }
            fast.fast_calls.fetch_add(1, Ordering::Relaxed);
            ring.set_caller_cpu(cpu);
            ring.set(slot, SlotState::Request);
            if ring.take_doorbell() {
                let _ = fast.bell.ring();
            }
            let budget = fast.budget.lock().get();
            let (seen, waited) = spin_until(budget, || {
                if self.is_dead() {
                    return Some(None);
                }
                match ring.state(slot) {
                    Ok(SlotState::Request | SlotState::Busy) => None,
                    Ok(s) => Some(Some(s)),
                    Err(_) => Some(None),
                }
            });
            if self.is_dead() {
                // The link was killed: everything in flight, this call too,
                // was failed with EIO.
                return Ok(());
            }
            let state = match seen {
                Some(_) => {
                    fast.budget.lock().hit(waited);
                    ring.state(slot)
                }
                None => {
                    fast.budget.lock().miss();
                    if ring.give_up(slot) {
                        // The answer comes by the socket; the call is parked.
                        return Ok(());
                    }
                    ring.state(slot)
                }
            };
            match state {
                Ok(SlotState::Reply) => {
                    let copied = ring.read_frame(slot, frame);
                    ring.set(slot, SlotState::Free);
                    copied.map_err(|e| FastError::Ring(e.to_string()))?;
                    let Some(p) = self.pending.lock().remove(&id) else {
                        if self.is_dead() {
                            return Ok(());
                        }
                        return Err(FastError::Ring(format!(
                            "answer in the ring to request {}, answered already",
                            id.0
                        )));
                    };
                    answered(id, p.parked, frame).map_err(FastError::Answer)
                }
                Ok(SlotState::Deferred) => {
                    ring.set(slot, SlotState::Free);
                    Ok(())
                }
                Ok(other) => Err(FastError::Ring(format!("slot {slot} went from a call to {other:?}"))),
                Err(e) => Err(FastError::Ring(e.to_string())),
            }
        })
    }

    /// Calls made so far by the ring (for the governor and the benchmark).
    pub fn fast_calls(&self) -> u64 {
        self.fast.get().map_or(0, |f| f.fast_calls.load(Ordering::Relaxed))
    }
}

thread_local! {
    /// A worker's buffers for the call's header and the answer copied out.
    static FRAME: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Allows drivers to spin only while few links are busy: with more busy
/// links than CPUs but one, spinning drivers would take the CPUs their
/// callers need. `links` are the rings of running drivers and how many
/// requests each has seen; called now and then (by the watchdog).
pub fn govern<'a>(links: impl Iterator<Item = (&'a LinkRing, u64)>) {
    let links: Vec<(&LinkRing, u64)> = links.collect();
    let busy = links.iter().filter(|(l, calls)| l.calls_seen.swap(*calls, Ordering::Relaxed) != *calls).count();
    let allow = busy <= usable_cpus().saturating_sub(1).max(1);
    for (l, _) in links {
        l.ring.set_spin_allowed(allow);
    }
}
