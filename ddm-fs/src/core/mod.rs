//! The DDM's core: the tree, the driver instances, the open files, and what
//! happens when a driver speaks, without FUSE and without processes.
//!
//! [`Core`] owns the device tree, the driver instances and the table of
//! open files. Each running driver incarnation has a [`Conn`]. The core
//! answers callers through the reply traits of [`crate::reply`], starts
//! incarnations through a [`Launcher`], and tells the layers above it what
//! happened through [`Event`]s: it imports neither the FUSE front end, nor
//! supervision, nor the plugin manager, so its whole state machine runs in
//! unit tests with fake replies and a fake driver at the other end of a
//! socket pair (see `tests.rs`).
//!
//! | file | what |
//! | --- | --- |
//! | `instance.rs` | driver instances and incarnations, causes of death, kill |
//! | `reader.rs` | a driver's messages: registration, replies, state, counters |
//! | `register.rs` | the tree as drivers change it: buses and devices come and go |
//! | `files.rs` | open files: calls, re-opens across restarts, release, poll |
//! | `complete.rs` | a driver's answer to a parked reply; passthrough backing files |
//! | `perms.rs` | chmod, chown and ACLs: saved, then applied |
//!
//! ## Threads
//! - FUSE workers call [`Core::file_call`] and friends: they park the reply
//!   and return. **No FUSE worker ever waits on a driver.**
//! - Per driver incarnation: a *reader* ([`Core::serve_link`]) that
//!   completes parked requests and registers devices, and a *writer* that
//!   drains the link's FIFO when its socket is full.
//!
//! ## Locks
//! The order is [`crate::sync::Rank`]: `tree`, then an instance's `live`,
//! then `files`, then `backings`, then a link's locks; `bindings`,
//! `instances` and the stores are leaves. Debug builds check it. No lock is
//! held while an event is emitted, a reply is completed from the reader, or
//! the kernel is notified.

mod complete;
mod error;
#[cfg(test)]
mod fast_tests;
mod files;
mod instance;
mod perms;
mod reader;
mod register;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use access_policy::{NodeKey, NodeKind as PolicyKind, Perm, PermStore, Policy};
use ddf::proto::{DdmToDriver, DriverState};
use log::{error, warn};

pub use complete::BackingEntry;
pub use error::{ProtocolError, SpawnError};
pub use files::{Link, OpenFile, Waiter};
pub use instance::{Cause, Health, Instance, Live, Request, Stored};
pub use perms::PermError;
pub use reader::Ended;

use crate::ids::{Fh, Ino, InstanceId, ROOT};
use crate::manifest::Manifest;
use crate::reply::Notify;
use crate::sync::{Mutex, Rank, RwLock};
use crate::tree::Tree;

/// Most bytes the state store keeps for one driver (all keys together).
pub const STATE_MAX_BYTES: usize = 1 << 20;

/// Most keys in one driver's state store.
pub const STATE_MAX_KEYS: usize = 64;

/// Most bytes of a device's address, or of the kind of a bus.
pub const ADDRESS_MAX: usize = 255;

/// Most identifiers (`vendor`, `irq`, ...) one device may carry.
pub const META_MAX: usize = 64;

/// Most bytes of one device's identifiers, keys and values together.
pub const META_BYTES_MAX: usize = 16 * 1024;

/// What the plugin manager did with an offered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// No driver took it; why.
    Unbound(String),
    /// Handed to this driver instance.
    Bound(InstanceId),
}

