//! Persistent permission state: the `chmod`, `chown`, `chgrp` and `setfacl`
//! made on the mount, kept across `ddm` restarts, driver restarts, and a
//! device leaving and coming back.
//!
//! # Keys
//!
//! State is keyed by a [`NodeKey`]: the node's path in the tree plus, when
//! its bus has one, a stable identity (bus address, serial number). Never an
//! inode number, which does not survive a restart. Two keys name the same
//! device ([`NodeKey::matches`]) when their paths are equal and, if *both*
//! have an identity, the identities are equal too. So a different keyboard
//! plugged in where the old one was (same path, other serial) starts from
//! the rules, while a node without an identity is recognised by its path
//! alone.
//!
//! # The state file
//!
//! A JSON document a person can read (and, with care, edit while `ddm` is
//! stopped):
//!
//! ```json
//! {
//!   "format": "ddf-permissions",
//!   "version": 1,
//!   "nodes": [
//!     { "path": "keyboard0", "identity": "usb:1-1.2", "perm": { "uid": 0, "gid": 2000, "mode": "0640" } },
//!     { "path": "ram0", "perm": { "uid": 0, "gid": 6, "mode": "0600" },
//!       "acl_access": "02000000010006000000..." }
//!   ]
//! }
//! ```
//!
//! `mode` is an octal string; `acl_access` is the raw `system.posix_acl_access`
//! value in hex. Nodes are sorted by path, and for one path listed oldest
//! change first. Unknown fields make the file invalid.
//!
//! # Durability contract
//!
//! Every change rewrites the whole document atomically: a temporary file in
//! the same directory, `fsync`, `rename` over the old file, `fsync` of the
//! directory. If any step fails (disk full, read-only file system, the
//! directory gone), the method returns the error and **the in-memory state
//! is unchanged**, so the caller can fail the `chmod` instead of losing it
//! silently. The file then holds the old document, or (only when the final
//! directory `fsync` failed) the new one. A `ddm` crash at any point leaves
//! either the old or the new document, never a mix. The directory must
//! exist; this crate does not create it.
//!
//! An unreadable or corrupt file is never deleted: [`PermStore::open`] moves
//! it aside to `<file>.corrupt-<unix-seconds>`, reports it, and starts empty.
//! Entries are never dropped on their own (that is how a removed device gets
//! its permissions back); [`PermStore::remove`] forgets one.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{debug, warn};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Perm;

/// The extended attribute whose value [`PermStore::set_acl`] keeps.
pub const ACL_ACCESS_XATTR: &str = "system.posix_acl_access";

/// The `format` field of the document.
const FORMAT: &str = "ddf-permissions";
/// The document version this crate reads and writes.
pub const STATE_VERSION: u64 = 1;
/// A state file larger than this is treated as corrupt (it would describe
/// far more nodes than any tree has).
pub const MAX_STATE_BYTES: u64 = 64 << 20;
/// The largest ACL value accepted: the kernel's `XATTR_SIZE_MAX`.
pub const MAX_ACL_BYTES: usize = 65536;

