//! How the core answers a caller, without knowing who the caller is.
//!
//! The core parks a request's reply object until its driver answers, and
//! then completes it; the reply objects are trait objects, so that the core
//! runs the same with the FUSE front end's replies (`crate::fs`) and with
//! the fakes of its unit tests. Every reply is consumed by exactly one
//! answer or one error.
//!
//! The same goes for what the core tells the kernel unasked: that a name
//! appeared or went ([`Notify`]), that a polled file is ready ([`PollWaker`]).

use std::any::Any;
use std::fmt;
use std::os::fd::BorrowedFd;

use ddf::proto::{DeviceClass, Errno, OpenFlags};

use crate::ids::{Fh, Ino};

/// A passthrough backing file the front end registered with the kernel; the
/// kernel forgets it when this is dropped. Opaque to the core.
pub struct Backing(Box<dyn Any + Send + Sync>);

impl Backing {
    /// Wraps the front end's own backing id.
    pub fn new<T: Any + Send + Sync>(id: T) -> Backing {
        Backing(Box::new(id))
    }

    /// The front end's backing id, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Backing")
    }
}

/// How an open file behaves, for the front end's open flags.
#[derive(Debug, Clone, Copy)]
pub struct Opened<'a> {
    /// The new file handle.
    pub fh: Fh,
    /// The device's class: a character device is a non-seekable stream.
    pub class: DeviceClass,
    /// Reads and writes go to this backing file, not to the DDM.
    pub passthrough: Option<&'a Backing>,
}

/// The reply to an open.
pub trait OpenReply: Send {
    /// The open succeeded.
    fn opened(self: Box<Self>, opened: Opened<'_>);
    /// The open failed.
    fn error(self: Box<Self>, err: Errno);
    /// Registers `fd` with the kernel as a passthrough backing file.
    fn register_backing(&self, fd: BorrowedFd<'_>) -> std::io::Result<Backing>;
}

/// The reply to a read.
pub trait DataReply: Send {
    /// The bytes read (empty: end of file).
    fn data(self: Box<Self>, data: &[u8]);
    /// The read failed.
    fn error(self: Box<Self>, err: Errno);
}

/// The reply to a write.
pub trait WriteReply: Send {
    /// Bytes taken.
    fn written(self: Box<Self>, len: u32);
    /// The write failed.
    fn error(self: Box<Self>, err: Errno);
}

/// The reply to an ioctl.
pub trait IoctlReply: Send {
    /// `ioctl(2)`'s value and the output bytes.
    fn ioctl(self: Box<Self>, result: i32, out: &[u8]);
    /// The ioctl failed.
    fn error(self: Box<Self>, err: Errno);
}

/// The reply to a poll.
pub trait PollReply: Send {
    /// The ready events.
    fn poll(self: Box<Self>, revents: u32);
    /// The poll failed.
    fn error(self: Box<Self>, err: Errno);
}

/// Tells a poller that its file's readiness changed (once).
pub trait PollWaker: Send {
    /// Wakes the poller.
    fn wake(self: Box<Self>);
}

/// What the core tells the kernel about the tree.
pub trait Notify: Send + Sync {
    /// `name` in bus `parent` appeared or changed.
    fn inval_entry(&self, parent: Ino, name: &str);
    /// `name` (inode `ino`) in bus `parent` is gone.
    fn delete(&self, parent: Ino, ino: Ino, name: &str);
}

/// A caller's reply waiting for a driver's answer.
pub enum Parked {
    /// An open: on success a file handle is made for `ino`.
    Open {
        /// The reply.
        reply: Box<dyn OpenReply>,
        /// The node opened.
        ino: Ino,
        /// Its class (decides how the file behaves).
        class: DeviceClass,
        /// `open(2)` flags (kept to re-open after a restart).
        flags: OpenFlags,
    },
    /// A read, and the most bytes it takes.
    Read(Box<dyn DataReply>, u32),
    /// A write, and how many bytes it brought.
    Write(Box<dyn WriteReply>, u32),
    /// An ioctl, and the most bytes of output it takes.
    Ioctl(Box<dyn IoctlReply>, u32),
    /// A poll.
    Poll(Box<dyn PollReply>),
    /// The DDM re-opening open file `fh` on a new incarnation of its driver
    /// (handles that survive restarts); calls wait on the file meanwhile.
    Reopen {
        /// The file being re-opened.
        fh: Fh,
    },
    /// Nobody waits for the answer (a close, or a request whose caller was
    /// interrupted); the answer is dropped when it comes.
    Discard,
}

impl Parked {
    /// Ends the request with `err` (no driver answer will come, or it came
    /// malformed). A re-open's waiters are the file's business, not this.
    pub fn fail(self, err: Errno) {
        match self {
            Parked::Open { reply, .. } => reply.error(err),
            Parked::Read(r, _) => r.error(err),
            Parked::Write(r, _) => r.error(err),
            Parked::Ioctl(r, _) => r.error(err),
            Parked::Poll(r) => r.error(err),
            Parked::Reopen { .. } | Parked::Discard => {}
        }
    }

    /// What kind of request it is, for log lines.
    pub fn kind(&self) -> &'static str {
        match self {
            Parked::Open { .. } => "open",
            Parked::Read(..) => "read",
            Parked::Write(..) => "write",
            Parked::Ioctl(..) => "ioctl",
            Parked::Poll(_) => "poll",
            Parked::Reopen { .. } => "re-open",
            Parked::Discard => "discarded",
        }
    }

    /// Whether someone waits for the answer.
    pub fn is_awaited(&self) -> bool {
        !matches!(self, Parked::Discard | Parked::Reopen { .. })
    }
}

impl fmt::Debug for Parked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Parked::Open { ino, class, flags, .. } => {
                f.debug_struct("Open").field("ino", ino).field("class", class).field("flags", flags).finish()
            }
            Parked::Reopen { fh } => f.debug_struct("Reopen").field("fh", fh).finish(),
            other => f.write_str(other.kind()),
        }
    }
}
