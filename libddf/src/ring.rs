//! The fast path: a shared-memory ring of request slots between a caller
//! (the DDM, or a direct client) and a driver.
//!
//! The socket of a link stays for the handshake, control, descriptors, the
//! slow path and noticing a death; calls themselves may travel through a
//! ring instead. The *trusted* side (ddm) creates the ring: a memfd sealed
//! against shrinking and growing ([`crate::mem::SharedBuf`]), handed to the
//! driver (and to a direct client) with [`crate::proto::DdmToDriver::Ring`],
//! with an eventfd, the driver's doorbell.
//!
//! ## Layout
//!
//! ```text
//! 0      header: magic, version, slot count, slot size      (written once by ddm)
//! 64     the driver's line: spinning, its CPU, doorbell armed (written by the driver)
//! 128    the caller's line: the last caller's CPU, spin allowed (written by ddm)
//! 4096   slot 0: [state u32 | length u32 | pad] (64 bytes), then one frame
//! ...    slot n-1
//! ```
//!
//! A slot holds one frame in [`crate::ipc`]'s format (`u32` header length,
//! postcard header, raw payload): the caller's `DdmToDriver::Call`, then in
//! the same place the driver's `DriverToDdm::Reply`.
//!
//! ## A slot's life
//!
//! ```text
//! FREE --caller claims--> CLAIMED --caller writes the call--> REQUEST
//! REQUEST --driver takes--> BUSY --driver answers now--> REPLY --caller copies it out--> FREE
//!                            BUSY --driver keeps the call--> DEFERRED --caller--> FREE   (answer by socket)
//! REQUEST --caller gives up waiting--> ORPHAN --driver takes--> ORPHAN_BUSY --> FREE (answer by socket)
//! BUSY --caller gives up waiting--> ABANDONED --driver, done--> FREE               (answer by socket)
//! ```
//!
//! A call the caller gave up on before the driver took it (`Orphan`) is
//! still to be made; one it gave up on while the driver held it
//! (`Abandoned`) is being made, and must not be taken again.
//!
//! A caller only waits on a slot for a bounded time (it *spins*); when the
//! answer is late it orphans the slot and the answer comes by the socket,
//! like every answer of the slow path. A caller therefore registers a call
//! as in flight before it publishes it, so that an answer by the socket
//! always finds it.
//!
//! ## Trust
//!
//! The driver can write anything anywhere in the ring at any time. The
//! caller never forms a reference into it (only atomics for the state words
//! and raw copies for bytes): it copies a reply out once, bounds its length
//! by the slot, and then validates the copy like a frame from the socket.
//! A state it does not expect is the driver's protocol violation.
//!
//! ## Spinning, and when not to
//!
//! Spinning pays only when the other side runs at the same time on another
//! CPU. The driver publishes whether it spins and on which CPU; the caller
//! publishes its CPU and whether spinning is allowed at all (ddm allows it
//! only while few links are busy: never more spinners than CPUs). Each side
//! spins a bounded, adaptive time ([`SpinBudget`]) and then sleeps: the
//! driver on its socket, descriptors and doorbell, the caller by leaving
//! the answer to the socket. An idle system spins for nothing.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::ipc::{FRAME_MAX, PAYLOAD_MAX};
use crate::mem::{MemError, SharedBuf};
use crate::proto::RingSpec;

/// The first bytes of a ring: `DDFR`.
pub const RING_MAGIC: u32 = u32::from_le_bytes(*b"DDFR");
/// The layout's version.
pub const RING_VERSION: u32 = 1;
/// Bytes before the first slot.
pub const HEADER_SIZE: usize = 4096;
/// Bytes of a slot's control words before its frame.
pub const SLOT_CONTROL: usize = 64;
/// Slots in a ring ddm makes.
pub const DEFAULT_SLOTS: u32 = 8;
/// The most slots a ring may have.
pub const MAX_SLOTS: u32 = 64;
/// A slot of ddm's rings: control words and the largest call (a write of
/// [`PAYLOAD_MAX`] bytes with its header), rounded to pages.
pub const DEFAULT_SLOT_SIZE: u32 = ((SLOT_CONTROL + PAYLOAD_MAX + 4096 + 4095) & !4095) as u32;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_SLOTS: usize = 8;
const OFF_SLOT_SIZE: usize = 12;
const OFF_DRIVER_SPINNING: usize = 64;
const OFF_DRIVER_CPU: usize = 68;
const OFF_DOORBELL_ARMED: usize = 72;
const OFF_CALLER_CPU: usize = 128;
const OFF_SPIN_ALLOWED: usize = 132;

