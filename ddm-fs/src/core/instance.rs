//! Driver instances and their incarnations: what the DDM knows of each
//! driver, why an incarnation ended, and how one is killed.
//!
//! An [`Instance`] is one manifest running as one process at a time; each
//! process is an *incarnation* with its own link ([`Conn`]). What changes
//! over the instance's life is in [`Live`], behind `Instance::live`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use ddf::proto::{BusId, DeviceId, DriverState};

use super::error::{ProtocolError, SpawnError};
use crate::conn::Conn;
use crate::dma::Region;
use crate::ids::{Ino, InstanceId};
use crate::manifest::Manifest;
use crate::sync::{Condvar, Mutex, Rank};

/// What changes over a driver instance's life.
#[derive(Debug)]
pub struct Live {
    /// State.
    pub state: DriverState,
    /// Process id while running (`None` for a link without a process: the
    /// core's unit tests).
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
    /// Recent deaths and quarantines, for the restart policy.
    pub health: Health,
    /// The system call the current incarnation's filter refused, as its
    /// runtime reported it (`socket (41)`), until its death is reaped.
    pub violation: Option<String>,
    /// Why the current incarnation cannot start, as its runtime said
    /// before it exited ([`ddf::proto::DriverToDdm::StartFailed`]).
    pub start_failure: Option<String>,
    /// Deaths by the system call filter (`SIGSYS`), over the instance's life.
    pub violations: u32,
    /// Registrations refused (bad names, oversized metadata) by this
    /// incarnation: the first few are logged, then one in a thousand.
    pub refused: u64,
    /// When the last incarnation died (restart latency is measured from it).
    pub died_at: Option<Instant>,
    /// The heartbeat ping in flight: sequence number and when it was sent.
    pub ping: Option<(u64, Instant)>,
    /// When the last ping was sent.
    pub last_ping: Option<Instant>,
    /// When the current incarnation was started.
    pub started_at: Option<Instant>,
}

/// A driver's recent health, as the restart policy keeps it: deaths that
/// count, and quarantines (see `crate::supervise::decide`).
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Recent deaths that count, for the crash-loop window.
    pub failures: Vec<Instant>,
    /// Quarantines in a row; each one doubles the cool-down.
    pub quarantines: u32,
    /// When it was last tried again after a cool-down: a death within one
    /// window of that sends it straight back into quarantine.
    pub tried_at: Option<Instant>,
    /// While quarantined: when it is tried again by itself (`None`: only
    /// `ddmctl restart` brings it back).
    pub retry_at: Option<Instant>,
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
    /// Its place in `Core::instances`.
    pub id: InstanceId,
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
    /// The DMA memory ddm holds for it (its manifest's `[dma]`): kept
    /// across incarnations, freed when the instance stops.
    pub dma: Mutex<Option<Region>>,
}

impl Instance {
    /// An instance of `manifest`, not started.
    pub fn new(id: InstanceId, manifest: Manifest, driver_dir: &std::path::Path, attach: Ino) -> Instance {
        Instance {
            id,
            exec: manifest.exec_path(driver_dir),
            manifest,
            attach,
            live: Mutex::new(
                Rank::Live,
                Live {
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
                    health: Health::default(),
                    violation: None,
                    start_failure: None,
                    violations: 0,
                    refused: 0,
                    died_at: None,
                    ping: None,
                    last_ping: None,
                    started_at: None,
                },
            ),
            changed: Condvar::new(),
            store: Mutex::new(Rank::Leaf, BTreeMap::new()),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            counters: Mutex::new(Rank::Leaf, BTreeMap::new()),
            dma: Mutex::new(Rank::Leaf, None),
        }
    }

    /// Frees the DMA memory ddm holds for the instance, if any (it stopped
    /// for good: unloaded, or ddm is shutting down).
    pub fn free_dma(&self) {
        let freed = self.dma.lock().take();
        if let Some(region) = freed {
            log::info!("driver {}: its DMA memory ({}) is freed", self.name(), region.describe());
        }
    }

    /// The current link, if the driver runs.
    pub fn conn(&self) -> Option<Arc<Conn>> {
        self.live.lock().conn.clone()
    }

    /// The state now.
    pub fn state(&self) -> DriverState {
        self.live.lock().state
    }

