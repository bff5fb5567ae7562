//! chmod, chown and POSIX ACLs on the mount: recorded durably, then applied.
//!
//! The kernel has already checked the caller's right to each change
//! (`default_permissions`); the core records it in the permission store
//! (which writes and syncs a file) *before* the tree shows it, and refuses a
//! change that cannot be saved with the disk's errno, so nothing that was
//! acknowledged is lost. The tree's lock is not held during the write: a
//! `chmod` never makes `ls` or a lookup wait. Changes are serialized among
//! themselves, so the store and the tree see them in the same order.

use std::sync::Arc;
use std::time::SystemTime;

use access_policy::acl::{acl_chmod, mode_from_acl};
use access_policy::{Perm, StoreError};
use ddf::proto::Errno;
use log::{error, info};

use super::{Core, Event};
use crate::ids::Ino;

/// Why a permission change was refused.
#[derive(Debug, thiserror::Error)]
pub enum PermError {
    /// No such node.
    #[error("no node with inode {0}")]
    NoNode(Ino),
    /// The ACL is not one.
    #[error("not a valid POSIX ACL")]
    BadAcl,
    /// The node has no ACL to remove.
    #[error("no ACL")]
    NoAcl,
    /// The change could not be saved.
    #[error("not saved")]
    Store(#[from] StoreError),
}

impl PermError {
    /// The errno the caller gets: the disk's own for a store error (ENOSPC,
    /// EROFS, ...) when there is one.
    pub fn errno(&self) -> Errno {
        match self {
            PermError::NoNode(_) => Errno(libc::ENOENT),
            PermError::BadAcl => Errno::EINVAL,
            PermError::NoAcl => Errno(libc::ENODATA),
            PermError::Store(e) => store_errno(e),
        }
    }
}

/// The errno for a permission change that could not be saved.
fn store_errno(e: &StoreError) -> Errno {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(code) = s.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) {
            return Errno(code);
        }
        src = s.source();
    }
    match e {
        StoreError::InvalidMode { .. } | StoreError::InvalidAcl { .. } => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

impl Core {
    /// The permissions of node `ino` now.
    fn perm_of(&self, ino: Ino) -> Result<(String, Perm), PermError> {
        let tree = self.tree.read();
        let n = tree.get(ino).ok_or(PermError::NoNode(ino))?;
        Ok((tree.path(ino), n.perm))
    }

    /// Shows `perm` on node `ino` (after it was saved).
    fn apply_perm(self: &Arc<Core>, ino: Ino, path: String, perm: Perm) {
        if let Some(n) = self.tree.write().get_mut(ino) {
            n.perm = perm;
            n.ctime = SystemTime::now();
        }
        self.emit(Event::PermChanged { path, perm });
    }

    /// `chmod`/`chown` of node `ino`: each of `mode`, `uid`, `gid` that is
    /// given changes. A chmod rewrites the ACL entries the mode stands for.
    pub fn set_perm(
        self: &Arc<Core>,
        ino: Ino,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<Perm, PermError> {
        let _serial = self.perm_change.lock();
        let (path, mut perm) = self.perm_of(ino)?;
        if let Some(m) = mode {
            perm.mode = m & 0o7777;
        }
        if let Some(u) = uid {
            perm.uid = u;
        }
        if let Some(g) = gid {
            perm.gid = g;
        }
        let key = access_policy::NodeKey::new(path.clone(), None);
        let saved = {
            let mut perms = self.perms.lock();
            let acl = match (mode, perms.get_acl(&key)) {
                (Some(m), Some(old)) => acl_chmod(old, m),
                _ => None,
            };
            perms.set(&key, perm).and_then(|()| match &acl {
                Some(a) => perms.set_acl(&key, a),
                None => Ok(()),
            })
        };
        if let Err(e) = saved {
            error!("chmod/chown of /{path} not saved, refused: {}", ddf::error_chain(&e));
            return Err(e.into());
        }
        info!("/{path}: now {:04o} {}:{}", perm.mode, perm.uid, perm.gid);
        self.apply_perm(ino, path, perm);
        Ok(perm)
    }

    /// `setfacl`: node `ino`'s access ACL becomes `value`
    /// (`system.posix_acl_access`), and its mode follows it (owner, mask,
    /// other), as on any file system.
    pub fn set_acl(self: &Arc<Core>, ino: Ino, value: &[u8]) -> Result<(), PermError> {
        let _serial = self.perm_change.lock();
        let (path, perm) = self.perm_of(ino)?;
        let mode = mode_from_acl(value, perm.mode).ok_or(PermError::BadAcl)?;
        let perm = Perm { mode, ..perm };
        let key = access_policy::NodeKey::new(path.clone(), None);
        let saved = {
            let mut perms = self.perms.lock();
            perms.set_acl(&key, value).and_then(|()| perms.set(&key, perm))
        };
        if let Err(e) = saved {
            error!("ACL of /{path} not saved, refused: {}", ddf::error_chain(&e));
            return Err(e.into());
        }
        info!("/{path}: ACL set, mode now {:04o}", perm.mode);
        self.apply_perm(ino, path, perm);
        Ok(())
    }

    /// Removes node `ino`'s access ACL.
    pub fn remove_acl(self: &Arc<Core>, ino: Ino) -> Result<(), PermError> {
        let _serial = self.perm_change.lock();
        let (path, _) = self.perm_of(ino)?;
        let key = access_policy::NodeKey::new(path.clone(), None);
        let mut perms = self.perms.lock();
        if perms.get_acl(&key).is_none() {
            return Err(PermError::NoAcl);
        }
        perms.remove_acl(&key).map_err(|e| {
            error!("ACL removal of /{path} not saved, refused: {}", ddf::error_chain(&e));
            PermError::from(e)
        })
    }

    /// Node `ino`'s access ACL, if it has one.
    pub fn acl(&self, ino: Ino) -> Option<Vec<u8>> {
        let key = self.node_key(ino);
        self.perms.lock().get_acl(&key).map(<[u8]>::to_vec)
    }
}
