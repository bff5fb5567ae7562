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

/// The kernel's side of tree changes: fuser's notifier.
#[derive(Debug)]
pub struct KernelNotify(pub fuser::Notifier);

impl Notify for KernelNotify {
    fn inval_entry(&self, parent: Ino, name: &str) {
        if let Err(e) = self.0.inval_entry(fuser::INodeNo(parent.0), name.as_ref()) {
            debug!("inval entry {name}: {e}");
        }
    }

    fn delete(&self, parent: Ino, ino: Ino, name: &str) {
        if let Err(e) = self.0.delete(fuser::INodeNo(parent.0), fuser::INodeNo(ino.0), name.as_ref()) {
            debug!("inval {name}: {e}");
        }
    }
}
