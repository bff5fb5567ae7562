//! The FUSE front end: the device tree as files, device calls as driver
//! messages.
//!
//! This is the only place that knows fuser. Tree operations (lookup,
//! getattr, readdir, xattrs) are answered from [`crate::tree`] at once.
//! Device operations (open, read, write, ioctl, poll) go to the core, which
//! parks fuser's reply object (behind the traits of [`crate::reply`], see
//! `replies.rs`) with the driver's link; the worker returns to the kernel
//! for the next request and the driver's reader thread completes the reply.
//!
//! Decisions:
//! - Every device node is `S_IFREG` (a FUSE mount is `nodev`); character
//!   devices open as non-seekable streams with direct I/O, block devices with
//!   direct I/O and their size as `st_size`.
//! - Attributes and entries are cached by the kernel for [`TTL`]; changes the
//!   DDM makes (a device going away, a chmod) are pushed to the kernel with
//!   invalidations, so the TTL only saves round trips.
//! - The tree belongs to the drivers: creating, removing, renaming or
//!   linking anything under the mount is `EPERM`.
//! - Truncation (`O_TRUNC`, `echo x > /ddf/null`) is accepted and ignored,
//!   as Linux does for device files; so are time updates (`touch`).
//! - `close` is answered at once; the driver is told in the background.

mod replies;
mod xattr;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use access_policy::ACL_ACCESS_XATTR;
use ddf::ipc::PAYLOAD_MAX;
use ddf::proto::{Call, OpenFlags};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    PollEvents, PollFlags, PollNotifier, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyOpen, ReplyPoll, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

pub use replies::KernelNotify;

use crate::core::Core;
use crate::ids::{Fh, Ino};
use crate::reply::Parked;
use crate::sync::{Mutex, Rank};
use crate::tree::{Node, NodeKind};

/// How long the kernel may cache attributes and entries.
pub const TTL: Duration = Duration::from_secs(1);

/// One entry of a directory listing: inode, type, name.
type DirEntry = (u64, FileType, String);

/// The FUSE file system; cheap to share between worker threads.
#[derive(Debug)]
pub struct DdfFs {
    core: Arc<Core>,
    /// Listings taken at `opendir`, by directory handle: `readdir` resumes
    /// one at its offset in constant time (a bus can hold 100,000
    /// devices), and a listing does not shift under `ls` when devices come
    /// and go meanwhile.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_dir: AtomicU64,
}

impl DdfFs {
    /// A file system over `core`.
    pub fn new(core: Arc<Core>) -> DdfFs {
        DdfFs { core, dirs: Mutex::new(Rank::Leaf, HashMap::new()), next_dir: AtomicU64::new(1) }
    }

    /// The listing of bus `ino` now (`.`, `..`, then the children by name).
    fn listing(&self, ino: INodeNo) -> Result<Vec<DirEntry>, Errno> {
        let tree = self.core.tree.read();
        let node = tree.get(Ino(ino.0)).ok_or(Errno::ENOENT)?;
        if !matches!(node.kind, NodeKind::Bus { .. }) {
            return Err(Errno::ENOTDIR);
        }
        let mut entries =
            vec![(node.ino.0, FileType::Directory, ".".into()), (node.parent.0, FileType::Directory, "..".into())];
        for c in tree.children(Ino(ino.0)) {
            let kind = match c.kind {
                NodeKind::Bus { .. } => FileType::Directory,
                NodeKind::Device(_) => FileType::RegularFile,
            };
            entries.push((c.ino.0, kind, c.name.clone()));
        }
        Ok(entries)
    }

    /// Runs `f` on node `ino` under the tree's read lock (nothing is
    /// cloned that the caller does not ask for: a bus's children can be
    /// thousands).
    fn with_node<R>(&self, ino: INodeNo, f: impl FnOnce(&Node) -> R) -> Option<R> {
        self.core.tree.read().get(Ino(ino.0)).map(f)
    }

    fn reply_attr(&self, ino: INodeNo, reply: ReplyAttr) {
        match self.with_node(ino, attr) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }
}