/// What happened, for the layers above the core (the plugin manager, and
/// anyone who watches: the log, `ddmctl monitor`). Emitted with no lock
/// held, on the thread where it happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A device node appeared.
    DeviceAdded {
        /// Its inode.
        ino: Ino,
        /// Its path below the mount.
        path: String,
        /// The instance serving it.
        driver: InstanceId,
        /// Whether its bus driver offers it to the plugin manager.
        offered: bool,
    },
    /// A bus directory appeared.
    BusAdded {
        /// Its path.
        path: String,
        /// The instance enumerating it.
        driver: InstanceId,
    },
    /// A node (and what was below it) went.
    NodeRemoved {
        /// Its inode.
        ino: Ino,
        /// Its path.
        path: String,
    },
    /// A bound node went away; its driver should let go.
    BoundNodeRemoved {
        /// Its inode.
        ino: Ino,
        /// Its path.
        path: String,
        /// The driver it was bound to.
        driver: InstanceId,
    },
    /// A bound driver let go of a node (its bus driver serves it again).
    Released {
        /// The node.
        ino: Ino,
        /// The driver that let go.
        by: InstanceId,
    },
    /// A driver incarnation started.
    Started {
        /// The instance.
        driver: InstanceId,
        /// Its process, if it has one.
        pid: Option<u32>,
    },
    /// A driver incarnation said it is ready.
    Ready {
        /// The instance.
        driver: InstanceId,
        /// After a restart (not the first start).
        restarted: bool,
    },
    /// A driver incarnation ended.
    Died {
        /// The instance.
        driver: InstanceId,
        /// How (`killed by signal 9 (SIGKILL)`, ...).
        how: String,
        /// The state it went to: restarting, failed (quarantine), stopped.
        next: DriverState,
    },
    /// An administrator asked for a restart of a driver that was not
    /// running (out of quarantine).
    Revived {
        /// The instance.
        driver: InstanceId,
    },
    /// A node's owner, group, mode or ACL changed.
    PermChanged {
        /// The node's path.
        path: String,
        /// The new permissions.
        perm: Perm,
    },
    /// The plugin manager handed a device node to a driver whose manifest
    /// matches it (the driver is told once it runs).
    Bound {
        /// The node.
        ino: Ino,
        /// Its path.
        path: String,
        /// The driver.
        driver: InstanceId,
    },
    /// A device node was taken from the driver it was bound to.
    Unbound {
        /// The node.
        ino: Ino,
        /// Its path.
        path: String,
        /// The driver it was bound to.
        driver: InstanceId,
        /// Why.
        why: String,
    },
}

/// Told of every [`Event`].
pub trait Listener: Send + Sync {
    /// Something happened. Runs on the thread where it happened, with no
    /// core lock held: it may call into the core.
    fn on_event(&self, core: &Arc<Core>, event: &Event);
}

/// Starts driver incarnations: processes in `ddm` (`crate::supervise`),
/// fakes in the core's unit tests.
pub trait Launcher: Send + Sync {
    /// Starts a new incarnation of `inst`: makes its link, hands it to
    /// [`Core::begin_incarnation`], and lets it run.
    fn launch(&self, core: &Arc<Core>, inst: &Arc<Instance>) -> Result<(), SpawnError>;
}

/// Settings the core runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where relative driver executables are.
    pub driver_dir: PathBuf,
    /// How long a driver may take to become ready.
    pub start_timeout: Duration,
    /// Whether calls may take the shared-memory fast path ([`crate::fast`]).
    pub fast_path: bool,
    /// The most ddm threads that spin on rings at once
    /// ([`crate::fast::default_spinners`]).
    pub max_spinners: usize,
    /// A fixed time a worker spins for an answer, instead of the adaptive
    /// budget (tests, where threads start slowly).
    pub fixed_spin: Option<Duration>,
}

/// Everything the DDM knows.
pub struct Core {
    /// The device tree.
    pub tree: RwLock<Tree>,
    /// Driver instances; only ever appended to (ids are stable), a stopped
    /// instance stays with state `stopped`.
    instances: RwLock<Vec<Arc<Instance>>>,
    /// Every manifest ddm knows (built in, `--manifest`): what `ddmctl load`
    /// and the plugin manager start instances from.
    pub catalog: Vec<Manifest>,
    /// Which offered device nodes are bound to which driver, or why not.
    pub bindings: Mutex<HashMap<Ino, Binding>>,
    /// Settings.
    pub config: Config,
    /// Open files by FUSE file handle.
    files: Mutex<HashMap<Fh, OpenFile>>,
    /// Passthrough backing files by node.
    backings: Mutex<HashMap<Ino, BackingEntry>>,
    next_fh: AtomicU64,
    /// What tells the kernel about the tree, once mounted.
    notifier: OnceLock<Box<dyn Notify>>,
    /// What starts incarnations.
    launcher: OnceLock<Arc<dyn Launcher>>,
    listeners: Mutex<Vec<Arc<dyn Listener>>>,
    /// Set once shutdown begins: nothing restarts after it.
    stopping: AtomicBool,
    /// Default permissions.
    pub policy: Policy,
    /// Permissions changed on the mount (chmod, chown, ACLs), persisted.
    pub perms: Mutex<PermStore>,
    perm_change: Mutex<()>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("config", &self.config).field("stopping", &self.is_stopping()).finish()
    }
}

