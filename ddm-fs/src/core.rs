//! The DDM's shared state: the tree, the driver instances, the open files,
//! and what happens when a driver speaks.
//!
//! [`Core`] owns the device tree, the driver instances and the table of open
//! files. Each running driver incarnation has a [`Conn`] (see
//! [`crate::conn`]). Starting, watching and restarting driver processes is in
//! [`crate::supervise`].
//!
//! ## Threads
//! - FUSE workers call [`Core::file_call`] / [`Conn::call`]: they park the
//!   reply and return. **No FUSE worker ever waits on a driver.**
//! - Per driver incarnation: a *reader* ([`Core::reader`]) that completes
//!   parked requests and registers devices, a *writer* that drains the FIFO
//!   when the socket is full, and a *reaper* that waits for the process.
//! - The *watchdog* ([`crate::supervise::watchdog`]) pings drivers and kills
//!   hung ones; the *interrupt watcher* ([`crate::interrupt`]) ends parked
//!   requests whose caller was signalled.
//!
//! Lock order: `tree` before `Instance::live` before `files` before a
//! `Conn`'s locks. No lock is held while calling into the kernel's FUSE
//! notification channel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use access_policy::{NodeKey, NodeKind as PolicyKind, Perm, PermStore, Policy};
use ddf::ipc::{IpcError, RecvBuf, MAX_FDS};
use ddf::proto::{
    Answer, BusId, Call, DdmToDriver, DeviceClass, DeviceId, DeviceSpec, DriverState, DriverToDdm, Errno, Handle,
    RequestId, StateEntry,
};
use fuser::{FopenFlags, Notifier, PollNotifier};
use log::{debug, error, info, warn};

pub use crate::conn::lock;
use crate::conn::{Conn, Parked};
use crate::manifest::Manifest;
use crate::supervise::Cause;
use crate::tree::{BusDevice, DeviceRef, Ino, NodeKind, Tree, ROOT};

/// Most bytes the state store keeps for one driver (all keys together).
pub const STATE_MAX_BYTES: usize = 1 << 20;

/// Most keys in one driver's state store.
pub const STATE_MAX_KEYS: usize = 64;

/// Most devices one driver instance may register.
pub const DEVICES_MAX: usize = 65_536;

/// Unsolicited messages (anything but replies) a driver may send in a burst,
/// and per second after it: beyond that it floods, and is killed.
const FLOOD_BURST: f64 = 50_000.0;
const FLOOD_RATE: f64 = 20_000.0;

/// What changes over a driver instance's life.
#[derive(Debug)]
pub struct Live {
    /// State.
    pub state: DriverState,
    /// Process id while running.
    pub pid: Option<u32>,
    /// The current incarnation's link.
    pub conn: Option<Arc<Conn>>,
    /// This incarnation's devices: driver number to inode.
    pub devices: HashMap<DeviceId, Ino>,
    /// This incarnation's buses: driver number to inode.
    pub buses: HashMap<BusId, Ino>,
    /// Every node (device or bus) this instance made or serves, by path,
    /// across incarnations (a restarted driver gets its old nodes back).
    pub names: HashMap<String, Ino>,
    /// Nodes registered by the current incarnation.
    pub seen: HashSet<Ino>,
    /// Restarts so far.
    pub restarts: u32,
    /// How the last incarnation ended.
    pub last_exit: Option<String>,
    /// Why the DDM killed (or is stopping) the current incarnation, if it did.
    pub kill_reason: Option<Cause>,
    /// Recent deaths, for the crash-loop window.
    pub failures: Vec<Instant>,
    /// When the last incarnation died (restart latency is measured from it).
    pub died_at: Option<Instant>,
    /// The heartbeat ping in flight: sequence number and when it was sent.
    pub ping: Option<(u64, Instant)>,
    /// When the last ping was sent.
    pub last_ping: Option<Instant>,
    /// When the current incarnation was started.
    pub started_at: Option<Instant>,
}

/// State a driver left with the DDM for its next incarnation.
#[derive(Debug)]
pub struct Stored {
    /// Bytes.
    pub bytes: Vec<u8>,
    /// Descriptors (a memfd, ...), owned by the DDM.
    pub fds: Vec<OwnedFd>,
}

/// A driver instance: one manifest, one process at a time.
#[derive(Debug)]
pub struct Instance {
    /// Index in [`Core::instances`].
    pub index: usize,
    /// Its manifest.
    pub manifest: Manifest,
    /// Executable path.
    pub exec: PathBuf,
    /// The bus its plain devices go on (the null bus unless loaded with
    /// `--bus`).
    pub attach: Ino,
    /// Changing state.
    pub live: Mutex<Live>,
    /// Signalled when the state changes (start-up waits on it).
    pub changed: Condvar,
    /// The state store: survives the driver's restarts (not ddm's).
    pub store: Mutex<BTreeMap<String, Stored>>,
    /// Calls answered.
    pub requests: AtomicU64,
    /// Calls answered with an error.
    pub errors: AtomicU64,
    /// The driver's own counters, by name.
    pub counters: Mutex<BTreeMap<String, u64>>,
}

impl Instance {
    /// An instance of `manifest`, not started.
    pub fn new(index: usize, manifest: Manifest, driver_dir: &std::path::Path, attach: Ino) -> Instance {
        Instance {
            index,
            exec: manifest.exec_path(driver_dir),
            manifest,
            attach,
            live: Mutex::new(Live {
                state: DriverState::Stopped,
                pid: None,
                conn: None,
                devices: HashMap::new(),
                buses: HashMap::new(),
                names: HashMap::new(),
                seen: HashSet::new(),
                restarts: 0,
                last_exit: None,
                kill_reason: None,
                failures: Vec::new(),
                died_at: None,
                ping: None,
                last_ping: None,
                started_at: None,
            }),
            changed: Condvar::new(),
            store: Mutex::new(BTreeMap::new()),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            counters: Mutex::new(BTreeMap::new()),
        }
    }