/// Where a slot is in its life (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SlotState {
    /// Nobody uses it.
    Free = 0,
    /// A caller is writing a call into it.
    Claimed = 1,
    /// A call waits for the driver.
    Request = 2,
    /// The driver works on the call.
    Busy = 3,
    /// The answer is in the slot.
    Reply = 4,
    /// The driver keeps the call; its answer comes by the socket.
    Deferred = 5,
    /// The caller stopped waiting; the answer goes by the socket.
    Orphan = 6,
    /// The driver works on an orphaned call.
    OrphanBusy = 7,
    /// The caller stopped waiting while the driver worked on the call; the
    /// driver answers by the socket and frees the slot.
    Abandoned = 8,
}

impl SlotState {
    fn from_u32(v: u32) -> Option<SlotState> {
        Some(match v {
            0 => SlotState::Free,
            1 => SlotState::Claimed,
            2 => SlotState::Request,
            3 => SlotState::Busy,
            4 => SlotState::Reply,
            5 => SlotState::Deferred,
            6 => SlotState::Orphan,
            7 => SlotState::OrphanBusy,
            8 => SlotState::Abandoned,
            _ => return None,
        })
    }
}

/// What can be wrong with a ring or with what a peer left in it.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The shape asked for is not one a ring can have.
    #[error("a ring of {slots} slots of {slot_size} bytes is not allowed")]
    Shape {
        /// Slots.
        slots: u32,
        /// Bytes per slot.
        slot_size: u32,
    },
    /// Making or taking over the memfd.
    #[error("ring memory")]
    Memory(#[from] MemError),
    /// The header does not say what the protocol agreed.
    #[error("ring header says magic {magic:#x}, version {version}, {slots} slots of {slot_size} bytes")]
    Header {
        /// Magic found.
        magic: u32,
        /// Version found.
        version: u32,
        /// Slots found.
        slots: u32,
        /// Slot size found.
        slot_size: u32,
    },
    /// A slot's state word holds no state.
    #[error("slot {slot} holds state {value}")]
    BadState {
        /// The slot.
        slot: usize,
        /// What it holds.
        value: u32,
    },
    /// A frame longer than its slot.
    #[error("slot {slot} claims a frame of {len} bytes; it holds {max}")]
    TooLong {
        /// The slot.
        slot: usize,
        /// The length claimed.
        len: usize,
        /// The most it holds.
        max: usize,
    },
    /// The doorbell could not be rung.
    #[error("doorbell")]
    Doorbell(#[source] std::io::Error),
}

/// A mapped ring, from either side.
#[derive(Debug)]
pub struct Ring {
    buf: SharedBuf,
    slots: usize,
    slot_size: usize,
}

/// The size of the memfd of a ring of `spec`'s shape, if it may have it.
fn ring_len(spec: RingSpec) -> Result<usize, RingError> {
    let ok = (1..=MAX_SLOTS).contains(&spec.slots)
        && spec.slot_size as usize >= SLOT_CONTROL + 4096
        && spec.slot_size as usize <= SLOT_CONTROL + FRAME_MAX
        && spec.slot_size % 64 == 0;
    if !ok {
        return Err(RingError::Shape { slots: spec.slots, slot_size: spec.slot_size });
    }
    Ok(HEADER_SIZE + spec.slots as usize * spec.slot_size as usize)
}

impl Ring {
    /// Makes a ring of `spec`'s shape (the trusted side): a sealed memfd with
    /// its header written and every slot free.
    pub fn create(spec: RingSpec) -> Result<Ring, RingError> {
        let len = ring_len(spec)?;
        let mut buf = SharedBuf::new("ddf-ring", len)?;
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&RING_MAGIC.to_le_bytes());
        header[4..8].copy_from_slice(&RING_VERSION.to_le_bytes());
        header[8..12].copy_from_slice(&spec.slots.to_le_bytes());
        header[12..16].copy_from_slice(&spec.slot_size.to_le_bytes());
        buf.write_at(OFF_MAGIC, &header)?;
        Ok(Ring { buf, slots: spec.slots as usize, slot_size: spec.slot_size as usize })
    }

    /// Maps a ring the trusted side made, after checking the memfd (sealed,
    /// of the size `spec` says) and the header.
    pub fn accept(fd: OwnedFd, spec: RingSpec) -> Result<Ring, RingError> {
        let len = ring_len(spec)?;
        let buf = SharedBuf::accept(fd, len)?;
        let mut h = [0u8; 16];
        buf.read_at(OFF_MAGIC, &mut h)?;
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (magic, version, slots, slot_size) =
            (word(OFF_MAGIC), word(OFF_VERSION), word(OFF_SLOTS), word(OFF_SLOT_SIZE));
        if magic != RING_MAGIC || version != RING_VERSION || slots != spec.slots || slot_size != spec.slot_size {
            return Err(RingError::Header { magic, version, slots, slot_size });
        }
        Ok(Ring { buf, slots: spec.slots as usize, slot_size: spec.slot_size as usize })
    }

    /// Its shape.
    pub fn spec(&self) -> RingSpec {
        RingSpec { slots: self.slots as u32, slot_size: self.slot_size as u32 }
    }

    /// The memfd, to hand over.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.buf.as_fd()
    }

    /// How many slots it has.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The most bytes of a frame in one slot.
    pub fn frame_max(&self) -> usize {
        self.slot_size - SLOT_CONTROL
    }

    /// The 32-bit word at `off`.
    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.buf.len(), "ring word {off} out of the mapping");
        // SAFETY: `off` is 4-aligned and in bounds (asserted; the mapping is
        // page-aligned), the mapping lives as long as `self` and so does the
        // reference. An `AtomicU32` may be changed by others at any time,
        // other processes included: that is what it is for, and every access
        // through it is atomic.
        unsafe { &*self.buf.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn slot_off(&self, slot: usize) -> usize {
        HEADER_SIZE + slot * self.slot_size
    }

    fn state_word(&self, slot: usize) -> &AtomicU32 {
        self.word(self.slot_off(slot))
    }

    fn len_word(&self, slot: usize) -> &AtomicU32 {
        self.word(self.slot_off(slot) + 4)
    }

    /// The state of `slot` now.
    pub fn state(&self, slot: usize) -> Result<SlotState, RingError> {
        let v = self.state_word(slot).load(Ordering::Acquire);
        SlotState::from_u32(v).ok_or(RingError::BadState { slot, value: v })
    }

    /// Moves `slot` from `from` to `to` if it is in `from`; else says where
    /// it is.
    pub fn transition(&self, slot: usize, from: SlotState, to: SlotState) -> Result<(), u32> {
        self.state_word(slot).compare_exchange(from as u32, to as u32, Ordering::AcqRel, Ordering::Acquire).map(|_| ())
    }

    /// Puts `slot` in `to`, whatever it was.
    pub fn set(&self, slot: usize, to: SlotState) {
        self.state_word(slot).store(to as u32, Ordering::Release);
    }

    /// Writes one frame (`header` then `payload`) into `slot`'s data.
    /// Returns false if it does not fit.
    pub fn write_frame(&self, slot: usize, header: &[u8], payload: &[u8]) -> bool {
        let len = 4 + header.len() + payload.len();
        if len > self.frame_max() || slot >= self.slots {
            return false;
        }
        let at = self.slot_off(slot) + SLOT_CONTROL;
        let base = self.buf.as_ptr();
        // SAFETY: `at + len` lies within the slot (checked against the
        // slot's size), hence within our mapping; the sources are distinct
        // slices. No reference into the mapping is made: a peer scribbling
        // meanwhile makes the bytes unspecified, never our memory unsound.
        unsafe {
            std::ptr::copy_nonoverlapping((header.len() as u32).to_le_bytes().as_ptr(), base.add(at), 4);
            std::ptr::copy_nonoverlapping(header.as_ptr(), base.add(at + 4), header.len());
            std::ptr::copy_nonoverlapping(payload.as_ptr(), base.add(at + 4 + header.len()), payload.len());
        }
        self.len_word(slot).store(len as u32, Ordering::Release);
        true
    }

    /// Overwrites the length word of `slot` (fault injection: a length
    /// beyond the slot).
    pub(crate) fn set_frame_len(&self, slot: usize, len: u32) {
        self.len_word(slot).store(len, Ordering::Release);
    }

    /// Where `slot` starts: its state word, then its length word, then (at
    /// [`SLOT_CONTROL`]) its frame.
    pub fn slot_offset(&self, slot: usize) -> usize {
        self.slot_off(slot)
    }

    /// Writes `value` as the 32-bit word at byte `off` (a multiple of 4),
    /// whatever is there: what a hostile peer can do at any moment. For
    /// tests of the other side, and fault injection.
    pub fn poke(&self, off: usize, value: u32) {
        self.word(off).store(value, Ordering::Release);
    }

    /// Copies the frame in `slot` out into `buf` (replacing its contents),
    /// its length bounded by the slot. The copy is what the caller
    /// validates; nothing is read from the ring after it.
    pub fn read_frame(&self, slot: usize, buf: &mut Vec<u8>) -> Result<(), RingError> {
        let len = self.len_word(slot).load(Ordering::Acquire) as usize;
        if len > self.frame_max() || len < 4 {
            return Err(RingError::TooLong { slot, len, max: self.frame_max() });
        }
        buf.clear();
        buf.reserve(len);
        let at = self.slot_off(slot) + SLOT_CONTROL;
        // SAFETY: the source `at..at + len` lies within the slot (bounded
        // above), the destination has `len` bytes reserved and does not
        // overlap the mapping; `set_len` then covers exactly the bytes
        // written.
        unsafe {
            std::ptr::copy_nonoverlapping(self.buf.as_ptr().add(at), buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
        Ok(())
    }

    /// The frame in `slot`, in place, for the driver serving the call in it.
    ///
    /// # Safety
    /// Nobody may write the slot while the slice lives: the driver holds the
    /// slot (`Busy`), and the trusted side that made the ring writes a slot
    /// only while it holds it (`Claimed`). A caller that breaks the protocol
    /// could change the bytes under the driver; the driver trusts its DDM.
    pub unsafe fn frame_in_place(&self, slot: usize) -> Option<&[u8]> {
        let len = self.len_word(slot).load(Ordering::Acquire) as usize;
        if len > self.frame_max() || slot >= self.slots {
            return None;
        }
        let at = self.slot_off(slot) + SLOT_CONTROL;
        // SAFETY: in bounds (checked); the caller guarantees no writes while
        // the slice lives.
        Some(unsafe { std::slice::from_raw_parts(self.buf.as_ptr().add(at), len) })
    }

    /// Claims a free slot for a call.
    pub fn claim(&self) -> Option<usize> {
        (0..self.slots).find(|&s| self.transition(s, SlotState::Free, SlotState::Claimed).is_ok())
    }

    /// Whether the driver spins now (so that a call put in the ring is seen
    /// within microseconds).
    pub fn driver_spinning(&self) -> bool {
        self.word(OFF_DRIVER_SPINNING).load(Ordering::SeqCst) != 0
    }

    /// Says whether this side (the driver) spins.
    pub fn set_driver_spinning(&self, on: bool) {
        self.word(OFF_DRIVER_SPINNING).store(u32::from(on), Ordering::SeqCst);
    }

    /// The CPU the driver last ran on.
    pub fn driver_cpu(&self) -> u32 {
        self.word(OFF_DRIVER_CPU).load(Ordering::Relaxed)
    }

    /// Says where the driver runs.
    pub fn set_driver_cpu(&self, cpu: u32) {
        self.word(OFF_DRIVER_CPU).store(cpu, Ordering::Relaxed);
    }

    /// The CPU the last caller ran on.
    pub fn caller_cpu(&self) -> u32 {
        self.word(OFF_CALLER_CPU).load(Ordering::Relaxed)
    }

    /// Says where the caller runs.
    pub fn set_caller_cpu(&self, cpu: u32) {
        self.word(OFF_CALLER_CPU).store(cpu, Ordering::Relaxed);
    }

    /// Whether the trusted side allows the driver to spin.
    pub fn spin_allowed(&self) -> bool {
        self.word(OFF_SPIN_ALLOWED).load(Ordering::Relaxed) != 0
    }

    /// Allows or forbids the driver to spin.
    pub fn set_spin_allowed(&self, on: bool) {
        self.word(OFF_SPIN_ALLOWED).store(u32::from(on), Ordering::Relaxed);
    }

    /// The driver is about to sleep: arms the doorbell. It must look at its
    /// slots once more after this (a call published meanwhile would
    /// otherwise wait for the next wake-up).
    pub fn arm_doorbell(&self) {
        self.word(OFF_DOORBELL_ARMED).store(1, Ordering::SeqCst);
    }

    /// The driver woke or found work: the doorbell need not be rung.
    pub fn disarm_doorbell(&self) {
        self.word(OFF_DOORBELL_ARMED).store(0, Ordering::SeqCst);
    }

    /// After publishing a call: whether the driver sleeps and must be rung
    /// (only one caller rings per sleep).
    pub fn take_doorbell(&self) -> bool {
        self.word(OFF_DOORBELL_ARMED).swap(0, Ordering::SeqCst) != 0
    }

    /// The first slot, from `start` on, with a call for the driver: a new
    /// one (taken: `Busy`) or an orphaned one (taken: `OrphanBusy`, its
    /// answer goes by the socket). Returns the slot and whether it was
    /// orphaned.
    pub fn take_call(&self, start: usize) -> Option<(usize, bool)> {
        for i in 0..self.slots {
            let s = (start + i) % self.slots;
            match self.state_word(s).load(Ordering::Acquire) {
                v if v == SlotState::Request as u32 => {
                    if self.transition(s, SlotState::Request, SlotState::Busy).is_ok() {
                        return Some((s, false));
                    }
                    if self.transition(s, SlotState::Orphan, SlotState::OrphanBusy).is_ok() {
                        return Some((s, true));
                    }
                }
                v if v == SlotState::Orphan as u32
                    && self.transition(s, SlotState::Orphan, SlotState::OrphanBusy).is_ok() =>
                {
                    return Some((s, true));
                }
                _ => {}
            }
        }
        None
    }

    /// The caller stops waiting for the call in `slot`: one the driver has
    /// not taken is orphaned, one it holds is abandoned; either way its
    /// answer comes by the socket. `false`: too late, the slot holds an
    /// answer or says the call was kept (look at its state).
    pub fn give_up(&self, slot: usize) -> bool {
        self.transition(slot, SlotState::Request, SlotState::Orphan).is_ok()
            || self.transition(slot, SlotState::Busy, SlotState::Abandoned).is_ok()
    }

    /// Whether any slot holds a call for the driver.
    pub fn has_call(&self) -> bool {
        (0..self.slots).any(|s| {
            let v = self.state_word(s).load(Ordering::SeqCst);
            v == SlotState::Request as u32 || v == SlotState::Orphan as u32
        })
    }
}

/// The doorbell: an eventfd the caller writes to wake a sleeping driver.
#[derive(Debug)]
pub struct Doorbell(OwnedFd);

impl Doorbell {
    /// A new doorbell (the trusted side).
    pub fn new() -> Result<Doorbell, RingError> {
        let flags = nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK;
        let efd =
            nix::sys::eventfd::EventFd::from_value_and_flags(0, flags).map_err(|e| RingError::Doorbell(e.into()))?;
        Ok(Doorbell(efd.into()))
    }

    /// The doorbell handed over as `fd` (a descriptor that is not an
    /// eventfd only makes ringing fail).
    pub fn from_fd(fd: OwnedFd) -> Doorbell {
        Doorbell(fd)
    }

    /// Wakes the driver.
    pub fn ring(&self) -> Result<(), RingError> {
        match nix::unistd::write(&self.0, &1u64.to_ne_bytes()) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => Ok(()),
            Err(e) => Err(RingError::Doorbell(e.into())),
        }
    }

    /// Clears a ring (the driver, woken).
    pub fn clear(&self) {
        let mut b = [0u8; 8];
        let _ = nix::unistd::read(&self.0, &mut b);
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// The CPU this thread runs on now.
pub fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions; it answers -1 on error.
    let c = unsafe { libc::sched_getcpu() };
    u32::try_from(c).unwrap_or(u32::MAX)
}

/// How many CPUs this thread may run on.
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A bounded, adaptive spin budget: it grows while spinning finds what it
/// waits for, and shrinks (to nothing) while it does not.
#[derive(Debug, Clone, Copy)]
pub struct SpinBudget {
    now: Duration,
    min: Duration,
    max: Duration,
}

impl SpinBudget {
    /// A budget starting at `start`, between `min` and `max`.
    pub fn new(start: Duration, min: Duration, max: Duration) -> SpinBudget {
        SpinBudget { now: start.clamp(min, max), min, max }
    }

    /// The budget now.
    pub fn get(&self) -> Duration {
        self.now
    }

    /// A spin found what it waited for after `waited`: allow a little more
    /// than that next time (at least the budget now, at most the maximum).
    pub fn hit(&mut self, waited: Duration) {
        self.now = (self.now.max(waited * 4)).min(self.max).max(self.min);
    }

    /// A spin ran out: halve the budget.
    pub fn miss(&mut self) {
        self.now = (self.now / 2).max(self.min);
    }
}

/// Spins until `done` says yes or `budget` runs out; returns what `done`
/// gave and how long it took. `done` is called at least once.
pub fn spin_until<T>(budget: Duration, mut done: impl FnMut() -> Option<T>) -> (Option<T>, Duration) {
    let start = Instant::now();
    let mut n = 0u32;
    loop {
        if let Some(v) = done() {
            return (Some(v), start.elapsed());
        }
        n = n.wrapping_add(1);
        // Look at the clock only now and then: a spin is nanoseconds.
        if n % 32 == 0 && start.elapsed() >= budget {
            return (None, start.elapsed());
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec() -> RingSpec {
        RingSpec { slots: 4, slot_size: 8192 }
    }

    #[test]
    fn a_slot_goes_through_its_life_and_frames_cross() {
        let r = Ring::create(spec()).unwrap();
        let d = Ring::accept(r.buf.try_clone_fd().unwrap(), spec()).unwrap();
        let s = r.claim().unwrap();
        assert!(r.write_frame(s, b"hdr", b"payload"));
        r.set(s, SlotState::Request);
        assert!(d.has_call());
        let (got, orphan) = d.take_call(0).unwrap();
        assert_eq!((got, orphan), (s, false));
        // SAFETY: the slot is Busy: the test's caller side does not write it.
        let frame = unsafe { d.frame_in_place(got) }.unwrap().to_vec();
        assert_eq!(&frame[..4], &3u32.to_le_bytes());
        assert_eq!(&frame[4..], b"hdrpayload");
        assert!(d.write_frame(got, b"ok", b""));
        d.transition(got, SlotState::Busy, SlotState::Reply).unwrap();
        assert_eq!(r.state(s).unwrap(), SlotState::Reply);
        let mut buf = Vec::new();
        r.read_frame(s, &mut buf).unwrap();
        assert_eq!(&buf[4..], b"ok");
        r.set(s, SlotState::Free);
        assert!(!d.has_call());
    }

    #[test]
    fn an_orphaned_call_is_taken_as_such() {
        let r = Ring::create(spec()).unwrap();
        let s = r.claim().unwrap();
        r.write_frame(s, b"h", b"");
        r.set(s, SlotState::Request);
        assert!(r.give_up(s));
        assert_eq!(r.state(s).unwrap(), SlotState::Orphan);
        assert_eq!(r.take_call(0), Some((s, true)));
        assert_eq!(r.state(s).unwrap(), SlotState::OrphanBusy);
        assert_eq!(r.take_call(0), None);
    }

    #[test]
    fn a_call_abandoned_while_the_driver_holds_it_is_not_taken_again() {
        let r = Ring::create(spec()).unwrap();
        let s = r.claim().unwrap();
        r.write_frame(s, b"h", b"");
        r.set(s, SlotState::Request);
        assert_eq!(r.take_call(0), Some((s, false)));
        assert!(r.give_up(s));
        assert_eq!(r.state(s).unwrap(), SlotState::Abandoned);
        assert_eq!(r.take_call(0), None, "an abandoned call was taken twice");
        assert!(r.transition(s, SlotState::Busy, SlotState::Reply).is_err());
        // Too late to give up on an answered call.
        let t = r.claim().unwrap();
        r.set(t, SlotState::Request);
        r.take_call(t).unwrap();
        r.transition(t, SlotState::Busy, SlotState::Reply).unwrap();
        assert!(!r.give_up(t));
    }

    #[test]
    fn hostile_contents_are_errors_not_trust() {
        let r = Ring::create(spec()).unwrap();
        let s = r.claim().unwrap();
        r.state_word(s).store(99, Ordering::Release);
        assert!(matches!(r.state(s), Err(RingError::BadState { value: 99, .. })));
        r.len_word(s).store(u32::MAX, Ordering::Release);
        let mut buf = Vec::new();
        assert!(matches!(r.read_frame(s, &mut buf), Err(RingError::TooLong { .. })));
        assert!(!r.write_frame(s, &vec![0; 9000], b""), "a frame larger than the slot is refused");
    }

    #[test]
    fn rings_of_the_wrong_shape_or_header_are_refused() {
        for bad in [RingSpec { slots: 0, slot_size: 8192 }, RingSpec { slots: 65, slot_size: 8192 }] {
            assert!(matches!(Ring::create(bad), Err(RingError::Shape { .. })));
        }
        let r = Ring::create(spec()).unwrap();
        let other = RingSpec { slots: 4, slot_size: 8192 + 64 };
        assert!(Ring::accept(r.buf.try_clone_fd().unwrap(), other).is_err());
        // A plain memfd of the right size but no header.
        let plain = SharedBuf::new("x", HEADER_SIZE + 4 * 8192).unwrap();
        assert!(matches!(Ring::accept(plain.into_fd(), spec()), Err(RingError::Header { .. })));
    }

    #[test]
    fn the_doorbell_is_rung_once_per_sleep() {
        let r = Ring::create(spec()).unwrap();
        assert!(!r.take_doorbell());
        r.arm_doorbell();
        assert!(r.take_doorbell());
        assert!(!r.take_doorbell());
    }

    #[test]
    fn a_spin_budget_follows_what_it_finds() {
        let mut b = SpinBudget::new(Duration::from_micros(20), Duration::from_micros(5), Duration::from_micros(100));
        b.hit(Duration::from_micros(10));
        assert_eq!(b.get(), Duration::from_micros(40));
        b.hit(Duration::from_micros(50));
        assert_eq!(b.get(), Duration::from_micros(100));
        b.miss();
        b.miss();
        b.miss();
        assert_eq!(b.get(), Duration::from_micros(12) + Duration::from_nanos(500));
        for _ in 0..10 {
            b.miss();
        }
        assert_eq!(b.get(), Duration::from_micros(5));
        let (v, _) = spin_until(Duration::from_micros(1), || None::<()>);
        assert!(v.is_none());
        let mut n = 0;
        let (v, _) = spin_until(Duration::from_secs(1), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, Some(3));
    }
}