/// A node's attributes.
fn attr(n: &Node) -> FileAttr {
    let (kind, size, nlink) = match &n.kind {
        NodeKind::Bus { children, .. } => {
            let subdirs = children.len() as u32; // upper bound, good enough for nlink
            (FileType::Directory, 0, 2 + subdirs.min(1))
        }
        NodeKind::Device(d) => (FileType::RegularFile, d.size, 1),
    };
    FileAttr {
        ino: INodeNo(n.ino.0),
        size,
        blocks: size.div_ceil(512),
        atime: n.born,
        mtime: n.born,
        ctime: n.ctime,
        crtime: n.born,
        kind,
        perm: (n.perm.mode & 0o7777) as u16,
        nlink,
        uid: n.perm.uid,
        gid: n.perm.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for DdfFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let max = PAYLOAD_MAX as u32;
        let _ = config.set_max_write(max);
        let _ = config.set_max_readahead(max);
        // Zero copy for drivers that hand over a backing file (the ramdisk's
        // memfd): FUSE passthrough. One level of stacking (a memfd has none).
        if config.add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH).is_ok() {
            let _ = config.set_max_stack_depth(1);
        } else {
            log::warn!("this kernel's FUSE has no passthrough: block devices are served through their drivers");
        }
        // POSIX ACLs: the kernel enforces them from system.posix_acl_access,
        // which the DDM stores with the other permission state.
        if config.add_capabilities(fuser::InitFlags::FUSE_POSIX_ACL).is_err() {
            log::warn!("this kernel's FUSE has no POSIX ACL support: setfacl on the mount will fail");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = {
            let tree = self.core.tree.read();
            name.to_str().and_then(|n| tree.lookup(Ino(parent.0), n)).map(attr)
        };
        match found {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(ino, reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Truncation and times alone: accepted and ignored, as for device
        // files. Permission changes are the core's (saved, then shown).
        if mode.is_some() || uid.is_some() || gid.is_some() {
            if let Err(e) = self.core.set_perm(Ino(ino.0), mode, uid, gid) {
                reply.error(replies::errno(e.errno()));
                return;
            }
        }
        self.reply_attr(ino, reply);
    }

    fn mknod(&self, _r: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _d: u32, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn mkdir(&self, _r: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, _r: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rmdir(&self, _r: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn symlink(&self, _r: &Request, _p: INodeNo, _n: &OsStr, _t: &std::path::Path, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _r: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EPERM);
    }

    fn link(&self, _r: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn create(&self, _r: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _f: i32, reply: fuser::ReplyCreate) {
        reply.error(Errno::EPERM);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let kept = self.dirs.lock().get(&fh.0).cloned();
        let entries = match kept {
            Some(e) => e,
            None => match self.listing(ino) {
                Ok(e) => Arc::new(e),
                Err(e) => return reply.error(e),
            },
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        self.core.open(Ino(ino.0), OpenFlags(flags.0), Box::new(reply), req.pid());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        match self.listing(ino) {
            Ok(entries) => {
                let fh = self.next_dir.fetch_add(1, Ordering::Relaxed);
                self.dirs.lock().insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: fuser::OpenFlags, reply: ReplyEmpty) {
        self.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let len = size.min(PAYLOAD_MAX as u32);
        let flags = OpenFlags(flags.0);
        let make = move |handle| Call::Read { handle, offset, len, flags };
        self.core.file_call(Fh(fh.0), make, &[], Parked::Read(Box::new(reply), len), req.pid());
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if data.len() > PAYLOAD_MAX {
            // max_write is PAYLOAD_MAX; a kernel that ignores it gets an error.
            reply.error(Errno::EINVAL);
            return;
        }
        let flags = OpenFlags(flags.0);
        let make = move |handle| Call::Write { handle, offset, flags };
        let parked = Parked::Write(Box::new(reply), data.len() as u32);
        self.core.file_call(Fh(fh.0), make, data, parked, req.pid());
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        // Nothing to flush (the driver learns of the close at release).
        // ENOSYS once tells the kernel to stop sending FLUSH at every close.
        reply.error(Errno::ENOSYS);
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
        self.core.release(Fh(fh.0));
    }

    fn ioctl(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let out_len = out_size.min(PAYLOAD_MAX as u32);
        let make = move |handle| Call::Ioctl { handle, cmd, out_len };
        self.core.file_call(Fh(fh.0), make, in_data, Parked::Ioctl(Box::new(reply), out_len), req.pid());
    }

    fn poll(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        let notify = flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY);
        if notify && !self.core.set_poll(Fh(fh.0), Box::new(ph)) {
            reply.error(Errno::EBADF);
            return;
        }
        let events = events.bits();
        let make = move |handle| Call::Poll { handle, events, notify };
        self.core.file_call(Fh(fh.0), make, &[], Parked::Poll(Box::new(reply)), req.pid());
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if name == OsStr::new(ACL_ACCESS_XATTR) {
            if self.with_node(ino, |_| ()).is_none() {
                reply.error(Errno::ENOENT);
                return;
            }
            match self.core.acl(Ino(ino.0)) {
                Some(v) => xattr::reply(reply, &v, size),
                None => reply.error(Errno::NO_XATTR),
            }
            return;
        }
        let Some(all) = xattr::xattrs(&self.core, Ino(ino.0)) else {
            reply.error(Errno::ENOENT);
            return;
        };
        match all.into_iter().find(|(k, _)| OsStr::new(k) == name) {
            None => reply.error(Errno::NO_XATTR),
            Some((_, v)) => xattr::reply(reply, v.as_bytes(), size),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(all) = xattr::xattrs(&self.core, Ino(ino.0)) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let mut list = Vec::new();
        for (k, _) in all {
            list.extend_from_slice(k.as_bytes());
            list.push(0);
        }
        if self.core.acl(Ino(ino.0)).is_some() {
            list.extend_from_slice(ACL_ACCESS_XATTR.as_bytes());
            list.push(0);
        }
        xattr::reply(reply, &list, size);
    }

    fn setxattr(&self, _r: &Request, ino: INodeNo, name: &OsStr, value: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        // Only POSIX ACLs can be set (the kernel checked that the caller owns
        // the file); the user.ddf.* attributes are the DDM's to say.
        if name != OsStr::new(ACL_ACCESS_XATTR) {
            reply.error(Errno::EPERM);
            return;
        }
        match self.core.set_acl(Ino(ino.0), value) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(replies::errno(e.errno())),
        }
    }

    fn removexattr(&self, _r: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if name != OsStr::new(ACL_ACCESS_XATTR) {
            reply.error(Errno::EPERM);
            return;
        }
        match self.core.remove_acl(Ino(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(replies::errno(e.errno())),
        }
    }
}