    /// The current link, if the driver runs.
    pub fn conn(&self) -> Option<Arc<Conn>> {
        lock(&self.live).conn.clone()
    }

    /// Name for log lines.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

/// A call waiting for an open file's driver to come back.
pub struct Waiter {
    /// Builds the call once the new handle is known.
    pub make: Box<dyn FnOnce(Handle) -> Call + Send>,
    /// The call's payload (a write's data).
    pub payload: Vec<u8>,
    /// The FUSE reply.
    pub parked: Parked,
    /// The caller.
    pub pid: u32,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("parked", &self.parked.kind()).field("pid", &self.pid).finish()
    }
}

/// How an open file reaches its driver.
#[derive(Debug)]
pub enum Link {
    /// Through this incarnation, with this handle.
    Live {
        /// The incarnation.
        conn: Arc<Conn>,
        /// The driver's handle.
        handle: Handle,
    },
    /// The driver restarted and the file is being re-opened (or waits for
    /// the driver to be ready); calls wait here.
    Waiting {
        /// Calls made meanwhile.
        waiters: Vec<Waiter>,
        /// Whether the re-open was sent.
        reopening: bool,
    },
    /// The driver died and this file does not survive restarts: `EIO`.
    Dead,
    /// The device went away: `ENODEV`.
    Gone,
}

/// An open file under the mount.
#[derive(Debug)]
pub struct OpenFile {
    /// The node.
    pub ino: Ino,
    /// The driver instance.
    pub instance: usize,
    /// `open(2)` flags (for re-opening).
    pub flags: ddf::proto::OpenFlags,
    /// The link to the driver.
    pub link: Link,
    /// The kernel's poll handle, if the file is polled.
    pub poll: Option<PollNotifier>,
    /// Whether this open uses its node's passthrough backing file (see
    /// [`Core::backings`]).
    pub backing: bool,
}

/// A passthrough backing file registered with the kernel for one node. The
/// kernel wants every passthrough open of an inode to use the same one, so it
/// is shared by the node's opens and released with the last of them.
#[derive(Debug)]
pub struct Backing {
    id: fuser::BackingId,
    /// Device and inode of the backing file, to recognise the same file when
    /// a restarted driver hands it over again.
    file: (u64, u64),
    opens: usize,
}

/// A driver's reply to one request, as it came.
#[derive(Debug)]
struct DriverAnswer<'a> {
    id: RequestId,
    result: Result<Answer, Errno>,
    /// The frame's payload (read data, ioctl output).
    payload: &'a [u8],
    /// A descriptor that came with it (a passthrough backing file).
    backing: Option<OwnedFd>,
}

/// What the plugin manager did with an offered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// No driver took it; why.
    Unbound(String),
    /// Handed to this driver instance.
    Bound(usize),
}

/// Everything the DDM knows.
#[derive(Debug)]
pub struct Core {
    /// The device tree.
    pub tree: RwLock<Tree>,
    /// Driver instances; only ever appended to (indices are stable), a
    /// stopped instance stays with state `stopped`.
    pub instances: RwLock<Vec<Arc<Instance>>>,
    /// Every manifest ddm knows (built in, `--manifest`): what `ddmctl load`
    /// and the plugin manager start instances from.
    pub catalog: Vec<Manifest>,
    /// Which offered device nodes are bound to which driver, or why not.
    pub bindings: Mutex<HashMap<Ino, Binding>>,
    driver_dir: PathBuf,
    /// Open files by FUSE file handle.
    pub files: Mutex<HashMap<u64, OpenFile>>,
    /// Passthrough backing files by node.
    pub backings: Mutex<HashMap<Ino, Backing>>,
    next_fh: AtomicU64,
    /// FUSE notifications, once mounted.
    pub notifier: OnceLock<Notifier>,
    /// Set once shutdown begins: nothing restarts after it.
    pub stopping: AtomicBool,
    /// Default permissions.
    pub policy: Policy,
    /// Permissions changed on the mount (chmod, chown, ACLs), persisted.
    pub perms: Mutex<PermStore>,
}

impl Core {
    /// A core with the null bus and the given driver instances (not started).
    /// A core with the null bus, knowing the `catalog` of manifests, with an
    /// instance (not started) of each one that starts with ddm.
    pub fn new(catalog: Vec<Manifest>, driver_dir: &std::path::Path, policy: Policy, perms: PermStore) -> Arc<Core> {
        let root_key = NodeKey::new("", None);
        let root_perm = perms.get(&root_key).unwrap_or_else(|| policy.perm_for("", PolicyKind::Bus));
        let instances = catalog
            .iter()
            .filter(|m| m.autostart)
            .cloned()
            .enumerate()
            .map(|(index, manifest)| Arc::new(Instance::new(index, manifest, driver_dir, ROOT)))
            .collect();
        Arc::new(Core {
            tree: RwLock::new(Tree::new(root_perm)),
            instances: RwLock::new(instances),
            catalog,
            bindings: Mutex::new(HashMap::new()),
            driver_dir: driver_dir.to_owned(),
            files: Mutex::new(HashMap::new()),
            backings: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            notifier: OnceLock::new(),
            stopping: AtomicBool::new(false),
            policy,
            perms: Mutex::new(perms),
        })
    }