/// What failed in the permission store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Reading the state file failed.
    #[error("cannot read state file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The state file is larger than [`MAX_STATE_BYTES`].
    #[error("state file {} is larger than {MAX_STATE_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The state file is not JSON of the expected shape.
    #[error("state file {} is not a valid document", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The state file is JSON, but not a ddf permission document.
    #[error("state file {} has format {found:?}, not {FORMAT:?}", path.display())]
    WrongFormat {
        /// The file.
        path: PathBuf,
        /// The `format` field found.
        found: String,
    },
    /// The state file has a version this crate cannot read.
    #[error("state file {} has version {found}; this ddm reads version {STATE_VERSION}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The `version` field found.
        found: u64,
    },
    /// An entry of the state file is invalid.
    #[error("state file {}: node {index} ({node_path:?}): {reason}", path.display())]
    InvalidEntry {
        /// The file.
        path: PathBuf,
        /// Index of the entry in `nodes`, from 0.
        index: usize,
        /// The entry's `path` field.
        node_path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Creating the temporary file failed.
    #[error("cannot create temporary state file {}", path.display())]
    CreateTemp {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing the temporary file failed (`ENOSPC` shows up here).
    #[error("cannot write temporary state file {}", path.display())]
    WriteTemp {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `fsync` of the temporary file failed.
    #[error("cannot sync temporary state file {}", path.display())]
    SyncTemp {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Renaming the temporary file over the state file failed.
    #[error("cannot rename {} to {}", from.display(), to.display())]
    Rename {
        /// The temporary file.
        from: PathBuf,
        /// The state file.
        to: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `fsync` of the directory failed, after the rename.
    #[error("cannot sync directory {}", path.display())]
    SyncDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Encoding the document failed.
    #[error("cannot encode the state document")]
    Encode {
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A mode with bits outside `0o7777` (a file type, say) was given.
    #[error("mode {mode:#o} has bits outside 0o7777")]
    InvalidMode {
        /// The mode given.
        mode: u32,
    },
    /// An ACL value is not a valid `system.posix_acl_access` value.
    #[error("invalid POSIX ACL value: {reason}")]
    InvalidAcl {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The state file was corrupt and could not be moved aside; the store
    /// refuses to overwrite it.
    #[error("state file {} is corrupt and could not be moved aside; move it away by hand", path.display())]
    CorruptNotSetAside {
        /// The file.
        path: PathBuf,
    },
}

/// The stable identity of a node: its tree path and, when its bus has one,
/// a bus address or serial number. See the [module documentation](self).
///
/// `==` and `Hash` compare both fields exactly; whether two keys name the
/// same device is [`NodeKey::matches`], which is what the store uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    /// Path below the mount root, `/`-separated; `""` is the root.
    pub path: String,
    /// Bus address or serial number, if the bus has one.
    pub identity: Option<String>,
}

impl NodeKey {
    /// A key from a path and an optional identity.
    pub fn new(path: impl Into<String>, identity: Option<String>) -> NodeKey {
        NodeKey { path: path.into(), identity }
    }

    /// Whether both keys name the same device: same path and, when both
    /// have an identity, the same identity.
    pub fn matches(&self, other: &NodeKey) -> bool {
        self.path == other.path
            && match (&self.identity, &other.identity) {
                (Some(a), Some(b)) => a == b,
                (None, _) | (_, None) => true,
            }
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.identity {
            Some(id) => write!(f, "{} ({id})", self.path),
            None => f.write_str(&self.path),
        }
    }
}

/// What [`PermStore::open`] found wrong with the state file, and what it did.
#[derive(Debug)]
pub struct Recovered {
    /// The state file.
    pub path: PathBuf,
    /// What was wrong with it.
    pub cause: StoreError,
    /// Where it was moved, or `None` if moving it failed (see `set_aside_error`).
    pub kept_as: Option<PathBuf>,
    /// Why it could not be moved aside. The store then refuses every change
    /// ([`StoreError::CorruptNotSetAside`]) rather than overwrite the file.
    pub set_aside_error: Option<io::Error>,
}

impl fmt::Display for Recovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cause)?;
        let mut source = std::error::Error::source(&self.cause);
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        match (&self.kept_as, &self.set_aside_error) {
            (Some(kept), _) => write!(
                f,
                "; kept it as {} and started from the rules",
                kept.display()
            ),
            (None, Some(e)) => write!(
                f,
                "; could not move it aside ({e}); started from the rules, and permission changes are refused until it is moved away"
            ),
            (None, None) => write!(f, "; started from the rules"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Entry {
    identity: Option<String>,
    perm: Option<Perm>,
    acl_access: Option<Vec<u8>>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.perm.is_none() && self.acl_access.is_none()
    }
}

/// The steps of an atomic write, for failure injection in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Create,
    Write,
    SyncFile,
    Rename,
    SyncDir,
}

/// The permission state of every node that was ever changed on the mount.
/// See the [module documentation](self) for keys, file format and the
/// durability contract.
#[derive(Debug)]
pub struct PermStore {
    path: PathBuf,
    /// Per tree path, the entries in the order they were last changed.
    nodes: BTreeMap<String, Vec<Entry>>,
    /// The corrupt file could not be moved aside: refuse to overwrite it.
    read_only: bool,
}

impl PermStore {
    /// Opens the store kept in the file at `path`.
    ///
    /// A missing file is an empty store. An unreadable or invalid file is
    /// moved aside to `<path>.corrupt-<unix-seconds>` (never deleted), the
    /// store starts empty, and the returned [`Recovered`] says what happened
    /// (log it loudly). Leftover temporary files of an interrupted write are
    /// removed. Never fails: `ddm` always starts, from the rules if need be.
    pub fn open(path: impl AsRef<Path>) -> (PermStore, Option<Recovered>) {
        let path = path.as_ref().to_owned();
        remove_stale_temps(&path);
        let mut store = PermStore { path, nodes: BTreeMap::new(), read_only: false };
        let cause = match load(&store.path) {
            Ok(Some(nodes)) => {
                store.nodes = nodes;
                return (store, None);
            }
            Ok(None) => return (store, None),
            Err(cause) => cause,
        };
        let (kept_as, set_aside_error) = match set_aside(&store.path) {
            Ok(kept) => (Some(kept), None),
            Err(e) => {
                store.read_only = true;
                (None, Some(e))
            }
        };
        let recovered = Recovered { path: store.path.clone(), cause, kept_as, set_aside_error };
        (store, Some(recovered))
    }

    /// The store that the state document `bytes` describes, decoded as
    /// [`PermStore::open`] decodes its file, to be kept at `path` from then
    /// on (nothing is read or written here). Unlike `open`, a document that
    /// is not valid is an error, and nothing is moved aside.
    pub fn from_document(path: impl AsRef<Path>, bytes: &[u8]) -> Result<PermStore, StoreError> {
        let path = path.as_ref().to_owned();
        let nodes = decode(&path, bytes)?;
        Ok(PermStore { path, nodes, read_only: false })
    }

    /// The state document of this store, as every change writes it to the
    /// state file. [`PermStore::from_document`] of it gives this store back.
    pub fn to_document(&self) -> Result<Vec<u8>, StoreError> {
        encode(&self.nodes)
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of nodes with stored state.
    pub fn len(&self) -> usize {
        self.nodes.values().map(Vec::len).sum()
    }

    /// Whether no node has stored state.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every stored key, sorted by path.
    pub fn keys(&self) -> impl Iterator<Item = NodeKey> + '_ {
        self.nodes
            .iter()
            .flat_map(|(path, entries)| entries.iter().map(move |e| NodeKey::new(path.clone(), e.identity.clone())))
    }

    /// The stored owner, group and mode of the node, if it was ever changed.
    pub fn get(&self, key: &NodeKey) -> Option<Perm> {
        self.find(key).and_then(|e| e.perm)
    }

    /// Records owner, group and mode of the node, durably, before returning
    /// `Ok`. On `Err` nothing changed in memory (see the durability contract
    /// in the [module documentation](self)): refuse the `chmod`.
    /// `perm.mode` must be permission bits only (mask the file type off).
    pub fn set(&mut self, key: &NodeKey, perm: Perm) -> Result<(), StoreError> {
        if perm.mode & !0o7777 != 0 {
            return Err(StoreError::InvalidMode { mode: perm.mode });
        }
        self.update(key, |e| e.perm = Some(perm), &mut no_hook)
    }

    /// Forgets everything stored for the node (owner, group, mode and ACL):
    /// it goes back to the rules. Same contract as [`set`](Self::set).
    pub fn remove(&mut self, key: &NodeKey) -> Result<(), StoreError> {
        self.update(
            key,
            |e| {
                e.perm = None;
                e.acl_access = None;
            },
            &mut no_hook,
        )
    }

    /// The stored [`ACL_ACCESS_XATTR`] value of the node, raw.
    pub fn get_acl(&self, key: &NodeKey) -> Option<&[u8]> {
        self.find(key).and_then(|e| e.acl_access.as_deref())
    }

    /// Records the node's [`ACL_ACCESS_XATTR`] value (the raw bytes of the
    /// xattr, as `setxattr` passes them), after checking its structure
    /// (version 2 header, whole 8-byte entries with known tags, at most
    /// [`MAX_ACL_BYTES`]). Same contract as [`set`](Self::set).
    pub fn set_acl(&mut self, key: &NodeKey, value: &[u8]) -> Result<(), StoreError> {
        validate_acl(value).map_err(|reason| StoreError::InvalidAcl { reason })?;
        self.update(key, |e| e.acl_access = Some(value.to_vec()), &mut no_hook)
    }

    /// Forgets the node's ACL (keeps owner, group and mode). Same contract
    /// as [`set`](Self::set).
    pub fn remove_acl(&mut self, key: &NodeKey) -> Result<(), StoreError> {
        self.update(key, |e| e.acl_access = None, &mut no_hook)
    }

    /// The entry that answers for `key`: one with exactly its identity, else
    /// the most recently changed one that matches.
    fn find(&self, key: &NodeKey) -> Option<&Entry> {
        let entries = self.nodes.get(&key.path)?;
        entries
            .iter()
            .rev()
            .find(|e| e.identity == key.identity)
            .or_else(|| entries.iter().rev().find(|e| e.identity.is_none() || key.identity.is_none()))
    }

    /// Applies `change` to the entry answering for `key` (or an empty one),
    /// stores the result under `key` in place of every matching entry, and
    /// commits. Memory changes only once the file is written.
    fn update(
        &mut self,
        key: &NodeKey,
        change: impl FnOnce(&mut Entry),
        hook: &mut dyn FnMut(Step) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::CorruptNotSetAside { path: self.path.clone() });
        }
        let mut entry = self.find(key).cloned().unwrap_or_default();
        change(&mut entry);
        entry.identity = key.identity.clone();

        let old = self.nodes.get(&key.path);
        let mut list: Vec<Entry> = old
            .map(|l| {
                l.iter()
                    .filter(|e| !NodeKey::new(key.path.as_str(), e.identity.clone()).matches(key))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !entry.is_empty() {
            list.push(entry);
        }
        if old.map_or(list.is_empty(), |o| *o == list) {
            return Ok(());
        }
        let mut nodes = self.nodes.clone();
        if list.is_empty() {
            nodes.remove(&key.path);
        } else {
            nodes.insert(key.path.clone(), list);
        }
        let bytes = encode(&nodes)?;
        write_atomically(&self.path, &bytes, hook)?;
        self.nodes = nodes;
        Ok(())
    }
}

fn no_hook(_: Step) -> io::Result<()> {
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: String,
    version: u64,
    nodes: Vec<NodeRecord>,
}

/// Only the header, to check format and version before the rest.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRecord {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    perm: Option<PermRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acl_access: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PermRecord {
    uid: u32,
    gid: u32,
    mode: String,
}

fn encode(nodes: &BTreeMap<String, Vec<Entry>>) -> Result<Vec<u8>, StoreError> {
    let doc = Document {
        format: FORMAT.to_owned(),
        version: STATE_VERSION,
        nodes: nodes
            .iter()
            .flat_map(|(path, entries)| {
                entries.iter().map(move |e| NodeRecord {
                    path: path.clone(),
                    identity: e.identity.clone(),
                    perm: e.perm.map(|p| PermRecord { uid: p.uid, gid: p.gid, mode: format!("{:04o}", p.mode) }),
                    acl_access: e.acl_access.as_deref().map(to_hex),
                })
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&doc).map_err(|source| StoreError::Encode { source })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Reads the state file: `Ok(None)` if it does not exist.
fn load(path: &Path) -> Result<Option<BTreeMap<String, Vec<Entry>>>, StoreError> {
    let read_err = |source| StoreError::Read { path: path.to_owned(), source };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes).map_err(read_err)?;
    decode(path, &bytes).map(Some)
}

/// Decodes a state document; `path` is the file it came from, for errors.
fn decode(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Vec<Entry>>, StoreError> {
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(StoreError::TooLarge { path: path.to_owned() });
    }
    let parse_err = |source| StoreError::Parse { path: path.to_owned(), source };
    let header: Header = serde_json::from_slice(bytes).map_err(parse_err)?;
    match header.format.as_deref() {
        Some(FORMAT) => {}
        other => {
            return Err(StoreError::WrongFormat { path: path.to_owned(), found: other.unwrap_or("(none)").to_owned() })
        }
    }
    match header.version {
        Some(STATE_VERSION) => {}
        other => return Err(StoreError::UnsupportedVersion { path: path.to_owned(), found: other.unwrap_or(0) }),
    }
    let doc: Document = serde_json::from_slice(bytes).map_err(parse_err)?;
    let mut nodes: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for (index, record) in doc.nodes.into_iter().enumerate() {
        let invalid = |reason: String| StoreError::InvalidEntry {
            path: path.to_owned(),
            index,
            node_path: record.path.clone(),
            reason,
        };
        let perm = match &record.perm {
            None => None,
            Some(p) => {
                let mode = parse_mode(&p.mode)
                    .ok_or_else(|| invalid(format!("mode {:?} is not an octal mode of at most 07777", p.mode)))?;
                Some(Perm { uid: p.uid, gid: p.gid, mode })
            }
        };
        let acl_access = match &record.acl_access {
            None => None,
            Some(hex) => {
                let value = from_hex(hex).ok_or_else(|| invalid("acl_access is not hex".to_owned()))?;
                validate_acl(&value).map_err(|r| invalid(format!("acl_access: {r}")))?;
                Some(value)
            }
        };
        let entry = Entry { identity: record.identity, perm, acl_access };
        if !entry.is_empty() {
            nodes.entry(record.path).or_default().push(entry);
        }
    }
    Ok(nodes)
}

fn parse_mode(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 8 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
}

/// Moves a bad state file to `<path>.corrupt-<unix-seconds>` (with a `.N`
/// suffix if that name is taken), never over an existing file.
fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", path.display());
    for n in 0..1000 {
        let candidate = PathBuf::from(if n == 0 { base.clone() } else { format!("{base}.{n}") });
        match fs::symlink_metadata(&candidate) {
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::rename(path, &candidate)?;
        warn!("permission state {} is unusable; kept it as {}", path.display(), candidate.display());
        return Ok(candidate);
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "too many files set aside already"))
}

/// The directory a state file lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        Some(_) | None => Path::new("."),
    }
}

/// Prefix of the temporary files for `path`: `<name>.tmp.`.
fn temp_prefix(path: &Path) -> Option<String> {
    path.file_name().map(|n| format!("{}.tmp.", n.to_string_lossy()))
}

fn remove_stale_temps(path: &Path) {
    let Some(prefix) = temp_prefix(path) else {
        return;
    };
    let Ok(dir) = fs::read_dir(parent_dir(path)) else {
        return;
    };
    for entry in dir.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let stale = entry.path();
            match fs::remove_file(&stale) {
                Ok(()) => debug!("removed temporary file {} of an interrupted write", stale.display()),
                Err(e) => warn!("cannot remove stale temporary file {}: {e}", stale.display()),
            }
        }
    }
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename,
/// directory fsync. `hook` runs before each step; an error from it fails
/// that step (tests inject failures this way).
fn write_atomically(path: &Path, bytes: &[u8], hook: &mut dyn FnMut(Step) -> io::Result<()>) -> Result<(), StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_dir(path);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = match temp_prefix(path) {
        Some(prefix) => dir.join(format!("{prefix}{}.{n}", std::process::id())),
        None => {
            return Err(StoreError::CreateTemp {
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
            })
        }
    };
    let created =
        hook(Step::Create).and_then(|()| OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp));
    let mut file = created.map_err(|source| StoreError::CreateTemp { path: tmp.clone(), source })?;
    let result = (|| {
        hook(Step::Write)
            .and_then(|()| file.write_all(bytes))
            .map_err(|source| StoreError::WriteTemp { path: tmp.clone(), source })?;
        hook(Step::SyncFile)
            .and_then(|()| file.sync_all())
            .map_err(|source| StoreError::SyncTemp { path: tmp.clone(), source })?;
        hook(Step::Rename).and_then(|()| fs::rename(&tmp, path)).map_err(|source| StoreError::Rename {
            from: tmp.clone(),
            to: path.to_owned(),
            source,
        })
    })();
    drop(file);
    if let Err(e) = result {
        if let Err(rm) = fs::remove_file(&tmp) {
            if rm.kind() != io::ErrorKind::NotFound {
                warn!("cannot remove temporary file {}: {rm}", tmp.display());
            }
        }
        return Err(e);
    }
    hook(Step::SyncDir)
        .and_then(|()| File::open(dir))
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::SyncDir { path: dir.to_owned(), source })
}

