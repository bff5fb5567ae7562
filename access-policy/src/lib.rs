//! The access-control layer of ddf: who may open which device file.
//!
//! The paper leaves access to "another layer" integrated with the file
//! system; this crate is that layer's policy half. It answers one question
//! for the DDM: what owner, group and mode does a node at a given path in the
//! tree start with. The kernel enforces the answer (the mount uses
//! `default_permissions`); nothing here re-implements a permission check.

#![warn(missing_docs, missing_debug_implementations)]

/// Owner, group and permission bits of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Permission bits (`0o666`), without the file type.
    pub mode: u32,
}

/// What kind of node a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A bus: a directory.
    Bus,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

/// The built-in default for a node: buses `root:root 0755`, devices
/// `root:root 0600` unless a built-in rule says otherwise (`null` and `zero`
/// are `0666`).
pub fn default_perm(path: &str, kind: NodeKind) -> Perm {
    let mode = match kind {
        NodeKind::Bus => 0o755,
        NodeKind::CharDevice | NodeKind::BlockDevice => match path {
            "null" | "zero" => 0o666,
            _ => 0o600,
        },
    };
    Perm { uid: 0, gid: 0, mode }
}
