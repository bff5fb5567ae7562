//! The FUSE front end: the device tree as files, device calls as driver
//! messages.
//!
//! Tree operations (lookup, getattr, readdir, xattrs) are answered from
//! [`crate::tree`] at once. Device operations (open, read, write, ioctl,
//! poll) become libDriver calls: the FUSE reply object is parked in the
//! driver's [`crate::core::Conn`] and the worker returns to the kernel for
//! the next request. The driver's reader thread completes the reply.
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

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use access_policy::acl::{acl_chmod, mode_from_acl};
use access_policy::{StoreError, ACL_ACCESS_XATTR};
use ddf::ipc::PAYLOAD_MAX;
use ddf::proto::{Call, DriverState};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, PollEvents, PollFlags, PollNotifier, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyOpen, ReplyPoll, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::{debug, error, info};

use crate::conn::Parked;
use crate::core::{lock, Core};
use crate::tree::{Node, NodeKind};

/// How long the kernel may cache attributes and entries.
pub const TTL: Duration = Duration::from_secs(1);

/// The FUSE file system; cheap to share between worker threads.
#[derive(Debug)]
pub struct DdfFs {
    core: Arc<Core>,
}

impl DdfFs {
    /// A file system over `core`.
    pub fn new(core: Arc<Core>) -> DdfFs {
        DdfFs { core }
    }

