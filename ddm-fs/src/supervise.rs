//! Supervision: starting driver processes, noticing their death or their
//! hang, restarting them with backoff, and quarantining crash loops. The
//! paper's future work ("recognise when a registered driver terminates
//! unexpectedly ... revive it, logging the problem"), Minix's reincarnation
//! server, inside the DDM.
//!
//! - **Death** is noticed at once: a reaper thread per process blocks in
//!   `waitpid`, and the reader thread sees the socket close. Whatever the
//!   cause (panic, abort, a signal, an exit nobody asked for), every request
//!   in flight ends with `EIO` at once.
//! - **Hangs**: the [`watchdog`] pings each running driver every
//!   `heartbeat_ms`; no pong within `heartbeat_timeout_ms` means hung. A call
//!   that may not block (open, close, ioctl, poll unless the manifest lists
//!   it in `blocking_calls`) unanswered after `request_timeout_ms` means
//!   hung. A driver that never says it is ready within the start timeout is
//!   hung. A hung driver is killed with `SIGKILL` and treated as crashed.
//! - **Protocol violations** (a frame that does not decode, is too large, a
//!   reply to an unknown request, a flood) are treated as crashes too.
//! - **Restart policy**: the first restart is immediate, the next waits
//!   `backoff_ms`, each later one twice as long (at most `backoff_max_ms`).
//!   `max_failures` deaths within `window_secs` put the driver in `failed`
//!   (quarantine): its files answer `ENXIO`/`EIO` until `ddmctl restart`.
//!   Defaults in [`crate::manifest::Supervision`].
//! - Every death and restart is logged with the driver, its device paths,
//!   the cause, and the requests that were in flight.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ddf::driver::SOCKET_FD_ENV;
use ddf::ipc::Channel;
use ddf::proto::{DdmToDriver, DriverState, Fault};
use log::{debug, error, info, warn};

use crate::conn::{lock, Conn};
use crate::core::{spawn_named, Core, Instance};

/// Why a driver incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// It broke the protocol; we killed it.
    Protocol(String),
    /// It stopped answering heartbeats; we killed it.
    Heartbeat,
    /// A call that may not block went unanswered; we killed it.
    Deadline(String),
    /// It never became ready; we killed it.
    StartTimeout,
    /// It could not be started at all.
    Spawn(String),
    /// An administrator or ddm itself asked.
    Requested(Request),
}

/// What was asked of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop for good (ddm shutting down).
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
            Cause::Protocol(why) => write!(f, "protocol violation ({why})"),
            Cause::Heartbeat => write!(f, "missed heartbeat (hung)"),
            Cause::Deadline(what) => write!(f, "missed a deadline: {what} (hung)"),
            Cause::StartTimeout => write!(f, "never became ready (hung at start)"),
            Cause::Spawn(why) => write!(f, "could not start: {why}"),
            Cause::Requested(Request::Stop) => write!(f, "stopped on request"),
            Cause::Requested(Request::Restart) => write!(f, "restarted on request"),
        }
    }
}

/// What to do after a death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Start a new incarnation after this delay.
    Restart(Duration),
    /// Too many deaths: stay down until `ddmctl restart`.
    Quarantine,
    /// Stay down: it was asked to stop.
    StayDown,
}

/// Whether a death counts against the driver (crash loop accounting), and
/// whether it is restarted at all. Every cause is decided here, with no
/// catch-all: a new cause does not compile until someone decides.
fn counts_as_failure(cause: &Cause) -> Option<bool> {
    match cause {
        Cause::Exit(_)
        | Cause::Signal { .. }
        | Cause::Protocol(_)
        | Cause::Heartbeat
        | Cause::Deadline(_)
        | Cause::StartTimeout
        | Cause::Spawn(_) => Some(true),
        Cause::Requested(Request::Restart) => Some(false),
        Cause::Requested(Request::Stop) => None,
    }
}