    /// Name for log lines.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Sends `sig` to the instance's process, if it runs.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.live.lock().pid {
            // SAFETY: kill(2) on a pid we started and have not reaped: the
            // reaper clears `pid` (under this lock) before the zombie is gone.
            unsafe { libc::kill(pid as libc::pid_t, sig) };
        }
    }

    /// Kills the instance's process for `cause` (the reaper then applies the
    /// restart policy). The first reason given for an incarnation is the one
    /// logged.
    pub fn kill(&self, cause: Cause) {
        let pid = {
            let mut live = self.live.lock();
            if live.kill_reason.is_none() {
                live.kill_reason = Some(cause);
            }
            live.pid
        };
        if let Some(pid) = pid {
            // SAFETY: as in `signal`: our own, not yet reaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }

    /// Waits until the instance is past starting, at most `timeout`.
    pub fn wait_ready(&self, timeout: std::time::Duration) -> DriverState {
        let deadline = Instant::now() + timeout;
        let mut live = self.live.lock();
        while matches!(live.state, DriverState::Starting | DriverState::Restarting) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            live = self.changed.wait_timeout(live, left);
        }
        live.state
    }
}

/// Why a driver incarnation ended.
#[derive(Debug, Clone)]
pub enum Cause {
    /// It exited by itself with this status.
    Exit(i32),
    /// It was killed by a signal it did not get from us (crash).
    Signal {
        /// The signal.
        sig: i32,
        /// Whether it dumped core.
        core: bool,
    },
    /// Its system call filter killed it (`SIGSYS`).
    Sandbox {
        /// The call refused, as its runtime reported it (`socket (41)`);
        /// `None` when nothing was reported.
        call: Option<String>,
        /// Whether it dumped core.
        core: bool,
    },
    /// It said it cannot start (bad parameters, a device it cannot open),
    /// then exited with this status.
    StartFailed {
        /// Its words.
        why: String,
        /// Its exit status.
        code: i32,
    },
    /// It broke the protocol; we killed it.
    Protocol(ProtocolError),
    /// It stopped answering heartbeats; we killed it.
    Heartbeat,
    /// A call that may not block went unanswered; we killed it.
    Deadline(String),
    /// It never became ready; we killed it.
    StartTimeout,
    /// It could not be started at all.
    Spawn(SpawnError),
    /// An administrator or ddm itself asked.
    Requested(Request),
}

/// What was asked of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop for good (ddm shutting down, an unload).
    Stop,
    /// Restart now, with a fresh failure count (`ddmctl restart`).
    Restart,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Exit(code) => write!(f, "exited with status {code}"),
            Cause::Signal { sig, core } => {
                let name = nix::sys::signal::Signal::try_from(*sig).map(|s| s.as_str()).unwrap_or("unknown");
                write!(f, "killed by signal {sig} ({name}{})", if *core { ", core dumped" } else { "" })
            }
            Cause::Sandbox { call, core } => {
                let dumped = if *core { ", core dumped" } else { "" };
                match call {
                    Some(c) => write!(
                        f,
                        "sandbox violation: system call {c} refused (killed by signal {} (SIGSYS{dumped}))",
                        libc::SIGSYS
                    ),
                    None => write!(
                        f,
                        "sandbox violation: killed by signal {} (SIGSYS{dumped}), the call unreported",
                        libc::SIGSYS
                    ),
                }
            }
            Cause::StartFailed { why, code } => write!(f, "refused to start: {why} (exited with status {code})"),
            Cause::Protocol(why) => write!(f, "protocol violation ({why})"),
            Cause::Heartbeat => write!(f, "missed heartbeat (hung)"),
            Cause::Deadline(what) => write!(f, "missed a deadline: {what} (hung)"),
            Cause::StartTimeout => write!(f, "never became ready (hung at start)"),
            Cause::Spawn(why) => write!(f, "could not start: {}", ddf::error_chain(why)),
            Cause::Requested(Request::Stop) => write!(f, "stopped on request"),
            Cause::Requested(Request::Restart) => write!(f, "restarted on request"),
        }
    }
}

impl Cause {
    /// Whether the process ended this way by itself (not by our hand).
    pub fn is_own_doing(&self) -> bool {
        match self {
            Cause::Exit(_) | Cause::Signal { .. } | Cause::Sandbox { .. } | Cause::StartFailed { .. } => true,
            Cause::Protocol(_)
            | Cause::Heartbeat
            | Cause::Deadline(_)
            | Cause::StartTimeout
            | Cause::Spawn(_)
            | Cause::Requested(_) => false,
        }
    }
}