    /// The instance at `index`.
    pub fn inst(&self, index: usize) -> Option<Arc<Instance>> {
        self.instances.read().unwrap_or_else(|p| p.into_inner()).get(index).cloned()
    }

    /// Every instance, in index order.
    pub fn all(&self) -> Vec<Arc<Instance>> {
        self.instances.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds an instance of `manifest` (not started) whose plain devices go
    /// on bus `attach`; returns it.
    pub fn add_instance(&self, manifest: Manifest, attach: Ino) -> Arc<Instance> {
        let mut all = self.instances.write().unwrap_or_else(|p| p.into_inner());
        let inst = Arc::new(Instance::new(all.len(), manifest, &self.driver_dir, attach));
        all.push(inst.clone());
        inst
    }

    /// The permissions a new node at `path` starts with: what was recorded
    /// for it (a chmod before a restart of ddm, of its driver, or before it
    /// was unplugged), else what the rules say.
    pub fn initial_perm(&self, path: &str, identity: Option<&str>, kind: PolicyKind) -> Perm {
        let key = NodeKey::new(path, identity.map(str::to_owned));
        lock(&self.perms).get(&key).unwrap_or_else(|| self.policy.perm_for(path, kind))
    }

    /// The store key of node `ino`.
    pub fn node_key(&self, ino: Ino) -> NodeKey {
        let path = self.tree.read().unwrap_or_else(|p| p.into_inner()).path(ino);
        NodeKey::new(path, None)
    }

    /// The instance called `name`.
    pub fn instance(&self, name: &str) -> Option<Arc<Instance>> {
        self.all().into_iter().find(|i| i.name() == name)
    }

    /// Paths of an instance's device nodes, for log lines.
    pub fn device_paths(&self, inst: &Instance) -> Vec<String> {
        let inos: Vec<Ino> = lock(&inst.live).names.values().copied().collect();
        let tree = self.tree.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = inos.into_iter().map(|i| format!("/{}", tree.path(i))).collect();
        v.sort();
        v
    }

    /// Serves one incarnation's socket until it closes or breaks the
    /// protocol; runs on the link's reader thread.
    pub fn reader(self: &Arc<Core>, inst: &Arc<Instance>, conn: &Arc<Conn>) {
        let mut buf = RecvBuf::default();
        let mut bucket = FLOOD_BURST;
        let mut refilled = Instant::now();
        let outcome = (|| -> Result<(), String> {
            conn.chan().handshake(&mut buf).map_err(|e| format!("handshake: {e}"))?;
            self.send_start(inst, conn)?;
            loop {
                let frame = match conn.chan().recv(&mut buf) {
                    Ok(f) => f,
                    Err(IpcError::Closed) => return Ok(()),
                    Err(e) => return Err(format!("bad frame: {e}")),
                };
                let msg: DriverToDdm = frame.decode().map_err(|e| format!("bad message: {e}"))?;
                if !matches!(msg, DriverToDdm::Reply { .. }) {
                    let now = Instant::now();
                    bucket = (bucket + now.duration_since(refilled).as_secs_f64() * FLOOD_RATE).min(FLOOD_BURST);
                    refilled = now;
                    bucket -= 1.0;
                    if bucket < 0.0 {
                        return Err(format!("flood: more than {FLOOD_RATE} unsolicited messages a second"));
                    }
                }
                let fds = frame.fds;
                self.on_message(inst, conn, msg, frame.payload, fds)?;
            }
        })();
        if let Err(why) = outcome {
            if !conn.is_dead() {
                error!("driver {}: protocol violation: {why}; killing it", inst.name());
                crate::supervise::kill(inst, Cause::Protocol(why));
            }
        }
        conn.kill();
    }

    /// Sends `Start` with the instance's parameters and stored state.
    fn send_start(&self, inst: &Instance, conn: &Conn) -> Result<(), String> {
        let store = lock(&inst.store);
        let mut state = Vec::new();
        let mut fds = Vec::new();
        for (key, s) in store.iter() {
            if fds.len() + s.fds.len() > MAX_FDS {
                warn!("driver {}: state {key:?} left out: too many descriptors", inst.name());
                continue;
            }
            state.push(StateEntry { key: key.clone(), bytes: s.bytes.clone(), fds: s.fds.len() as u8 });
            fds.extend(s.fds.iter().map(|f| f.as_fd()));
        }
        let start = DdmToDriver::Start { instance: inst.name().to_owned(), params: inst.manifest.param_pairs(), state };
        conn.chan().send(&start, &[], &fds).map_err(|e| format!("start: {e}"))
    }

    fn on_message(
        self: &Arc<Core>,
        inst: &Arc<Instance>,
        conn: &Arc<Conn>,
        msg: DriverToDdm,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), String> {
        let takes_fds = match &msg {
            DriverToDdm::SaveState { .. } => true,
            DriverToDdm::Reply { result, .. } => fds.len() == 1 && matches!(result, Ok(Answer::OpenedBacked { .. })),
            _ => false,
        };
        if !fds.is_empty() && !takes_fds {
            return Err(format!("{} descriptors sent with a message that takes none", fds.len()));
        }
        match msg {
            DriverToDdm::AddDevice(spec) => self.add_device(inst, spec),
            DriverToDdm::RemoveDevice { device } => {
                self.remove_device(inst, device);
                Ok(())
            }
            DriverToDdm::AddBus { bus, name, kind, parent } => self.add_bus(inst, bus, name, kind, parent),
            DriverToDdm::RemoveBus { bus } => {
                self.remove_bus(inst, bus);
                Ok(())
            }
            DriverToDdm::Ready => {
                self.on_ready(inst, conn);
                Ok(())
            }
            DriverToDdm::Pong { seq } => {
                let mut live = lock(&inst.live);
                if live.ping.is_some_and(|(s, _)| s == seq) {
                    live.ping = None;
                }
                Ok(())
            }
            DriverToDdm::PollWake { handle } => {
                self.poll_wake(conn, handle);
                Ok(())
            }
            DriverToDdm::SaveState { key } => self.save_state(inst, key, payload, fds),
            DriverToDdm::DropState { key } => {
                lock(&inst.store).remove(&key);
                Ok(())
            }
            DriverToDdm::Counters(list) => {
                let mut counters = lock(&inst.counters);
                for (name, value) in list {
                    if counters.len() >= ddf::proto::COUNTERS_MAX && !counters.contains_key(&name) {
                        return Err(format!("more than {} counters", ddf::proto::COUNTERS_MAX));
                    }
                    if name.len() > 64 {
                        return Err("counter name over 64 bytes".into());
                    }
                    counters.insert(name, value);
                }
                Ok(())
            }
            DriverToDdm::Reply { id, result } => {
                let Some(p) = lock(&conn.pending).remove(&id) else {
                    return Err(format!("reply to unknown request {}", id.0));
                };
                inst.requests.fetch_add(1, Ordering::Relaxed);
                if result.is_err() {
                    inst.errors.fetch_add(1, Ordering::Relaxed);
                }
                let answer = DriverAnswer { id, result, payload, backing: fds.into_iter().next() };
                self.complete(inst, conn, p.parked, answer)
            }
        }
    }

    fn save_state(&self, inst: &Instance, key: String, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<(), String> {
        let mut store = lock(&inst.store);
        let others: usize = store.iter().filter(|(k, _)| **k != key).map(|(_, s)| s.bytes.len()).sum();
        if others + bytes.len() > STATE_MAX_BYTES {
            return Err(format!("state store over {STATE_MAX_BYTES} bytes"));
        }
        if !store.contains_key(&key) && store.len() >= STATE_MAX_KEYS {
            return Err(format!("state store over {STATE_MAX_KEYS} keys"));
        }
        debug!("driver {}: state {key:?} saved ({} bytes, {} fds)", inst.name(), bytes.len(), fds.len());
        store.insert(key, Stored { bytes: bytes.to_vec(), fds });
        Ok(())
    }

    fn on_ready(self: &Arc<Core>, inst: &Arc<Instance>, conn: &Arc<Conn>) {
        let (stale, restarted_in, restarts) = {
            let mut live = lock(&inst.live);
            live.state = DriverState::Running;
            let seen = std::mem::take(&mut live.seen);
            let stale: Vec<(String, Ino)> =
                live.names.iter().filter(|(_, ino)| !seen.contains(ino)).map(|(n, i)| (n.clone(), *i)).collect();
            for (n, _) in &stale {
                live.names.remove(n);
            }
            live.seen = seen;
            (stale, live.died_at.take().map(|t| t.elapsed()), live.restarts)
        };
        inst.changed.notify_all();
        for (_, ino) in stale {
            self.remove_node(ino);
        }
        match restarted_in {
            Some(d) => info!(
                "driver {}: restarted (restart {restarts}) in {} ms, serving {}",
                inst.name(),
                d.as_millis(),
                self.device_paths(inst).join(" ")
            ),
            None => info!("driver {}: ready, serving {}", inst.name(), self.device_paths(inst).join(" ")),
        }
        // Devices the plugin manager handed it (again, after a restart).
        crate::plug::bind_all(self, inst);
        // Open files that survive restarts and have calls waiting: re-open now.
        let todo: Vec<(u64, Ino, ddf::proto::OpenFlags)> = lock(&self.files)
            .iter_mut()
            .filter(|(_, f)| f.instance == inst.index)
            .filter_map(|(fh, f)| match &mut f.link {
                Link::Waiting { reopening, .. } if !*reopening => {
                    *reopening = true;
                    Some((*fh, f.ino, f.flags))
                }
                _ => None,
            })
            .collect();
        for (fh, ino, flags) in todo {
            self.reopen(inst, conn, fh, ino, flags);
        }
    }

    /// Sends an open for file `fh` on a new incarnation.
    fn reopen(&self, inst: &Instance, conn: &Arc<Conn>, fh: u64, ino: Ino, flags: ddf::proto::OpenFlags) {
        let device = match self.tree.read().unwrap_or_else(|p| p.into_inner()).get(ino).map(|n| &n.kind) {
            Some(NodeKind::Device(d)) if d.instance == inst.index => Some(d.device),
            _ => None,
        };
        match device {
            Some(device) => {
                debug!("driver {}: re-opening fh {fh}", inst.name());
                conn.call(Call::Open { device, flags }, &[], Parked::Reopen { fh }, 0);
            }
            None => self.reopen_failed(fh, Errno::ENODEV),
        }
    }

    fn reopen_failed(&self, fh: u64, err: Errno) {
        let waiters = match lock(&self.files).get_mut(&fh) {
            Some(f) => match std::mem::replace(&mut f.link, Link::Dead) {
                Link::Waiting { waiters, .. } => waiters,
                other => {
                    f.link = other;
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        for w in waiters {
            w.parked.fail(err);
        }
    }

    /// What to do with an incarnation's open files when it died: files that
    /// survive restarts wait for the next incarnation (a re-open in flight
    /// is retried), the others are dead. With `quarantined`, all are dead.
    pub fn orphan_files(&self, inst: &Instance, quarantined: bool) {
        let survive = inst.manifest.handles_survive_restart && !quarantined;
        let mut failed = Vec::new();
        for f in lock(&self.files).values_mut().filter(|f| f.instance == inst.index) {
            let dead_link = match &f.link {
                Link::Live { conn, .. } => conn.is_dead(),
                Link::Waiting { .. } => true,
                Link::Dead | Link::Gone => false,
            };
            if !dead_link {
                continue;
            }
            if survive {
                match &mut f.link {
                    Link::Waiting { reopening, .. } => *reopening = false,
                    other => *other = Link::Waiting { waiters: Vec::new(), reopening: false },
                }
            } else if let Link::Waiting { waiters, .. } = std::mem::replace(&mut f.link, Link::Dead) {
                failed.extend(waiters);
            }
        }
        for w in failed {
            w.parked.fail(Errno::EIO);
        }
    }

    /// Makes a call on open file `fh`: at once on a live link, after the
    /// re-open for a file whose driver restarted, or `EIO`/`EBADF`.
    pub fn file_call<F>(&self, fh: u64, make: F, payload: &[u8], parked: Parked, pid: u32)
    where
        F: FnOnce(Handle) -> Call + Send + 'static,
    {
        let mut files = lock(&self.files);
        let Some(f) = files.get_mut(&fh) else {
            drop(files);
            parked.fail(Errno::EBADF);
            return;
        };
        let waiter = |make: F, parked: Parked| Waiter { make: Box::new(make), payload: payload.to_vec(), parked, pid };
        match &mut f.link {
            Link::Live { conn, handle } if !conn.is_dead() => {
                let (conn, handle) = (conn.clone(), *handle);
                drop(files);
                conn.call(make(handle), payload, parked, pid);
            }
            Link::Waiting { waiters, .. } => waiters.push(waiter(make, parked)),
            Link::Dead => {
                drop(files);
                parked.fail(Errno::EIO);
            }
            Link::Gone => {
                drop(files);
                parked.fail(Errno::ENODEV);
            }
            Link::Live { .. } => {
                // The incarnation died under this file.
                let Some(inst) = self.inst(f.instance) else {
                    drop(files);
                    parked.fail(Errno::EIO);
                    return;
                };
                let inst = &inst;
                if !inst.manifest.handles_survive_restart {
                    f.link = Link::Dead;
                    drop(files);
                    parked.fail(Errno::EIO);
                    return;
                }
                let (state, conn) = {
                    let live = lock(&inst.live);
                    (live.state, live.conn.clone())
                };
                match (state, conn) {
                    (DriverState::Running, Some(conn)) => {
                        f.link = Link::Waiting { waiters: vec![waiter(make, parked)], reopening: true };
                        let (ino, flags) = (f.ino, f.flags);
                        drop(files);
                        self.reopen(inst, &conn, fh, ino, flags);
                    }
                    (DriverState::Running | DriverState::Starting | DriverState::Restarting, _) => {
                        f.link = Link::Waiting { waiters: vec![waiter(make, parked)], reopening: false };
                    }
                    (DriverState::Failed | DriverState::Stopped, _) => {
                        f.link = Link::Dead;
                        drop(files);
                        parked.fail(Errno::EIO);
                    }
                }
            }
        }
    }

    /// Registers (or reuses) the passthrough backing file of node `ino` for
    /// one more open. `None`: serve this open through the driver.
    fn backing_for(&self, inst: &Instance, reply: &fuser::ReplyOpen, ino: Ino, fd: OwnedFd) -> Option<()> {
        let st = nix::sys::stat::fstat(&fd).ok()?;
        let file = (st.st_dev as u64, st.st_ino as u64);
        let mut backings = lock(&self.backings);
        if let Some(b) = backings.get_mut(&ino) {
            if b.file == file {
                b.opens += 1;
                return Some(());
            }
            // Another file while the old one is in use: the kernel would
            // refuse mixing them on one inode.
            warn!(
                "driver {}: a different backing file while the old one is open; serving through the driver",
                inst.name()
            );
            return None;
        }
        match reply.open_backing(&fd) {
            Ok(id) => {
                backings.insert(ino, Backing { id, file, opens: 1 });
                Some(())
            }
            Err(e) => {
                warn!("driver {}: passthrough refused by the kernel ({e}); serving through the driver", inst.name());
                None
            }
        }
    }

    /// Closes open file `fh` (FUSE release).
    pub fn release(&self, fh: u64) {
        let Some(f) = lock(&self.files).remove(&fh) else { return };
        if f.backing {
            let mut backings = lock(&self.backings);
            if let Some(b) = backings.get_mut(&f.ino) {
                b.opens -= 1;
                if b.opens == 0 {
                    backings.remove(&f.ino);
                }
            }
        }
        match f.link {
            Link::Live { conn, handle } => {
                conn.call(Call::Close { handle }, &[], Parked::Discard, 0);
            }
            Link::Waiting { waiters, .. } => {
                for w in waiters {
                    w.parked.fail(Errno::EBADF);
                }
            }
            Link::Dead | Link::Gone => {}
        }
    }

    /// Records the kernel's poll handle for `fh`; returns false if there is
    /// no such file.
    pub fn set_poll(&self, fh: u64, ph: PollNotifier) -> bool {
        match lock(&self.files).get_mut(&fh) {
            Some(f) => {
                f.poll = Some(ph);
                true
            }
            None => false,
        }
    }

    /// Completes a parked FUSE request with the driver's answer.
    fn complete(
        &self,
        inst: &Instance,
        conn: &Arc<Conn>,
        parked: Parked,
        answer: DriverAnswer<'_>,
    ) -> Result<(), String> {
        let DriverAnswer { id, result, payload, backing } = answer;
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                let e = if (1..4096).contains(&e.0) { e } else { Errno::EIO };
                if let Parked::Reopen { fh } = parked {
                    self.reopen_failed(fh, e);
                } else {
                    parked.fail(e);
                }
                return Ok(());
            }
        };
        match (parked, answer) {
            (Parked::Discard, _) => {}
            (
                Parked::Open { reply, ino, class, flags },
                Answer::Opened { handle } | Answer::OpenedBacked { handle },
            ) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                // Zero copy: the kernel reads and writes the driver's file
                // itself (FUSE passthrough). Without kernel support, the
                // open goes through the driver like any other.
                let passthrough = backing.and_then(|fd| self.backing_for(inst, &reply, ino, fd));
                lock(&self.files).insert(
                    fh,
                    OpenFile {
                        ino,
                        instance: inst.index,
                        flags,
                        link: Link::Live { conn: conn.clone(), handle },
                        poll: None,
                        backing: passthrough.is_some(),
                    },
                );
                match passthrough {
                    Some(()) => {
                        let backings = lock(&self.backings);
                        match backings.get(&ino) {
                            Some(b) => reply.opened_passthrough(fuser::FileHandle(fh), FopenFlags::empty(), &b.id),
                            None => reply.opened(fuser::FileHandle(fh), open_flags(class)),
                        }
                    }
                    None => reply.opened(fuser::FileHandle(fh), open_flags(class)),
                }
            }
            (Parked::Reopen { fh }, Answer::Opened { handle } | Answer::OpenedBacked { handle }) => {
                let waiters = match lock(&self.files).get_mut(&fh) {
                    Some(f) => match std::mem::replace(&mut f.link, Link::Live { conn: conn.clone(), handle }) {
                        Link::Waiting { waiters, .. } => Some(waiters),
                        _ => Some(Vec::new()),
                    },
                    None => None,
                };
                match waiters {
                    // Closed meanwhile: close the new handle too.
                    None => {
                        conn.call(Call::Close { handle }, &[], Parked::Discard, 0);
                    }
                    Some(waiters) => {
                        debug!("driver {}: fh {fh} re-opened as handle {handle}", inst.name());
                        for w in waiters {
                            conn.call((w.make)(handle), &w.payload, w.parked, w.pid);
                        }
                    }
                }
            }
            // More than was asked for is a lie the kernel would refuse.
            (Parked::Read(reply, max), Answer::Data) if payload.len() > max as usize => {
                reply.error(fuser::Errno::EIO);
                return Err(format!("read #{} answered {} bytes, {max} asked", id.0, payload.len()));
            }
            (Parked::Write(reply, brought), Answer::Written { len }) if len > brought => {
                reply.error(fuser::Errno::EIO);
                return Err(format!("write #{} claims {len} bytes written of {brought}", id.0));
            }
            (Parked::Ioctl(reply, max), Answer::Ioctl { .. }) if payload.len() > max as usize => {
                reply.error(fuser::Errno::EIO);
                return Err(format!("ioctl #{} answered {} bytes, {max} asked", id.0, payload.len()));
            }
            (Parked::Read(reply, _), Answer::Data) => reply.data(payload),
            (Parked::Write(reply, _), Answer::Written { len }) => reply.written(len),
            (Parked::Ioctl(reply, _), Answer::Ioctl { result }) => reply.ioctl(result, payload),
            (Parked::Poll(reply), Answer::Polled { revents }) => {
                reply.poll(fuser::PollEvents::from_bits_truncate(revents))
            }
            (parked, answer) => {
                let kind = parked.kind();
                if let Parked::Reopen { fh } = parked {
                    self.reopen_failed(fh, Errno::EIO);
                } else {
                    parked.fail(Errno::EIO);
                }
                return Err(format!("answer {answer:?} does not fit {kind} request {}", id.0));
            }
        }
        Ok(())
    }

    fn poll_wake(&self, conn: &Arc<Conn>, handle: Handle) {
        let notifiers: Vec<PollNotifier> = lock(&self.files)
            .values_mut()
            .filter(|f| matches!(&f.link, Link::Live { conn: c, handle: h } if *h == handle && Arc::ptr_eq(c, conn)))
            .filter_map(|f| f.poll.take())
            .collect();
        for n in notifiers {
            if let Err(e) = n.notify() {
                debug!("poll notify: {e}");
            }
        }
    }

    /// Where a driver's node goes: on one of its buses, or its attach point.
    fn parent_of(&self, inst: &Instance, bus: Option<BusId>) -> Result<Ino, String> {
        match bus {
            None => Ok(inst.attach),
            Some(b) => lock(&inst.live).buses.get(&b).copied().ok_or_else(|| format!("device on unknown bus {b}")),
        }
    }

    /// Tells the kernel that `name` in `parent` changed (appeared or went),
    /// so that the next lookup or `ls` sees it.
    fn inval_entry(&self, parent: Ino, name: &str) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_entry(fuser::INodeNo(parent), name.as_ref()) {
                debug!("inval entry {name}: {e}");
            }
        }
    }