/// Checks the structure of a `system.posix_acl_access` value: a 4-byte
/// little-endian version 2, then 8-byte entries (tag u16, perm u16, id u32)
/// with known tags and permissions of at most `rwx`.
fn validate_acl(value: &[u8]) -> Result<(), &'static str> {
    const VERSION: u32 = 2;
    const TAGS: [u16; 6] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20];
    if value.len() > MAX_ACL_BYTES {
        return Err("longer than 65536 bytes");
    }
    let Some((header, entries)) = value.split_first_chunk::<4>() else {
        return Err("shorter than its 4-byte header");
    };
    if u32::from_le_bytes(*header) != VERSION {
        return Err("version is not 2");
    }
    if entries.len() % 8 != 0 {
        return Err("entries are not whole 8-byte records");
    }
    for entry in entries.chunks_exact(8) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let perm = u16::from_le_bytes([entry[2], entry[3]]);
        if !TAGS.contains(&tag) {
            return Err("unknown entry tag");
        }
        if perm & !0o7 != 0 {
            return Err("permissions beyond rwx");
        }
    }
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    text.as_bytes().chunks_exact(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn perm(uid: u32, gid: u32, mode: u32) -> Perm {
        Perm { uid, gid, mode }
    }

    fn key(path: &str, id: Option<&str>) -> NodeKey {
        NodeKey::new(path, id.map(str::to_owned))
    }

    /// A valid ACL: user::rw-, user:1000:r--, group::r--, mask::r--, other::---
    const ACL: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, // version 2
        0x01, 0x00, 0x06, 0x00, 0xff, 0xff, 0xff, 0xff, // USER_OBJ rw-
        0x02, 0x00, 0x04, 0x00, 0xe8, 0x03, 0x00, 0x00, // USER 1000 r--
        0x04, 0x00, 0x04, 0x00, 0xff, 0xff, 0xff, 0xff, // GROUP_OBJ r--
        0x10, 0x00, 0x04, 0x00, 0xff, 0xff, 0xff, 0xff, // MASK r--
        0x20, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, // OTHER ---
    ];

    #[test]
    fn missing_file_is_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, recovered) = PermStore::open(dir.path().join("perm.json"));
        assert!(recovered.is_none());
        assert!(store.is_empty());
        assert!(!dir.path().join("perm.json").exists(), "open writes nothing");
    }

    #[test]
    fn documents_decode_and_encode_as_the_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perm.json");
        let (mut store, _) = PermStore::open(&path);
        store.set(&key("keyboard0", Some("usb:1-1")), perm(0, 2000, 0o640)).unwrap();
        store.set_acl(&key("null", None), ACL).unwrap();
        let file = fs::read(&path).unwrap();
        assert_eq!(store.to_document().unwrap(), file);

        let decoded = PermStore::from_document(&path, &file).unwrap();
        assert_eq!(decoded.path(), path);
        assert_eq!(decoded.to_document().unwrap(), file);
        assert_eq!(decoded.get(&key("keyboard0", Some("usb:1-1"))), Some(perm(0, 2000, 0o640)));
        assert_eq!(decoded.get_acl(&key("null", None)), Some(ACL));

        // A bad document is an error, and nothing is moved aside or written.
        let err = PermStore::from_document(&path, br#"{"format": "other", "version": 1, "nodes": []}"#);
        assert!(matches!(err, Err(StoreError::WrongFormat { found, .. }) if found == "other"));
        assert!(matches!(PermStore::from_document(&path, b"{"), Err(StoreError::Parse { .. })));
        assert_eq!(fs::read(&path).unwrap(), file);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn round_trip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perm.json");
        let (mut store, _) = PermStore::open(&path);
        store.set(&key("keyboard0", Some("usb:1-1")), perm(0, 2000, 0o640)).unwrap();
        store.set(&key("null", None), perm(5, 6, 0o4711)).unwrap();
        store.set(&key("", None), perm(0, 0, 0o711)).unwrap();
        store.set_acl(&key("null", None), ACL).unwrap();

        let (again, recovered) = PermStore::open(&path);
        assert!(recovered.is_none());
        assert_eq!(again.len(), 3);
        assert_eq!(again.get(&key("keyboard0", Some("usb:1-1"))), Some(perm(0, 2000, 0o640)));
        assert_eq!(again.get(&key("null", None)), Some(perm(5, 6, 0o4711)));
        assert_eq!(again.get(&key("", None)), Some(perm(0, 0, 0o711)));
        assert_eq!(again.get_acl(&key("null", None)), Some(ACL));
        assert_eq!(again.get(&key("zero", None)), None);

        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"format\": \"ddf-permissions\""), "{text}");
        assert!(text.contains("\"mode\": \"4711\""), "{text}");
        assert!(text.contains("\"identity\": \"usb:1-1\""), "{text}");
    }

    #[test]
    fn identity_decides_between_devices_at_one_path() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = PermStore::open(dir.path().join("p.json"));
        let old = key("keyboard0", Some("serial-A"));
        store.set(&old, perm(0, 0, 0o644)).unwrap();
        // The same keyboard comes back: same state.
        assert_eq!(store.get(&old), Some(perm(0, 0, 0o644)));
        // Another keyboard at the same path: the rules decide.
        assert_eq!(store.get(&key("keyboard0", Some("serial-B"))), None);
        // A node at that path without identity is recognised by path.
        assert_eq!(store.get(&key("keyboard0", None)), Some(perm(0, 0, 0o644)));
        // Both kept apart.
        store.set(&key("keyboard0", Some("serial-B")), perm(0, 0, 0o600)).unwrap();
        assert_eq!(store.get(&old), Some(perm(0, 0, 0o644)));
        assert_eq!(store.get(&key("keyboard0", Some("serial-B"))), Some(perm(0, 0, 0o600)));
        assert_eq!(store.get(&key("keyboard0", None)), Some(perm(0, 0, 0o600)), "latest wins");
        // A change by path alone replaces every device at the path.
        store.set(&key("keyboard0", None), perm(0, 0, 0o660)).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&old), Some(perm(0, 0, 0o660)));
        assert!(key("a", Some("x")).matches(&key("a", None)));
        assert!(!key("a", Some("x")).matches(&key("a", Some("y"))));
        assert!(!key("a", None).matches(&key("b", None)));
    }

    #[test]
    fn perm_and_acl_are_kept_together_and_removed_separately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let (mut store, _) = PermStore::open(&path);
        let k = key("ram0", Some("ram:0"));
        store.set_acl(&k, ACL).unwrap();
        assert_eq!(store.get(&k), None);
        store.set(&k, perm(0, 6, 0o640)).unwrap();
        assert_eq!(store.get_acl(&k), Some(ACL), "set keeps the ACL");
        store.remove_acl(&k).unwrap();
        assert_eq!(store.get_acl(&k), None);
        assert_eq!(store.get(&k), Some(perm(0, 6, 0o640)));
        store.set_acl(&k, ACL).unwrap();
        store.remove(&k).unwrap();
        assert!(store.is_empty());
        let (again, _) = PermStore::open(&path);
        assert!(again.is_empty());
    }

    #[test]
    fn bad_values_are_refused_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let (mut store, _) = PermStore::open(&path);
        let k = key("null", None);
        assert!(matches!(store.set(&k, perm(0, 0, 0o100644)), Err(StoreError::InvalidMode { mode: 0o100644 })));
        let bad: &[&[u8]] = &[
            b"",
            &[2, 0, 0],
            &[3, 0, 0, 0],
            &[2, 0, 0, 0, 1, 0, 6, 0],
            &[2, 0, 0, 0, 0x40, 0, 6, 0, 0, 0, 0, 0],
            &[2, 0, 0, 0, 1, 0, 8, 0, 0, 0, 0, 0],
        ];
        for value in bad {
            assert!(matches!(store.set_acl(&k, value), Err(StoreError::InvalidAcl { .. })), "{value:?}");
        }
        assert!(matches!(store.set_acl(&k, &vec![0; MAX_ACL_BYTES + 4]), Err(StoreError::InvalidAcl { .. })));
        assert!(store.is_empty());
        assert!(!path.exists());
    }

    #[test]
    fn corrupt_files_are_set_aside_and_reported() {
        let cases: &[(&str, &[u8])] = &[
            ("garbage", b"\x00\xffnot json at all"),
            ("truncated", b"{\"format\": \"ddf-permissions\", \"version\": 1, \"nodes\": ["),
            ("wrong format", b"{\"format\": \"something-else\", \"version\": 1, \"nodes\": []}"),
            ("no format", b"[1, 2, 3]"),
            ("wrong version", b"{\"format\": \"ddf-permissions\", \"version\": 2, \"nodes\": []}"),
            (
                "bad mode",
                b"{\"format\": \"ddf-permissions\", \"version\": 1, \"nodes\": [{\"path\": \"null\", \"perm\": {\"uid\": 0, \"gid\": 0, \"mode\": \"100644\"}}]}",
            ),
            (
                "bad acl",
                b"{\"format\": \"ddf-permissions\", \"version\": 1, \"nodes\": [{\"path\": \"null\", \"acl_access\": \"zz\"}]}",
            ),
            (
                "unknown field",
                b"{\"format\": \"ddf-permissions\", \"version\": 1, \"nodes\": [{\"path\": \"null\", \"mdoe\": \"0600\"}]}",
            ),
            ("empty", b""),
        ];
        for (what, content) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p.json");
            fs::write(&path, content).unwrap();
            let (mut store, recovered) = PermStore::open(&path);
            let recovered = recovered.unwrap_or_else(|| panic!("{what}: not reported"));
            assert!(store.is_empty(), "{what}");
            assert!(!path.exists(), "{what}: still in place");
            let kept = recovered.kept_as.clone().unwrap();
            let name = kept.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("p.json.corrupt-"), "{what}: {name}");
            assert_eq!(fs::read(&kept).unwrap(), *content, "{what}: content kept");
            assert!(recovered.to_string().contains("kept it as"), "{what}: {recovered}");
            // The store works afterwards, and the kept file stays.
            store.set(&key("null", None), perm(0, 0, 0o666)).unwrap();
            assert_eq!(fs::read(&kept).unwrap(), *content);
        }
    }

    #[test]
    fn two_corruptions_in_one_second_keep_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        fs::write(&path, "first").unwrap();
        let first = PermStore::open(&path).1.unwrap().kept_as.unwrap();
        fs::write(&path, "second").unwrap();
        let second = PermStore::open(&path).1.unwrap().kept_as.unwrap();
        assert_ne!(first, second);
        assert_eq!(fs::read_to_string(first).unwrap(), "first");
        assert_eq!(fs::read_to_string(second).unwrap(), "second");
    }

    #[test]
    fn unreadable_file_is_set_aside() {
        // A directory where the file should be: open succeeds, read fails.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        fs::create_dir(&path).unwrap();
        let (_, recovered) = PermStore::open(&path);
        let recovered = recovered.unwrap();
        assert!(matches!(recovered.cause, StoreError::Read { .. }), "{recovered}");
        assert!(recovered.kept_as.unwrap().is_dir());
    }

    fn fail_at(step: Step) -> impl FnMut(Step) -> io::Result<()> {
        move |s| {
            if s == step {
                Err(io::Error::from_raw_os_error(nix::libc::ENOSPC))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let (mut store, _) = PermStore::open(&path);
        let k = key("null", None);
        store.set(&k, perm(0, 0, 0o666)).unwrap();
        let before = fs::read(&path).unwrap();
        for step in [Step::Create, Step::Write, Step::SyncFile, Step::Rename] {
            let e = store.update(&k, |e| e.perm = Some(perm(0, 0, 0o600)), &mut fail_at(step)).unwrap_err();
            let expected = match step {
                Step::Create => matches!(e, StoreError::CreateTemp { .. }),
                Step::Write => matches!(e, StoreError::WriteTemp { .. }),
                Step::SyncFile => matches!(e, StoreError::SyncTemp { .. }),
                Step::Rename => matches!(e, StoreError::Rename { .. }),
                Step::SyncDir => false,
            };
            assert!(expected, "{step:?}: {e:?}");
            assert_eq!(store.get(&k), Some(perm(0, 0, 0o666)), "{step:?}: memory unchanged");
            assert_eq!(fs::read(&path).unwrap(), before, "{step:?}: old file intact");
            let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec![std::ffi::OsString::from("p.json")], "{step:?}: no temp left");
        }
        // After the rename, only the directory sync can fail: memory is
        // unchanged (the caller refuses the chmod); the file may be new.
        let e = store.update(&k, |e| e.perm = Some(perm(0, 0, 0o600)), &mut fail_at(Step::SyncDir)).unwrap_err();
        assert!(matches!(e, StoreError::SyncDir { .. }), "{e:?}");
        assert_eq!(store.get(&k), Some(perm(0, 0, 0o666)));
    }

    #[test]
    fn a_vanished_directory_fails_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("state");
        fs::create_dir(&sub).unwrap();
        let (mut store, _) = PermStore::open(sub.join("p.json"));
        store.set(&key("null", None), perm(0, 0, 0o666)).unwrap();
        fs::remove_dir_all(&sub).unwrap();
        let e = store.set(&key("null", None), perm(0, 0, 0o600)).unwrap_err();
        assert!(matches!(e, StoreError::CreateTemp { .. }), "{e:?}");
        assert_eq!(store.get(&key("null", None)), Some(perm(0, 0, 0o666)));
        assert!(store.set_acl(&key("zero", None), ACL).is_err());
        assert_eq!(store.get_acl(&key("zero", None)), None);
    }

    #[test]
    fn stale_temp_files_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let stale = dir.path().join("p.json.tmp.123.0");
        let other = dir.path().join("other.tmp.1.0");
        fs::write(&stale, "half").unwrap();
        fs::write(&other, "not ours").unwrap();
        let _ = PermStore::open(&path);
        assert!(!stale.exists());
        assert!(other.exists());
    }

    #[test]
    fn a_corrupt_file_that_cannot_be_moved_blocks_writes() {
        let mut store =
            PermStore { path: PathBuf::from("/nonexistent/p.json"), nodes: BTreeMap::new(), read_only: true };
        assert!(matches!(store.set(&key("null", None), perm(0, 0, 0o600)), Err(StoreError::CorruptNotSetAside { .. })));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(to_hex(ACL).len(), ACL.len() * 2);
        assert_eq!(from_hex(&to_hex(ACL)).as_deref(), Some(ACL));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("0g"), None);
        assert_eq!(from_hex("é0"), None);
    }
}