impl Core {
    /// A core with the null bus, knowing the `catalog` of manifests, with an
    /// instance (not started) of each one that starts with ddm.
    pub fn new(catalog: Vec<Manifest>, config: Config, policy: Policy, perms: PermStore) -> Arc<Core> {
        let root_key = NodeKey::new("", None);
        let root_perm = perms.get(&root_key).unwrap_or_else(|| policy.perm_for("", PolicyKind::Bus));
        let instances = catalog
            .iter()
            .filter(|m| m.autostart)
            .cloned()
            .enumerate()
            .map(|(i, manifest)| Arc::new(Instance::new(InstanceId(i), manifest, &config.driver_dir, ROOT)))
            .collect();
        Arc::new(Core {
            tree: RwLock::new(Rank::Tree, Tree::new(root_perm)),
            instances: RwLock::new(Rank::Leaf, instances),
            catalog,
            bindings: Mutex::new(Rank::Leaf, HashMap::new()),
            config,
            files: Mutex::new(Rank::Files, HashMap::new()),
            backings: Mutex::new(Rank::Backings, HashMap::new()),
            next_fh: AtomicU64::new(1),
            notifier: OnceLock::new(),
            launcher: OnceLock::new(),
            listeners: Mutex::new(Rank::Leaf, Vec::new()),
            stopping: AtomicBool::new(false),
            policy,
            perms: Mutex::new(Rank::Leaf, perms),
            perm_change: Mutex::new(Rank::PermChange, ()),
        })
    }

    /// Sets what tells the kernel about tree changes (once mounted).
    pub fn set_notifier(&self, n: Box<dyn Notify>) {
        if self.notifier.set(n).is_err() {
            warn!("a second notifier was offered; keeping the first");
        }
    }

    /// Sets what starts incarnations (once, at start-up).
    pub fn set_launcher(&self, l: Arc<dyn Launcher>) {
        if self.launcher.set(l).is_err() {
            warn!("a second launcher was offered; keeping the first");
        }
    }

    /// Adds a listener of events.
    pub fn listen(&self, l: Arc<dyn Listener>) {
        self.listeners.lock().push(l);
    }

    /// Tells every listener of `event`.
    pub fn emit(self: &Arc<Core>, event: Event) {
        let listeners = self.listeners.lock().clone();
        for l in listeners {
            l.on_event(self, &event);
        }
    }

