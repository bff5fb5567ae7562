//! fuser's reply objects behind the core's reply traits, and fuser's
//! notifier behind [`Notify`].

use std::os::fd::BorrowedFd;

use ddf::proto::{DeviceClass, Errno};
use fuser::{FopenFlags, ReplyData, ReplyIoctl, ReplyOpen, ReplyPoll, ReplyWrite};
use log::debug;

use crate::ids::Ino;
use crate::reply::{self, Backing, Notify, Opened, PollWaker};

/// Our errno as fuser's.
pub fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

/// FUSE open flags for a device class: char devices are non-seekable
/// streams; both bypass the page cache so every read and write reaches the
/// driver.
pub fn open_flags(class: DeviceClass) -> FopenFlags {
    match class {
        DeviceClass::Char => FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE | FopenFlags::FOPEN_STREAM,
        DeviceClass::Block => FopenFlags::FOPEN_DIRECT_IO,
    }
}

impl reply::OpenReply for ReplyOpen {
    fn opened(self: Box<Self>, o: Opened<'_>) {
        let fh = fuser::FileHandle(o.fh.0);
        match o.passthrough.and_then(|b| b.get::<fuser::BackingId>()) {
            Some(id) => (*self).opened_passthrough(fh, FopenFlags::empty(), id),
            None => (*self).opened(fh, open_flags(o.class)),
        }
    }

    fn error(self: Box<Self>, err: Errno) {
        (*self).error(errno(err));
    }

    fn register_backing(&self, fd: BorrowedFd<'_>) -> std::io::Result<Backing> {
        self.open_backing(fd).map(Backing::new)
    }
}

impl reply::DataReply for ReplyData {
    fn data(self: Box<Self>, data: &[u8]) {
        (*self).data(data);
    }

    fn error(self: Box<Self>, err: Errno) {
        (*self).error(errno(err));
    }
}

impl reply::WriteReply for ReplyWrite {
    fn written(self: Box<Self>, len: u32) {
        (*self).written(len);
    }

    fn error(self: Box<Self>, err: Errno) {
        (*self).error(errno(err));
    }
}

impl reply::IoctlReply for ReplyIoctl {
    fn ioctl(self: Box<Self>, result: i32, out: &[u8]) {
        (*self).ioctl(result, out);
    }

    fn error(self: Box<Self>, err: Errno) {
        (*self).error(errno(err));
    }
}

impl reply::PollReply for ReplyPoll {
    fn poll(self: Box<Self>, revents: u32) {
        (*self).poll(fuser::PollEvents::from_bits_truncate(revents));
    }

    fn error(self: Box<Self>, err: Errno) {
        (*self).error(errno(err));
    }
}

impl PollWaker for fuser::PollNotifier {
    fn wake(self: Box<Self>) {
        if let Err(e) = self.notify() {
            debug!("poll notify: {e}");
        }
    }
}

/// The kernel's side of tree changes: fuser's notifier, on a thread of its
/// own. A notification can wait in the kernel for an inode lock that a
/// caller holds while its request waits on ddm (a write to the device being
/// removed), so the thread that tells the kernel must never be one the
/// answer depends on (a driver's reader): notices queue, in order, for this
/// thread.
#[derive(Debug)]
pub struct KernelNotify(std::sync::mpsc::Sender<Notice>);

/// One thing to tell the kernel.
#[derive(Debug)]
pub enum Notice {
    /// An entry appeared or changed.
    Inval(Ino, String),
    /// An entry went.
    Delete(Ino, Ino, String),
}

impl KernelNotify {
    /// Starts the notifying thread over fuser's notifier.
    pub fn start(notifier: fuser::Notifier) -> KernelNotify {
        let (tx, rx) = std::sync::mpsc::channel::<Notice>();
        crate::core::spawn_named("kernel-notify", move || {
            for n in rx {
                let r = match &n {
                    Notice::Inval(parent, name) => notifier.inval_entry(fuser::INodeNo(parent.0), name.as_ref()),
                    Notice::Delete(parent, ino, name) => {
                        notifier.delete(fuser::INodeNo(parent.0), fuser::INodeNo(ino.0), name.as_ref())
                    }
                };
                if let Err(e) = r {
                    debug!("{n:?}: {e}");
                }
            }
        });
        KernelNotify(tx)
    }
}

impl Notify for KernelNotify {
    fn inval_entry(&self, parent: Ino, name: &str) {
        let _ = self.0.send(Notice::Inval(parent, name.to_owned()));
    }

    fn delete(&self, parent: Ino, ino: Ino, name: &str) {
        let _ = self.0.send(Notice::Delete(parent, ino, name.to_owned()));
    }
}