    fn add_bus(
        &self,
        inst: &Instance,
        bus: BusId,
        name: String,
        kind: String,
        parent: Option<BusId>,
    ) -> Result<(), String> {
        let parent = self.parent_of(inst, parent)?;
        if lock(&inst.live).buses.contains_key(&bus) {
            return Err(format!("bus number {bus} registered twice"));
        }
        let path = {
            let tree = self.tree.read().unwrap_or_else(|p| p.into_inner());
            join(&tree.path(parent), &name)
        };
        // A restarted bus driver gets its old directory back.
        let existing = lock(&inst.live).names.get(&path).copied();
        if let Some(ino) = existing {
            let ok = matches!(
                self.tree.read().unwrap_or_else(|p| p.into_inner()).get(ino).map(|n| &n.kind),
                Some(NodeKind::Bus { .. })
            );
            if ok {
                let mut live = lock(&inst.live);
                live.buses.insert(bus, ino);
                live.seen.insert(ino);
                return Ok(());
            }
        }
        let perm = self.initial_perm(&path, None, PolicyKind::Bus);
        let kind = NodeKind::Bus { children: BTreeMap::new(), kind: Some(kind), owner: Some(inst.index) };
        let added = self.tree.write().unwrap_or_else(|p| p.into_inner()).add(parent, &name, kind, perm);
        match added {
            Ok(ino) => {
                let mut live = lock(&inst.live);
                live.buses.insert(bus, ino);
                live.names.insert(path, ino);
                live.seen.insert(ino);
                drop(live);
                self.inval_entry(parent, &name);
                Ok(())
            }
            Err(e) => {
                warn!("driver {}: bus {name:?} refused: {e}", inst.name());
                Ok(())
            }
        }
    }

