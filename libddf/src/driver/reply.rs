//! Deferred reply objects: how a driver answers a read, a write or an ioctl,
//! now or later, exactly once; by the ring slot the call came in while the
//! caller waits there, else by the socket.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use log::{debug, warn};

use crate::ipc::Channel;
use crate::proto::{Answer, DriverToDdm, Errno, OpenFlags, RequestId};
use crate::ring::{Ring, SlotState};

/// A call that came by a ring slot: the answer goes there while the runtime
/// has not given the slot back.
#[derive(Debug)]
pub(super) struct SlotReply {
    pub(super) ring: Arc<Ring>,
    pub(super) slot: usize,
    /// [`IN_SLOT`], [`ANSWERED`] or [`BY_SOCKET`].
    pub(super) cell: Arc<AtomicU8>,
}

/// The driver may still answer in the slot.
pub(super) const IN_SLOT: u8 = 0;
/// It answered in the slot.
pub(super) const ANSWERED: u8 = 1;
/// The slot was given back: the answer goes by the socket.
pub(super) const BY_SOCKET: u8 = 2;

/// What became of an answer put in a slot.
enum InSlot {
    /// It is there for the caller.
    Done,
    /// The caller stopped waiting: the slot is ours to free; answer by socket.
    Orphaned,
    /// It does not fit: the slot was given back; answer by socket.
    Unfit,
}

impl SlotReply {
    fn answer(&self, msg: &DriverToDdm, payload: &[u8]) -> InSlot {
        let mut header = Vec::new();
        if crate::ipc::encode_header(msg, &mut header).is_err() || !self.ring.write_frame(self.slot, &header, payload) {
            self.give_back();
            return InSlot::Unfit;
        }
        let fault = super::runtime::ring_fault(&self.ring, self.slot);
        match self.ring.transition(self.slot, SlotState::Busy, SlotState::Reply) {
            Ok(()) => InSlot::Done,
            Err(_) => {
                super::runtime::rearm_ring_fault(fault);
                InSlot::Orphaned
            }
        }
    }

    /// The runtime is done with the call and no answer was put in the slot:
    /// the caller learns that it comes by the socket (`Deferred`), or, if it
    /// stopped waiting already, the slot is freed.
    pub(super) fn give_back(&self) {
        if self.ring.transition(self.slot, SlotState::Busy, SlotState::Deferred).is_err() {
            self.ring.set(self.slot, SlotState::Free);
        }
    }
}

/// The part every reply object shares: where the answer goes, and the
/// guarantee that it goes exactly once.
#[derive(Debug)]
pub(super) struct ReplyTo {
    pub(super) id: RequestId,
    pub(super) chan: Arc<Channel>,
    pub(super) sent: bool,
    pub(super) slot: Option<SlotReply>,
}

impl ReplyTo {
    /// A reply to request `id` on `chan`, not yet sent.
    pub(super) fn new(id: RequestId, chan: Arc<Channel>) -> ReplyTo {
        ReplyTo { id, chan, sent: false, slot: None }
    }

    /// A reply to request `id` that came by a ring slot.
    pub(super) fn in_slot(id: RequestId, chan: Arc<Channel>, slot: SlotReply) -> ReplyTo {
        ReplyTo { id, chan, sent: false, slot: Some(slot) }
    }

    pub(super) fn send(&mut self, result: Result<Answer, Errno>, payload: &[u8]) {
        self.send_fds(result, payload, &[]);
    }

    pub(super) fn send_fds(&mut self, result: Result<Answer, Errno>, payload: &[u8], fds: &[BorrowedFd<'_>]) {
        self.sent = true;
        let msg = DriverToDdm::Reply { id: self.id, result };
        if let Some(s) = &self.slot {
            // Descriptors cannot go in a slot.
            let to = if fds.is_empty() { ANSWERED } else { BY_SOCKET };
            if s.cell.compare_exchange(IN_SLOT, to, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                if to == BY_SOCKET {
                    s.give_back();
                } else {
                    match s.answer(&msg, payload) {
                        InSlot::Done => return,
                        InSlot::Orphaned => s.ring.set(s.slot, SlotState::Free),
                        InSlot::Unfit => {}
                    }
                }
            }
        }
        if super::runtime::socket_fault(&self.chan) {
            return;
        }
        if let Err(e) = self.chan.send(&msg, payload, fds) {
            // The DDM is gone or the answer is malformed; the DDM fails the
            // request on its side in both cases.
            warn!("reply to request {}: {e}", self.id.0);
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if !self.sent {
            debug!("request {} dropped without an answer: answering EIO", self.id.0);
            self.send(Err(Errno::EIO), &[]);
        }
    }
}

/// The answer to a read or a scatter: data or an error, now or later.
#[derive(Debug)]
pub struct ReadReply {
    pub(super) to: ReplyTo,
    pub(super) max: u32,
    pub(super) flags: OpenFlags,
}

impl ReadReply {
    /// The request this answers (to match a [`super::Driver::cancel`]).
    pub fn id(&self) -> RequestId {
        self.to.id
    }

    /// The most bytes the caller takes.
    pub fn max_len(&self) -> u32 {
        self.max
    }

    /// The file's `O_*` flags at the time of the call.
    pub fn flags(&self) -> OpenFlags {
        self.flags
    }

    /// Whether the caller asked not to block (`O_NONBLOCK`).
    pub fn nonblocking(&self) -> bool {
        self.flags.nonblocking()
    }

    /// Answers with `data` (cut to [`ReadReply::max_len`]); an empty slice
    /// is end of file.
    pub fn data(mut self, data: &[u8]) {
        let n = data.len().min(self.max as usize);
        self.to.send(Ok(Answer::Data), &data[..n]);
    }

    /// Answers with an error.
    pub fn error(mut self, err: Errno) {
        self.to.send(Err(err), &[]);
    }
}

/// The answer to a write or a gather.
#[derive(Debug)]
pub struct WriteReply {
    pub(super) to: ReplyTo,
}

impl WriteReply {
    /// The request this answers.
    pub fn id(&self) -> RequestId {
        self.to.id
    }

    /// Answers that `len` bytes were taken.
    pub fn written(mut self, len: u32) {
        self.to.send(Ok(Answer::Written { len }), &[]);
    }

    /// Answers with an error.
    pub fn error(mut self, err: Errno) {
        self.to.send(Err(err), &[]);
    }
}

/// The answer to an ioctl.
#[derive(Debug)]
pub struct IoctlReply {
    pub(super) to: ReplyTo,
    pub(super) max: u32,
}

impl IoctlReply {
    /// The request this answers.
    pub fn id(&self) -> RequestId {
        self.to.id
    }

    /// The most output bytes the caller takes.
    pub fn max_len(&self) -> u32 {
        self.max
    }

    /// Answers with `ioctl(2)`'s return value and output bytes (cut to what
    /// the caller takes).
    pub fn ok(mut self, result: i32, out: &[u8]) {
        let n = out.len().min(self.max as usize);
        self.to.send(Ok(Answer::Ioctl { result }), &out[..n]);
    }

    /// Answers with an error.
    pub fn error(mut self, err: Errno) {
        self.to.send(Err(err), &[]);
    }
}
