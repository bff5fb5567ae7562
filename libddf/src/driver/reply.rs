//! Deferred reply objects: how a driver answers a read, a write or an ioctl,
//! now or later, exactly once.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use log::{debug, warn};

use crate::ipc::Channel;
use crate::proto::{Answer, DriverToDdm, Errno, OpenFlags, RequestId};

/// The part every reply object shares: where the answer goes, and the
/// guarantee that it goes exactly once.
#[derive(Debug)]
pub(super) struct ReplyTo {
    pub(super) id: RequestId,
    pub(super) chan: Arc<Channel>,
    pub(super) sent: bool,
}

impl ReplyTo {
    /// A reply to request `id` on `chan`, not yet sent.
    pub(super) fn new(id: RequestId, chan: Arc<Channel>) -> ReplyTo {
        ReplyTo { id, chan, sent: false }
    }

    pub(super) fn send(&mut self, result: Result<Answer, Errno>, payload: &[u8]) {
        self.send_fds(result, payload, &[]);
    }

    pub(super) fn send_fds(&mut self, result: Result<Answer, Errno>, payload: &[u8], fds: &[BorrowedFd<'_>]) {
        self.sent = true;
        let msg = DriverToDdm::Reply { id: self.id, result };
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