    fn add_device(self: &Arc<Core>, inst: &Arc<Instance>, spec: DeviceSpec) -> Result<(), String> {
        let size = if spec.class == DeviceClass::Block { spec.size } else { 0 };
        {
            let live = lock(&inst.live);
            if live.devices.len() >= DEVICES_MAX {
                return Err(format!("more than {DEVICES_MAX} devices"));
            }
            if live.devices.contains_key(&spec.device) {
                return Err(format!("device number {} registered twice", spec.device));
            }
        }
        // A driver bound to a device takes over the node the bus made.
        if let Some(path) = &spec.serves {
            return self.serve_bound(inst, &spec, path);
        }
        let parent = self.parent_of(inst, spec.bus)?;
        let path = {
            let tree = self.tree.read().unwrap_or_else(|p| p.into_inner());
            join(&tree.path(parent), &spec.name)
        };
        let bus = match spec.bus {
            None => None,
            Some(_) => {
                let kind = match self.tree.read().unwrap_or_else(|p| p.into_inner()).get(parent).map(|n| &n.kind) {
                    Some(NodeKind::Bus { kind, .. }) => kind.clone().unwrap_or_default(),
                    _ => String::new(),
                };
                Some(Arc::new(BusDevice {
                    provider: (inst.index, spec.device),
                    class: spec.class,
                    size,
                    kind,
                    address: spec.address.clone(),
                    meta: spec.meta.clone(),
                    offered: spec.offer,
                }))
            }
        };
        let dref = DeviceRef { instance: inst.index, device: spec.device, class: spec.class, size, bus };
        // A restarted driver registering a device it had before gets the
        // same node back (same inode, permissions, open files).
        let existing = lock(&inst.live).names.get(&path).copied();
        if let Some(ino) = existing {
            let bound_elsewhere = matches!(
                lock(&self.bindings).get(&ino),
                Some(Binding::Bound(i)) if *i != inst.index
            );
            let ok = {
                let mut tree = self.tree.write().unwrap_or_else(|p| p.into_inner());
                match tree.get_mut(ino) {
                    Some(n) => {
                        if let NodeKind::Device(old) = &mut n.kind {
                            if bound_elsewhere {
                                // Keep serving through the bound driver;
                                // refresh what the bus says.
                                old.bus = dref.bus.clone();
                            } else {
                                *old = dref.clone();
                            }
                        }
                        true
                    }
                    None => false,
                }
            };
            let mut live = lock(&inst.live);
            if ok {
                live.devices.insert(spec.device, ino);
                live.seen.insert(ino);
                return Ok(());
            }
            live.names.remove(&path);
        }
        let kind = match spec.class {
            DeviceClass::Char => PolicyKind::CharDevice,
            DeviceClass::Block => PolicyKind::BlockDevice,
        };
        let perm: Perm = self.initial_perm(&path, spec.address.as_deref(), kind);
        let offered = spec.offer && dref.bus.is_some();
        let added =
            self.tree.write().unwrap_or_else(|p| p.into_inner()).add(parent, &spec.name, NodeKind::Device(dref), perm);
        match added {
            Ok(ino) => {
                let mut live = lock(&inst.live);
                live.devices.insert(spec.device, ino);
                live.names.insert(path.clone(), ino);
                live.seen.insert(ino);
                drop(live);
                debug!("driver {}: device /{path} is inode {ino}", inst.name());
                self.inval_entry(parent, &spec.name);
                if offered {
                    crate::plug::plug(self, ino);
                }
            }
            Err(e) => warn!("driver {}: device {:?} refused: {e}", inst.name(), spec.name),
        }
        Ok(())
    }