    fn attr(&self, n: &Node) -> FileAttr {
        let (kind, size, nlink) = match &n.kind {
            NodeKind::Bus { children, .. } => {
                let subdirs = children.len() as u32; // upper bound, good enough for nlink
                (FileType::Directory, 0, 2 + subdirs.min(1))
            }
            NodeKind::Device(d) => (FileType::RegularFile, d.size, 1),
        };
        FileAttr {
            ino: INodeNo(n.ino),
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

    /// Runs `f` on node `ino` under the tree's read lock (nothing is
    /// cloned that the caller does not ask for: a bus's children can be
    /// thousands).
    fn with_node<R>(&self, ino: INodeNo, f: impl FnOnce(&Node) -> R) -> Option<R> {
        self.core.tree.read().unwrap_or_else(|p| p.into_inner()).get(ino.0).map(f)
    }

    /// What the extended attributes of node `ino` are made from.
    fn xattr_facts(&self, ino: INodeNo) -> Option<(String, Facts)> {
        let tree = self.core.tree.read().unwrap_or_else(|p| p.into_inner());
        let n = tree.get(ino.0)?;
        let facts = match &n.kind {
            NodeKind::Bus { kind, owner, .. } => Facts::Bus { kind: kind.clone(), owner: *owner },
            NodeKind::Device(d) => Facts::Device(d.clone()),
        };
        Some((tree.path(ino.0), facts))
    }

    /// The `user.ddf.*` attributes of a node, in listing order.
    fn xattrs(&self, ino: INodeNo) -> Option<Vec<(&'static str, String)>> {
        let (path, facts) = self.xattr_facts(ino)?;
        let mut v = Vec::new();
        v.push(("user.ddf.path", format!("/{path}")));
        match &facts {
            Facts::Bus { kind, owner } => {
                v.push(("user.ddf.kind", "bus".into()));
                if let Some(k) = kind {
                    v.push(("user.ddf.bus", k.clone()));
                }
                if let Some(inst) = owner.and_then(|o| self.core.inst(o)) {
                    v.push(("user.ddf.driver", inst.name().to_owned()));
                }
            }
            Facts::Device(d) => {
                v.push(("user.ddf.kind", "device".into()));
                v.push(("user.ddf.class", d.class.as_str().into()));
                if let Some(inst) = self.core.inst(d.instance) {
                    let (state, pid, restarts, last_exit) = {
                        let live = lock(&inst.live);
                        (live.state, live.pid, live.restarts, live.last_exit.clone())
                    };
                    let state = crate::plug::node_state(&self.core, ino.0, Some(state)).unwrap_or_default();
                    v.push(("user.ddf.driver", inst.name().to_owned()));
                    v.push(("user.ddf.state", state));
                    v.push(("user.ddf.pid", pid.map(|p| p.to_string()).unwrap_or_default()));
                    v.push(("user.ddf.restarts", restarts.to_string()));
                    v.push(("user.ddf.last_exit", last_exit.unwrap_or_default()));
                }
                if let Some(b) = &d.bus {
                    v.push(("user.ddf.bus", b.kind.clone()));
                    if let Some(a) = &b.address {
                        v.push(("user.ddf.address", a.clone()));
                    }
                    for (k, val) in &b.meta {
                        // Only names that cannot shadow the DDM's own.
                        if !RESERVED.contains(&k.as_str()) && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                        {
                            v.push((leak_name(k), val.clone()));
                        }
                    }
                }
            }
        }
        Some(v)
    }
}

/// A node's kind without its children.
#[derive(Debug)]
enum Facts {
    Bus { kind: Option<String>, owner: Option<usize> },
    Device(crate::tree::DeviceRef),
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
        let tree = self.core.tree.read().unwrap_or_else(|p| p.into_inner());
        let found = name.to_str().and_then(|n| tree.lookup(parent.0, n)).map(|n| self.attr(n));
        drop(tree);
        match found {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with_node(ino, |n| self.attr(n)) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
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
        // The kernel has already checked the caller's right to each change
        // (default_permissions); the DDM records it, durably, before it
        // answers: a change that cannot be saved is refused, not lost.
        if mode.is_none() && uid.is_none() && gid.is_none() {
            // Truncation and times: accepted and ignored, as for device files.
            match self.with_node(ino, |n| self.attr(n)) {
                Some(attr) => reply.attr(&TTL, &attr),
                None => reply.error(Errno::ENOENT),
            }
            return;
        }
        let key = self.core.node_key(ino.0);
        let mut tree = self.core.tree.write().unwrap_or_else(|p| p.into_inner());
        let Some(n) = tree.get_mut(ino.0) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let mut perm = n.perm;
        if let Some(m) = mode {
            perm.mode = m & 0o7777;
        }
        if let Some(u) = uid {
            perm.uid = u;
        }
        if let Some(g) = gid {
            perm.gid = g;
        }
        let mut perms = lock(&self.core.perms);
        // A chmod rewrites the ACL entries the mode stands for.
        let acl = match (mode, perms.get_acl(&key)) {
            (Some(m), Some(old)) => acl_chmod(old, m),
            _ => None,
        };
        let saved = perms.set(&key, perm).and_then(|()| match &acl {
            Some(a) => perms.set_acl(&key, a),
            None => Ok(()),
        });
        drop(perms);
        if let Err(e) = saved {
            drop(tree);
            error!("chmod/chown of /{} not saved, refused: {e}", key.path);
            reply.error(store_errno(&e));
            return;
        }
        n.perm = perm;
        n.ctime = SystemTime::now();
        let attr = self.attr(n);
        drop(tree);
        info!("/{}: now {:04o} {}:{}", key.path, perm.mode, perm.uid, perm.gid);
        reply.attr(&TTL, &attr);
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

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let tree = self.core.tree.read().unwrap_or_else(|p| p.into_inner());
        let Some(node) = tree.get(ino.0) else {
            reply.error(Errno::ENOENT);
            return;
        };
        if !matches!(node.kind, NodeKind::Bus { .. }) {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let mut entries: Vec<(u64, FileType, String)> =
            vec![(node.ino, FileType::Directory, ".".into()), (node.parent, FileType::Directory, "..".into())];
        for c in tree.children(ino.0) {
            let kind = match c.kind {
                NodeKind::Bus { .. } => FileType::Directory,
                NodeKind::Device(_) => FileType::RegularFile,
            };
            entries.push((c.ino, kind, c.name.clone()));
        }
        drop(tree);
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(found) = self.with_node(ino, |n| match &n.kind {
            NodeKind::Device(d) => Some((n.name.clone(), d.clone())),
            NodeKind::Bus { .. } => None,
        }) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let Some((name, dev)) = found else {
            reply.error(Errno::EISDIR);
            return;
        };
        let Some(inst) = self.core.inst(dev.instance) else {
            reply.error(Errno::ENXIO);
            return;
        };
        let (state, conn) = {
            let live = lock(&inst.live);
            (live.state, live.conn.clone())
        };
        let conn = match (state, conn) {
            (DriverState::Running, Some(c)) => c,
            (DriverState::Starting | DriverState::Restarting, _) => {
                reply.error(Errno::EAGAIN);
                return;
            }
            (DriverState::Running | DriverState::Failed | DriverState::Stopped, _) => {
                debug!("open of {} refused: driver {} is {}", name, inst.name(), state.as_str());
                reply.error(Errno::ENXIO);
                return;
            }
        };
        let call = Call::Open { device: dev.device, flags: ddf::proto::OpenFlags(flags.0) };
        let parked = Parked::Open { reply, ino: ino.0, class: dev.class, flags: ddf::proto::OpenFlags(flags.0) };
        conn.call(call, &[], parked, req.pid());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with_node(ino, |n| matches!(n.kind, NodeKind::Bus { .. })) {
            Some(true) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(false) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let len = size.min(PAYLOAD_MAX as u32);
        let flags = ddf::proto::OpenFlags(flags.0);
        let make = move |handle| Call::Read { handle, offset, len, flags };
        self.core.file_call(fh.0, make, &[], Parked::Read(reply, len), req.pid());
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if data.len() > PAYLOAD_MAX {
            // max_write is PAYLOAD_MAX; a kernel that ignores it gets an error.
            reply.error(Errno::EINVAL);
            return;
        }
        let flags = ddf::proto::OpenFlags(flags.0);
        let make = move |handle| Call::Write { handle, offset, flags };
        self.core.file_call(fh.0, make, data, Parked::Write(reply, data.len() as u32), req.pid());
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
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
        self.core.release(fh.0);
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
        self.core.file_call(fh.0, make, in_data, Parked::Ioctl(reply, out_len), req.pid());
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
        if notify && !self.core.set_poll(fh.0, ph) {
            reply.error(Errno::EBADF);
            return;
        }
        let events = events.bits();
        let make = move |handle| Call::Poll { handle, events, notify };
        self.core.file_call(fh.0, make, &[], Parked::Poll(reply), req.pid());
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if name == OsStr::new(ACL_ACCESS_XATTR) {
            if self.with_node(ino, |_| ()).is_none() {
                reply.error(Errno::ENOENT);
                return;
            }
            let key = self.core.node_key(ino.0);
            match lock(&self.core.perms).get_acl(&key) {
                Some(v) => xattr_reply(reply, v, size),
                None => reply.error(Errno::NO_XATTR),
            }
            return;
        }
        let Some(all) = self.xattrs(ino) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let value = all.into_iter().find(|(k, _)| OsStr::new(k) == name).map(|(_, v)| v);
        match value {
            None => reply.error(Errno::NO_XATTR),
            Some(v) => xattr_reply(reply, v.as_bytes(), size),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(all) = self.xattrs(ino) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let mut list = Vec::new();
        for (k, _) in all {
            list.extend_from_slice(k.as_bytes());
            list.push(0);
        }
        if lock(&self.core.perms).get_acl(&self.core.node_key(ino.0)).is_some() {
            list.extend_from_slice(ACL_ACCESS_XATTR.as_bytes());
            list.push(0);
        }
        xattr_reply(reply, &list, size);
    }

    fn setxattr(&self, _r: &Request, ino: INodeNo, name: &OsStr, value: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        // Only POSIX ACLs can be set (the kernel checked that the caller owns
        // the file); the user.ddf.* attributes are the DDM's to say.
        if name != OsStr::new(ACL_ACCESS_XATTR) {
            reply.error(Errno::EPERM);
            return;
        }
        let key = self.core.node_key(ino.0);
        // The mode follows the ACL (owner, mask, other), as on any file system.
        let mut tree = self.core.tree.write().unwrap_or_else(|p| p.into_inner());
        let Some(n) = tree.get_mut(ino.0) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let Some(new_mode) = mode_from_acl(value, n.perm.mode) else {
            reply.error(Errno::EINVAL);
            return;
        };
        let perm = access_policy::Perm { mode: new_mode, ..n.perm };
        let mut perms = lock(&self.core.perms);
        let saved = perms.set_acl(&key, value).and_then(|()| perms.set(&key, perm));
        drop(perms);
        if saved.is_ok() {
            n.perm = perm;
            n.ctime = SystemTime::now();
        }
        drop(tree);
        match saved {
            Ok(()) => {
                info!("/{}: ACL set, mode now {:04o}", key.path, perm.mode);
                reply.ok();
            }
            Err(e) => {
                error!("ACL of /{} not saved, refused: {e}", key.path);
                reply.error(store_errno(&e));
            }
        }
    }

    fn removexattr(&self, _r: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if name != OsStr::new(ACL_ACCESS_XATTR) {
            reply.error(Errno::EPERM);
            return;
        }
        let key = self.core.node_key(ino.0);
        let mut perms = lock(&self.core.perms);
        if perms.get_acl(&key).is_none() {
            reply.error(Errno::NO_XATTR);
            return;
        }
        match perms.remove_acl(&key) {
            Ok(()) => reply.ok(),
            Err(e) => {
                error!("ACL removal of /{} not saved, refused: {e}", key.path);
                reply.error(store_errno(&e));
            }
        }
    }
}

/// The errno for a permission change that could not be saved: the disk's
/// own (ENOSPC, EROFS, ...) when there is one, else EIO.
fn store_errno(e: &StoreError) -> Errno {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(code) = s.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) {
            return Errno::from_i32(code);
        }
        src = s.source();
    }
    match e {
        StoreError::InvalidMode { .. } | StoreError::InvalidAcl { .. } => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

/// `user.ddf.*` names the DDM itself gives; a bus's identifiers may not
/// shadow them.
const RESERVED: &[&str] =
    &["path", "kind", "class", "driver", "state", "pid", "restarts", "last_exit", "bus", "address"];

/// `user.ddf.<key>` as a `&'static str`. The set of identifier keys is small
/// and fixed per bus (vendor, device, irq, ...), so each name is interned
/// once and kept.
fn leak_name(key: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let full = format!("user.ddf.{key}");
    if let Some(n) = names.iter().find(|n| **n == full) {
        return n;
    }
    if names.len() >= 256 {
        return "user.ddf.other";
    }
    let leaked: &'static str = Box::leak(full.into_boxed_str());
    names.push(leaked);
    leaked
}

/// Answers a getxattr/listxattr: the size when asked for it, the bytes when
/// they fit, `ERANGE` when they do not.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