    /// Starts a new incarnation of `inst` through the launcher.
    pub fn start(self: &Arc<Core>, inst: &Arc<Instance>) -> Result<(), SpawnError> {
        if self.is_stopping() {
            return Err(SpawnError::Stopping);
        }
        match self.launcher.get() {
            Some(l) => l.clone().launch(self, inst),
            None => Err(SpawnError::Stopping),
        }
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The instance `id`.
    pub fn inst(&self, id: InstanceId) -> Option<Arc<Instance>> {
        self.instances.read().get(id.0).cloned()
    }

    /// Every instance, in id order.
    pub fn all(&self) -> Vec<Arc<Instance>> {
        self.instances.read().clone()
    }

    /// Adds an instance of `manifest` (not started) whose plain devices go
    /// on bus `attach`; returns it.
    pub fn add_instance(&self, manifest: Manifest, attach: Ino) -> Arc<Instance> {
        let mut all = self.instances.write();
        let inst = Arc::new(Instance::new(InstanceId(all.len()), manifest, &self.config.driver_dir, attach));
        all.push(inst.clone());
        inst
    }

    /// The instance called `name`.
    pub fn instance(&self, name: &str) -> Option<Arc<Instance>> {
        self.all().into_iter().find(|i| i.name() == name)
    }

    /// The permissions a new node at `path` starts with: what was recorded
    /// for it (a chmod before a restart of ddm, of its driver, or before it
    /// was unplugged), else what the rules say.
    pub fn initial_perm(&self, path: &str, identity: Option<&str>, kind: PolicyKind) -> Perm {
        let key = NodeKey::new(path, identity.map(str::to_owned));
        self.perms.lock().get(&key).unwrap_or_else(|| self.policy.perm_for(path, kind))
    }

    /// The store key of node `ino`.
    pub fn node_key(&self, ino: Ino) -> NodeKey {
        NodeKey::new(self.tree.read().path(ino), None)
    }

    /// Paths of an instance's nodes, for log lines.
    pub fn device_paths(&self, inst: &Instance) -> Vec<String> {
        let inos: Vec<Ino> = inst.live.lock().names.values().copied().collect();
        let tree = self.tree.read();
        let mut v: Vec<String> = inos.into_iter().map(|i| format!("/{}", tree.path(i))).collect();
        v.sort();
        v
    }

    /// The driver's nodes for a log line: every path when there are a few,
    /// else the first [`PATHS_IN_LOG`] and how many more (a bus of 100,000
    /// devices must not make a 2 MB line).
    pub fn paths_for_log(&self, inst: &Instance) -> String {
        paths_for_log(&self.device_paths(inst))
    }

    /// Tells the kernel that `name` in `parent` changed (appeared or went),
    /// so that the next lookup or `ls` sees it.
    fn inval_entry(&self, parent: Ino, name: &str) {
        if let Some(n) = self.notifier.get() {
            n.inval_entry(parent, name);
        }
    }

    /// Stops every driver: asks nicely, fails what is in flight, then kills
    /// what did not exit within `grace`.
    pub fn stop_all(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        let all = self.all();
        for inst in &all {
            let conn = {
                let mut live = inst.live.lock();
                live.state = DriverState::Stopped;
                live.kill_reason = Some(Cause::Requested(Request::Stop));
                live.conn.clone()
            };
            if let Some(c) = conn {
                let _ = c.send(&DdmToDriver::Shutdown, &[]);
                c.kill();
            }
        }
        let deadline = Instant::now() + grace;
        for inst in &all {
            let mut live = inst.live.lock();
            while live.pid.is_some() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(live);
                    warn!("driver {}: did not stop in time; killing it", inst.name());
                    inst.signal(libc::SIGKILL);
                    break;
                }
                live = inst.changed.wait_timeout(live, left);
            }
        }
    }
}

/// `dir/name`, or `name` at the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The most node paths one log line names ([`Core::paths_for_log`]).
pub const PATHS_IN_LOG: usize = 8;

/// `paths` joined by spaces, the first [`PATHS_IN_LOG`] of them when there
/// are more, then how many were left out.
pub fn paths_for_log(paths: &[String]) -> String {
    paths_and_count(paths, paths.len() as u64)
}

/// The first [`PATHS_IN_LOG`] of `paths`, the first of `count` in all, and
/// how many more there are.
pub fn paths_and_count(paths: &[String], count: u64) -> String {
    let shown = &paths[..paths.len().min(PATHS_IN_LOG)];
    let more = count.saturating_sub(shown.len() as u64);
    if more == 0 {
        return shown.join(" ");
    }
    format!("{} and {more} more", shown.join(" "))
}

/// Spawns a named thread; a failure to spawn is logged (the DDM goes on).
pub fn spawn_named<F: FnOnce() + Send + 'static>(name: &str, f: F) {
    if let Err(e) = std::thread::Builder::new().name(name.to_owned()).spawn(f) {
        error!("cannot start thread {name}: {e}");
    }
}