    /// A bound driver registers the device it serves for node `path`.
    fn serve_bound(&self, inst: &Instance, spec: &DeviceSpec, path: &str) -> Result<(), String> {
        let ino = self.tree.read().unwrap_or_else(|p| p.into_inner()).resolve(path).map(|n| n.ino);
        let Some(ino) = ino.filter(|i| lock(&self.bindings).get(i) == Some(&Binding::Bound(inst.index))) else {
            return Err(format!("serves {path:?}, which is not bound to it"));
        };
        let size = if spec.class == DeviceClass::Block { spec.size } else { 0 };
        let mut tree = self.tree.write().unwrap_or_else(|p| p.into_inner());
        if let Some(NodeKind::Device(d)) = tree.get_mut(ino).map(|n| &mut n.kind) {
            d.instance = inst.index;
            d.device = spec.device;
            d.class = spec.class;
            d.size = size;
        }
        drop(tree);
        let mut live = lock(&inst.live);
        live.devices.insert(spec.device, ino);
        live.names.insert(path.to_owned(), ino);
        live.seen.insert(ino);
        info!("driver {}: serving /{path}", inst.name());
        Ok(())
    }

    fn remove_device(self: &Arc<Core>, inst: &Instance, device: DeviceId) {
        let ino = {
            let mut live = lock(&inst.live);
            let Some(ino) = live.devices.remove(&device) else {
                drop(live);
                // Also the normal end of a device whose node went first (a
                // bound driver told to unbind a removed device).
                debug!("driver {}: removal of unknown device {device}", inst.name());
                return;
            };
            live.names.retain(|_, i| *i != ino);
            live.seen.remove(&ino);
            ino
        };
        // A bound driver letting go of a node: its bus driver serves it again.
        let provider = match self.tree.read().unwrap_or_else(|p| p.into_inner()).get(ino).map(|n| &n.kind) {
            Some(NodeKind::Device(d)) => d.bus.as_ref().map(|b| b.provider.0).filter(|p| *p != inst.index),
            _ => None,
        };
        if provider.is_some() {
            // Unless it was taken back already (unload), its bus driver
            // serves it again.
            if lock(&self.bindings).get(&ino) == Some(&Binding::Bound(inst.index)) {
                crate::plug::release_to_provider(self, ino, "released by its driver");
            }
            return;
        }
        self.remove_node(ino);
    }

