//! The access-control layer of ddf: who may open which device file.
//!
//! The paper leaves access to "another layer" integrated with the file
//! system; this crate is that layer's policy half. The DDM asks it two
//! things:
//!
//! - **Rules** ([`rules`]): what owner, group and mode a node at a given path
//!   in the tree starts with. Built-in rules cover every node, so `ddm` needs
//!   no file; a rules file (`ddf.rules(5)`, [`Policy::add_file`]) adds rules
//!   after them, and later rules win.
//! - **State** ([`store`]): the `chmod`, `chown`, `chgrp` and POSIX ACLs set on
//!   the mount since, kept in a JSON file that is replaced atomically on every
//!   change and keyed by the device's stable identity, so they survive a
//!   restart of `ddm`, of a driver, and a device leaving and coming back.
//!
//! A node's permissions are its stored state if it has any, else what the
//! rules say. The kernel enforces the answer (the mount uses
//! `default_permissions`); nothing here re-implements a permission check.
//!
//! ```
//! use access_policy::{NodeKind, NodeKey, Perm, PermStore, Policy};
//!
//! let mut policy = Policy::builtin();
//! policy.add_str("rules.conf", "device pci/**  root:root  0640\n")?;
//! assert_eq!(policy.perm_for("null", NodeKind::CharDevice).mode, 0o666);
//! assert_eq!(policy.perm_for("pci/0000:00:03.0", NodeKind::CharDevice).mode, 0o640);
//!
//! let dir = tempfile::tempdir()?;
//! let (mut store, recovered) = PermStore::open(dir.path().join("permissions.json"));
//! assert!(recovered.is_none());
//! let key = NodeKey::new("keyboard0", Some("serial:42".to_owned()));
//! store.set(&key, Perm { uid: 0, gid: 2000, mode: 0o640 })?;
//! let perm = store
//!     .get(&key)
//!     .unwrap_or_else(|| policy.perm_for("keyboard0", NodeKind::CharDevice));
//! assert_eq!(perm.gid, 2000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs, missing_debug_implementations)]

pub mod acl;
pub mod pattern;
pub mod rules;
pub mod store;

pub use pattern::{Pattern, PatternError};
pub use rules::{Found, KindFilter, Origin, Policy, Rule, RulesError};
pub use store::{NodeKey, PermStore, Recovered, StoreError, ACL_ACCESS_XATTR};

/// Owner, group and permission bits of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Permission bits (`0o666`), without the file type.
    pub mode: u32,
}

/// What kind of node a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A bus: a directory.
    Bus,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}