/// Applies the restart policy to a death at `now`.
fn decide(inst: &Instance, failures: &mut Vec<Instant>, cause: &Cause, now: Instant) -> Decision {
    let policy = &inst.manifest.supervision;
    match counts_as_failure(cause) {
        None => Decision::StayDown,
        Some(false) => {
            failures.clear();
            Decision::Restart(Duration::ZERO)
        }
        Some(true) => {
            let window = Duration::from_secs(policy.window_secs);
            failures.retain(|t| now.duration_since(*t) < window);
            failures.push(now);
            let n = failures.len() as u32;
            if n >= policy.max_failures.max(1) {
                return Decision::Quarantine;
            }
            if n <= 1 {
                return Decision::Restart(Duration::ZERO);
            }
            let ms = policy.backoff_ms.saturating_mul(1u64 << (n - 2).min(20)).min(policy.backoff_max_ms);
            Decision::Restart(Duration::from_millis(ms))
        }
    }
}

/// Sends `sig` to an instance's process, if it runs.
pub fn signal(inst: &Instance, sig: i32) {
    if let Some(pid) = lock(&inst.live).pid {
        // SAFETY: kill(2) on a pid we started and have not reaped: the
        // reaper clears `pid` (under this lock) before the zombie is gone.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

/// Kills an instance's process for `cause` (the reaper restarts it per the
/// policy). The first reason given for an incarnation is the one logged.
pub fn kill(inst: &Instance, cause: Cause) {
    let pid = {
        let mut live = lock(&inst.live);
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

/// A spawn request for the spawner thread.
type SpawnJob = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// Starts `cmd` from one long-lived thread. `PR_SET_PDEATHSIG` fires when
/// the *thread* that forked the child exits, not the process: a driver
/// forked from a short-lived restart thread would be killed as soon as that
/// thread ends. So every driver is forked by this thread, which lives as
/// long as ddm.
fn spawn_child(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnJob>>> =
        std::sync::OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        spawn_named("spawner", move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        std::sync::Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    lock(tx).send((cmd, reply_tx)).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    reply_rx.recv().map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

impl Core {
    /// Starts a new incarnation of `inst`: its process and its threads.
    pub fn start(self: &Arc<Core>, inst: &Arc<Instance>) -> Result<(), String> {
        let (ours, theirs) = Channel::pair().map_err(|e| format!("socketpair: {e}"))?;
        let theirs: OwnedFd = theirs.into();
        let child_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&inst.exec);
        cmd.env(SOCKET_FD_ENV, "3").env("DDF_INSTANCE", inst.name()).stdin(Stdio::null());
        let sandbox = crate::sandbox::prepare(&inst.manifest.sandbox, &inst.exec, inst.name())
            .map_err(|e| format!("sandbox: {e}"))?;
        // SAFETY: the closure runs in the forked child before exec and calls
        // only async-signal-safe functions (fcntl, dup2, prctl, and the
        // system calls of the sandbox, prepared before the fork).
        unsafe {
            cmd.pre_exec(move || {
                if child_fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(child_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Its own user first: a change of credentials clears the
                // parent-death signal set below.
                if let Some(e) = sandbox.apply_ids().err() {
                    return Err(e);
                }
                // A driver never outlives its DDM, and never gains privileges.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0
                    || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Landlock needs no_new_privs, set just above.
                sandbox.apply_landlock()
            });
        }
        let policy = &inst.manifest.supervision;
        let conn =
            Arc::new(Conn::new(ours, policy.blocking_calls.clone(), Duration::from_millis(policy.request_timeout_ms)));
        // Spawn and record the pid under the lock, so that the reaper of
        // this incarnation cannot run before the pid is known.
        let child = {
            let mut live = lock(&inst.live);
            let child = spawn_child(cmd).map_err(|e| format!("cannot start {}: {e}", inst.exec.display()))?;
            live.state = DriverState::Starting;
            live.pid = Some(child.id());
            live.conn = Some(conn.clone());
            live.kill_reason = None;
            live.ping = None;
            live.last_ping = Some(Instant::now());
            live.started_at = Some(Instant::now());
            live.devices.clear();
            live.buses.clear();
            live.seen.clear();
            child
        };
        drop(theirs);
        inst.changed.notify_all();
        info!("driver {}: started pid {} ({})", inst.name(), child.id(), inst.exec.display());

        let core = self.clone();
        let i = inst.clone();
        let c = conn.clone();
        spawn_named(&format!("rd-{}", inst.name()), move || core.reader(&i, &c));
        let c = conn.clone();
        spawn_named(&format!("wr-{}", inst.name()), move || c.writer_loop());
        let core = self.clone();
        let i = inst.clone();
        spawn_named(&format!("wait-{}", inst.name()), move || core.reap(&i, child, &conn));
        Ok(())
    }

    /// Waits until `inst` is past starting, at most `timeout`.
    pub fn wait_ready(&self, inst: &Instance, timeout: Duration) -> DriverState {
        let deadline = Instant::now() + timeout;
        let mut live = lock(&inst.live);
        while matches!(live.state, DriverState::Starting | DriverState::Restarting) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            live = inst.changed.wait_timeout(live, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        live.state
    }

    /// Waits for an incarnation's process to end, then decides what next.
    fn reap(self: &Arc<Core>, inst: &Arc<Instance>, mut child: Child, conn: &Arc<Conn>) {
        let status = child.wait();
        let in_flight = conn.kill();
        let exit_cause = match &status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                match (s.code(), s.signal()) {
                    (Some(code), _) => Cause::Exit(code),
                    (None, Some(sig)) => Cause::Signal { sig, core: s.core_dumped() },
                    (None, None) => Cause::Exit(-1),
                }
            }
            Err(e) => Cause::Spawn(format!("wait failed: {e}")),
        };
        let mut live = lock(&inst.live);
        live.pid = None;
        if live.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            live.conn = None;
        }
        // Our reason, if we killed it; else what the process did.
        let cause = live.kill_reason.take().unwrap_or(exit_cause.clone());
        let stopping = self.stopping.load(Ordering::Acquire);
        let cause = if stopping { Cause::Requested(Request::Stop) } else { cause };
        let how = match &cause {
            Cause::Requested(_) => cause.to_string(),
            c if *c == exit_cause => c.to_string(),
            c => format!("{c}; {exit_cause}"),
        };
        live.last_exit = Some(how.clone());
        live.died_at = Some(Instant::now());
        live.ping = None;
        let mut failures = std::mem::take(&mut live.failures);
        let decision = decide(inst, &mut failures, &cause, Instant::now());
        live.failures = failures;
        live.state = match decision {
            Decision::Restart(_) => DriverState::Restarting,
            Decision::Quarantine => DriverState::Failed,
            Decision::StayDown => DriverState::Stopped,
        };
        drop(live);
        inst.changed.notify_all();
        self.orphan_files(inst, decision == Decision::Quarantine);

        let paths = self.device_paths(inst).join(" ");
        let flight = if in_flight.is_empty() {
            "nothing in flight".to_owned()
        } else {
            format!("{} in flight failed with EIO: {}", in_flight.len(), in_flight.join(", "))
        };
        match decision {
            Decision::StayDown => info!("driver {} ({paths}): {how}", inst.name()),
            Decision::Restart(delay) => {
                error!(
                    "driver {} ({paths}) died: {how}; {flight}; restarting in {} ms",
                    inst.name(),
                    delay.as_millis()
                );
                let core = self.clone();
                let inst = inst.clone();
                spawn_named(&format!("restart-{}", inst.name()), move || {
                    std::thread::sleep(delay);
                    core.restart_now(&inst);
                });
            }
            Decision::Quarantine => {
                error!(
                    "driver {} ({paths}) died: {how}; {flight}; {} deaths within {} s: quarantined (state failed) until `ddmctl restart {}`",
                    inst.name(),
                    inst.manifest.supervision.max_failures,
                    inst.manifest.supervision.window_secs,
                    inst.name()
                );
                // Devices the plugin manager had handed it go back to their
                // bus drivers, with the reason.
                crate::plug::release_all(self, inst.index, &format!("driver {} failed ({how})", inst.name()));
            }
        }
    }

    /// Starts the next incarnation of a driver waiting to restart.
    fn restart_now(self: &Arc<Core>, inst: &Arc<Instance>) {
        {
            let mut live = lock(&inst.live);
            if self.stopping.load(Ordering::Acquire) || live.state != DriverState::Restarting {
                return;
            }
            live.restarts += 1;
        }
        if let Err(why) = self.start(inst) {
            // Counts as a death: the policy decides whether to try again.
            error!("driver {}: {why}", inst.name());
            let mut live = lock(&inst.live);
            let mut failures = std::mem::take(&mut live.failures);
            let decision = decide(inst, &mut failures, &Cause::Spawn(why.clone()), Instant::now());
            live.failures = failures;
            live.last_exit = Some(Cause::Spawn(why).to_string());
            match decision {
                Decision::Restart(delay) => {
                    live.state = DriverState::Restarting;
                    drop(live);
                    let core = self.clone();
                    let inst = inst.clone();
                    spawn_named(&format!("restart-{}", inst.name()), move || {
                        std::thread::sleep(delay.max(Duration::from_millis(100)));
                        core.restart_now(&inst);
                    });
                }
                Decision::Quarantine | Decision::StayDown => {
                    live.state = DriverState::Failed;
                    drop(live);
                    self.orphan_files(inst, true);
                    error!("driver {}: cannot be started; quarantined", inst.name());
                }
            }
            inst.changed.notify_all();
        }
    }

    /// `ddmctl restart NAME`: a fresh start, also out of quarantine.
    pub fn restart_request(self: &Arc<Core>, inst: &Arc<Instance>) -> Result<String, String> {
        let state = {
            let mut live = lock(&inst.live);
            live.failures.clear();
            live.state
        };
        match state {
            DriverState::Running | DriverState::Starting => {
                info!("driver {}: restart requested", inst.name());
                kill(inst, Cause::Requested(Request::Restart));
                Ok(format!("{}: restarting", inst.name()))
            }
            DriverState::Failed | DriverState::Stopped | DriverState::Restarting => {
                lock(&inst.live).state = DriverState::Restarting;
                info!("driver {}: restart requested (was {})", inst.name(), state.as_str());
                self.restart_now(inst);
                // Devices it gave back when it failed may be its again.
                crate::plug::replug(self);
                Ok(format!("{}: started", inst.name()))
            }
        }
    }

    /// `ddmctl inject NAME FAULT`.
    pub fn inject(&self, inst: &Instance, fault: Fault) -> Result<String, String> {
        let conn = inst.conn().ok_or_else(|| format!("{} is not running", inst.name()))?;
        conn.send(&DdmToDriver::Inject(fault), &[]).map_err(|e| format!("{}: cannot send: {e}", inst.name()))?;
        warn!("driver {}: fault {fault:?} injected on request", inst.name());
        Ok(format!("{}: injected {fault:?}", inst.name()))
    }
}

/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(100);

/// Pings drivers, and kills the ones that are hung. Runs until ddm stops.
pub fn watchdog(core: Arc<Core>, start_timeout: Duration) {
    let mut seq = 0u64;
    loop {
        std::thread::sleep(TICK);
        if core.stopping.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        for inst in core.all() {
            let inst = &inst;
            let policy = &inst.manifest.supervision;
            let mut verdict = None;
            let mut ping = None;
            {
                let mut live = lock(&inst.live);
                match live.state {
                    DriverState::Running => {
                        if let Some((_, sent)) = live.ping {
                            if now.duration_since(sent) > Duration::from_millis(policy.heartbeat_timeout_ms) {
                                verdict = Some(Cause::Heartbeat);
                            }
                        } else if live
                            .last_ping
                            .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(policy.heartbeat_ms))
                        {
                            seq += 1;
                            live.ping = Some((seq, now));
                            live.last_ping = Some(now);
                            ping = live.conn.clone().map(|c| (c, seq));
                        }
                    }
                    DriverState::Starting => {
                        if live.started_at.is_some_and(|t| now.duration_since(t) > start_timeout) {
                            verdict = Some(Cause::StartTimeout);
                        }
                    }
                    DriverState::Restarting | DriverState::Failed | DriverState::Stopped => {}
                }
                if verdict.is_none() {
                    if let Some(conn) = &live.conn {
                        let pending = lock(&conn.pending);
                        if let Some((id, p)) = pending.iter().find(|(_, p)| p.deadline.is_some_and(|d| now > d)) {
                            verdict = Some(Cause::Deadline(format!(
                                "{} #{} unanswered after {} ms",
                                p.call,
                                id.0,
                                now.duration_since(p.since).as_millis()
                            )));
                        }
                    }
                }
            }
            if let Some((conn, seq)) = ping {
                if let Err(e) = conn.send(&DdmToDriver::Ping { seq }, &[]) {
                    debug!("driver {}: ping: {e}", inst.name());
                }
            }
            if let Some(cause) = verdict {
                error!("driver {}: {cause}; killing it", inst.name());
                kill(inst, cause);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::manifest::Manifest;

    fn inst() -> Instance {
        let m = Manifest::parse(
            "name = \"t\"\nexec = \"x\"\n[supervision]\nmax_failures = 4\nwindow_secs = 10\nbackoff_ms = 100\nbackoff_max_ms = 250\n",
            "t",
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("ddm-sup-test-{}", std::process::id()));
        let (store, _) = access_policy::PermStore::open(dir.join("p.json"));
        let mut m = m;
        m.autostart = true;
        let core = Core::new(vec![m], std::path::Path::new("/"), access_policy::Policy::empty(), store);
        let all = core.all();
        drop(core);
        Arc::try_unwrap(all.into_iter().next().unwrap()).unwrap()
    }

    #[test]
    fn restart_at_once_then_backoff_then_quarantine() {
        let inst = inst();
        let mut f = Vec::new();
        let t0 = Instant::now();
        let crash = Cause::Signal { sig: 9, core: false };
        assert_eq!(decide(&inst, &mut f, &crash, t0), Decision::Restart(Duration::ZERO));
        assert_eq!(decide(&inst, &mut f, &crash, t0), Decision::Restart(Duration::from_millis(100)));
        assert_eq!(decide(&inst, &mut f, &crash, t0), Decision::Restart(Duration::from_millis(200)));
        assert_eq!(decide(&inst, &mut f, &crash, t0), Decision::Quarantine);
    }

    #[test]
    fn old_failures_leave_the_window_and_backoff_is_capped() {
        let inst = inst();
        let mut f = Vec::new();
        let t0 = Instant::now();
        let c = Cause::Exit(1);
        decide(&inst, &mut f, &c, t0);
        decide(&inst, &mut f, &c, t0);
        // 11 s later the two old deaths no longer count.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(decide(&inst, &mut f, &c, later), Decision::Restart(Duration::ZERO));
        let mut f = vec![t0, t0];
        assert_eq!(decide(&inst, &mut f, &Cause::Heartbeat, t0), Decision::Restart(Duration::from_millis(200)));
        let inst2 = inst;
        let mut g = vec![t0; 2];
        // cap at 250
        assert!(matches!(decide(&inst2, &mut g, &c, t0), Decision::Restart(d) if d <= Duration::from_millis(250)));
    }

    #[test]
    fn requests_do_not_count_as_failures() {
        let inst = inst();
        let mut f = vec![Instant::now(); 3];
        assert_eq!(
            decide(&inst, &mut f, &Cause::Requested(Request::Restart), Instant::now()),
            Decision::Restart(Duration::ZERO)
        );
        assert!(f.is_empty());
        assert_eq!(decide(&inst, &mut f, &Cause::Requested(Request::Stop), Instant::now()), Decision::StayDown);
    }
}