    fn remove_bus(self: &Arc<Core>, inst: &Instance, bus: BusId) {
        let Some(ino) = lock(&inst.live).buses.remove(&bus) else {
            warn!("driver {}: removal of unknown bus {bus}", inst.name());
            return;
        };
        self.remove_node(ino);
    }

    /// Removes a node (and what is below it): its bound drivers are told,
    /// its open files answer `ENODEV` from now on, the kernel is told.
    pub fn remove_node(self: &Arc<Core>, ino: Ino) {
        let (base, removed) = {
            let mut tree = self.tree.write().unwrap_or_else(|p| p.into_inner());
            let base = tree.get(ino).map(|n| tree.path(n.parent)).unwrap_or_default();
            (base, tree.remove(ino))
        };
        let gone: HashSet<Ino> = removed.iter().map(|n| n.ino).collect();
        // Forget the nodes in every instance's books.
        for inst in self.all() {
            let mut live = lock(&inst.live);
            live.names.retain(|_, i| !gone.contains(i));
            live.devices.retain(|_, i| !gone.contains(i));
            live.buses.retain(|_, i| !gone.contains(i));
            live.seen.retain(|i| !gone.contains(i));
        }
        let mut unbind = Vec::new();
        {
            let tree_paths: Vec<(Ino, String)> = removed.iter().map(|n| (n.ino, n.name.clone())).collect();
            let mut bindings = lock(&self.bindings);
            for (i, _) in &tree_paths {
                if let Some(Binding::Bound(b)) = bindings.remove(i) {
                    unbind.push((*i, b));
                }
            }
        }
        for (i, b) in unbind {
            let path = join(&base, &removed_path(&removed, i));
            crate::plug::unbind_driver(self, b, &path);
        }
        let mut failed = Vec::new();
        for f in lock(&self.files).values_mut().filter(|f| gone.contains(&f.ino)) {
            if let Link::Waiting { waiters, .. } = std::mem::replace(&mut f.link, Link::Gone) {
                failed.extend(waiters);
            }
            f.link = Link::Gone;
        }
        for w in failed {
            w.parked.fail(Errno::ENODEV);
        }
        if let Some(n) = self.notifier.get() {
            for node in removed {
                if let Err(e) = n.delete(fuser::INodeNo(node.parent), fuser::INodeNo(node.ino), node.name.as_ref()) {
                    debug!("inval {}: {e}", node.name);
                }
            }
        }
    }

    /// Stops every driver: asks nicely, fails what is in flight, then kills
    /// what did not exit within `grace`.
    pub fn stop_all(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        let all = self.all();
        for inst in &all {
            let conn = {
                let mut live = lock(&inst.live);
                live.state = DriverState::Stopped;
                live.kill_reason = Some(Cause::Requested(crate::supervise::Request::Stop));
                live.conn.clone()
            };
            if let Some(c) = conn {
                let _ = c.send(&DdmToDriver::Shutdown, &[]);
                c.kill();
            }
        }
        let deadline = Instant::now() + grace;
        for inst in &all {
            let mut live = lock(&inst.live);
            while live.pid.is_some() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(live);
                    warn!("driver {}: did not stop in time; killing it", inst.name());
                    crate::supervise::signal(inst, libc::SIGKILL);
                    break;
                }
                live = inst.changed.wait_timeout(live, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
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

/// The path a removed node had (from the removed set, which holds its
/// ancestors up to the removed subtree's root).
fn removed_path(removed: &[crate::tree::Node], ino: Ino) -> String {
    let mut parts = Vec::new();
    let mut cur = removed.iter().find(|n| n.ino == ino);
    while let Some(n) = cur {
        parts.push(n.name.clone());
        cur = removed.iter().find(|p| p.ino == n.parent && p.ino != n.ino);
    }
    parts.reverse();
    parts.join("/")
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

/// Spawns a named thread; a failure to spawn is logged (the DDM goes on).
pub fn spawn_named<F: FnOnce() + Send + 'static>(name: &str, f: F) {
    if let Err(e) = std::thread::Builder::new().name(name.to_owned()).spawn(f) {
        error!("cannot start thread {name}: {e}");
    }
}
