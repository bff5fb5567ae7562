//! Supervision: noticing a driver's death or its hang, restarting it with
//! backoff, and quarantining crash loops. The paper's future work
//! ("recognise when a registered driver terminates unexpectedly ... revive
//! it, logging the problem"), Minix's reincarnation server, inside the DDM.
//!
//! - **Death** is noticed at once: a reaper thread per process blocks in
//!   `waitpid` ([`reap`]), and the reader thread sees the socket close.
//!   Whatever the cause (panic, abort, a signal, an exit nobody asked for),
//!   every request in flight ends with `EIO` at once.
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
//!
//! Supervision uses the core; the core tells the layers above it (the
//! plugin manager gives a quarantined driver's devices back to their buses)
//! through events, never by calling up.

use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ddf::proto::{DdmToDriver, DriverState, Fault};
use log::{debug, error, info, warn};

use crate::conn::Conn;
use crate::core::{spawn_named, Cause, Core, Event, Instance, Request};
use crate::manifest::Supervision;

/// What to do after a death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a new incarnation after this delay.
    Restart(Duration),
    /// Too many deaths: stay down until `ddmctl restart`.
    Quarantine,
    /// Stay down: it was asked to stop.
    StayDown,
}

impl Decision {
    /// The state the instance goes to.
    pub fn state(self) -> DriverState {
        match self {
            Decision::Restart(_) => DriverState::Restarting,
            Decision::Quarantine => DriverState::Failed,
            Decision::StayDown => DriverState::Stopped,
        }
    }
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
pub fn decide(policy: &Supervision, failures: &mut Vec<Instant>, cause: &Cause, now: Instant) -> Decision {
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

/// Waits for an incarnation's process to end, then decides what next; runs
/// on the process's reaper thread.
pub fn reap(core: &Arc<Core>, inst: &Arc<Instance>, mut child: Child, conn: &Arc<Conn>) {
    let status = child.wait();
    let exit = match &status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(code), _) => Cause::Exit(code),
                (None, Some(sig)) => Cause::Signal { sig, core: s.core_dumped() },
                (None, None) => Cause::Exit(-1),
            }
        }
        Err(e) => {
            warn!("driver {}: waiting for its process failed: {e}", inst.name());
            Cause::Exit(-1)
        }
    };
    let policy = inst.manifest.supervision.clone();
    let (ended, decision) = core.end_incarnation(inst, conn, exit, |failures, cause| {
        let d = decide(&policy, failures, cause, Instant::now());
        (d.state(), d)
    });
    let paths = core.device_paths(inst).join(" ");
    let how = ended.how;
    let flight = if ended.in_flight.is_empty() {
        "nothing in flight".to_owned()
    } else {
        format!("{} in flight failed with EIO: {}", ended.in_flight.len(), ended.in_flight.join(", "))
    };
    match decision {
        Decision::StayDown if !core.is_stopping() && has_bound_nodes(core, inst) => {
            // Stopped because it served nothing, but handed a device since
            // (a rescan while it was on its way out): it is needed again.
            info!("driver {} ({paths}): {how}; a device was bound to it meanwhile: starting it again", inst.name());
            inst.live.lock().state = DriverState::Restarting;
            restart_later(core, inst, Duration::ZERO);
        }
        Decision::StayDown => info!("driver {} ({paths}): {how}", inst.name()),
        Decision::Restart(delay) => {
            error!("driver {} ({paths}) died: {how}; {flight}; restarting in {} ms", inst.name(), delay.as_millis());
            restart_later(core, inst, delay);
        }
        Decision::Quarantine => error!(
            "driver {} ({paths}) died: {how}; {flight}; {} deaths within {} s: quarantined (state failed) until `ddmctl restart {}`",
            inst.name(),
            policy.max_failures,
            policy.window_secs,
            inst.name()
        ),
    }
}

/// Whether the plugin manager has handed `inst` a node.
fn has_bound_nodes(core: &Core, inst: &Instance) -> bool {
    core.bindings.lock().values().any(|b| *b == crate::core::Binding::Bound(inst.id))
}

/// Starts the next incarnation after `delay`, on a thread of its own.
fn restart_later(core: &Arc<Core>, inst: &Arc<Instance>, delay: Duration) {
    let core = core.clone();
    let inst = inst.clone();
    spawn_named(&format!("restart-{}", inst.name()), move || {
        std::thread::sleep(delay);
        restart_now(&core, &inst);
    });
}

/// Starts the next incarnation of a driver waiting to restart.
fn restart_now(core: &Arc<Core>, inst: &Arc<Instance>) {
    {
        let mut live = inst.live.lock();
        if core.is_stopping() || live.state != DriverState::Restarting {
            return;
        }
        live.restarts += 1;
    }
    let Err(why) = core.start(inst) else { return };
    // Counts as a death: the policy decides whether to try again.
    let cause = Cause::Spawn(why);
    error!("driver {}: {cause}", inst.name());
    let decision = {
        let mut live = inst.live.lock();
        let mut failures = std::mem::take(&mut live.failures);
        let decision = decide(&inst.manifest.supervision, &mut failures, &cause, Instant::now());
        live.failures = failures;
        live.last_exit = Some(cause.to_string());
        live.state = match decision {
            Decision::Restart(_) => DriverState::Restarting,
            Decision::Quarantine | Decision::StayDown => DriverState::Failed,
        };
        decision
    };
    inst.changed.notify_all();
    match decision {
        Decision::Restart(delay) => restart_later(core, inst, delay.max(Duration::from_millis(100))),
        Decision::Quarantine | Decision::StayDown => {
            error!("driver {}: cannot be started; quarantined", inst.name());
            core.orphan_files(inst, true);
            core.emit(Event::Died { driver: inst.id, how: cause.to_string(), next: DriverState::Failed });
        }
    }
}

/// `ddmctl restart NAME`: a fresh start, also out of quarantine.
pub fn restart_request(core: &Arc<Core>, inst: &Arc<Instance>) -> String {
    let state = {
        let mut live = inst.live.lock();
        live.failures.clear();
        live.state
    };
    match state {
        DriverState::Running | DriverState::Starting => {
            info!("driver {}: restart requested", inst.name());
            inst.kill(Cause::Requested(Request::Restart));
            format!("{}: restarting", inst.name())
        }
        DriverState::Failed | DriverState::Stopped | DriverState::Restarting => {
            inst.live.lock().state = DriverState::Restarting;
            info!("driver {}: restart requested (was {})", inst.name(), state.as_str());
            restart_now(core, inst);
            // Devices it gave back when it failed may be its again.
            core.emit(Event::Revived { driver: inst.id });
            format!("{}: started", inst.name())
        }
    }
}

/// `ddmctl inject NAME FAULT`.
pub fn inject(inst: &Instance, fault: Fault) -> Result<String, String> {
    let conn = inst.conn().ok_or_else(|| format!("{} is not running", inst.name()))?;
    conn.send(&DdmToDriver::Inject(fault), &[]).map_err(|e| format!("{}: cannot send: {e}", inst.name()))?;
    warn!("driver {}: fault {fault:?} injected on request", inst.name());
    Ok(format!("{}: injected {fault:?}", inst.name()))
}

/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(100);

/// Pings drivers, and kills the ones that are hung. Runs until ddm stops.
pub fn watchdog(core: Arc<Core>) {
    let mut seq = 0u64;
    loop {
        std::thread::sleep(TICK);
        if core.is_stopping() {
            return;
        }
        check(&core, Instant::now(), &mut seq);
    }
}

/// One look of the watchdog at every driver, at `now`.
fn check(core: &Core, now: Instant, seq: &mut u64) {
    let start_timeout = core.config.start_timeout;
    let conns: Vec<Arc<Conn>> = core.all().iter().filter_map(|i| i.conn()).collect();
    crate::fast::govern(conns.iter().filter_map(|c| c.fast.get().map(|f| (f, c.calls()))));
    for inst in core.all() {
        let policy = &inst.manifest.supervision;
        let mut verdict = None;
        let mut ping = None;
        {
            let mut live = inst.live.lock();
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
                        *seq += 1;
                        live.ping = Some((*seq, now));
                        live.last_ping = Some(now);
                        ping = live.conn.clone().map(|c| (c, *seq));
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
                    let pending = conn.pending.lock();
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
            inst.kill(cause);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::manifest::Manifest;

    fn policy(max_failures: u32) -> Supervision {
        let text = format!(
            "name = \"t\"\nexec = \"x\"\n[supervision]\nmax_failures = {max_failures}\nwindow_secs = 10\nbackoff_ms = 100\nbackoff_max_ms = 250\n"
        );
        Manifest::parse(&text, "t").unwrap().supervision
    }

    #[test]
    fn restart_at_once_then_backoff_then_quarantine() {
        let p = policy(4);
        let mut f = Vec::new();
        let t0 = Instant::now();
        let crash = Cause::Signal { sig: 9, core: false };
        assert_eq!(decide(&p, &mut f, &crash, t0), Decision::Restart(Duration::ZERO));
        assert_eq!(decide(&p, &mut f, &crash, t0), Decision::Restart(Duration::from_millis(100)));
        assert_eq!(decide(&p, &mut f, &crash, t0), Decision::Restart(Duration::from_millis(200)));
        assert_eq!(decide(&p, &mut f, &crash, t0), Decision::Quarantine);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let p = policy(4);
        let mut f = Vec::new();
        let t0 = Instant::now();
        let c = Cause::Exit(1);
        decide(&p, &mut f, &c, t0);
        decide(&p, &mut f, &c, t0);
        // 11 s later the two old deaths no longer count.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(decide(&p, &mut f, &c, later), Decision::Restart(Duration::ZERO));
        let mut f = vec![t0, t0];
        assert_eq!(decide(&p, &mut f, &Cause::Heartbeat, t0), Decision::Restart(Duration::from_millis(200)));
    }

    #[test]
    fn backoff_is_capped() {
        // Deaths 2, 3, 4, 5 wait 100, 200, then 400 and 800 capped at 250.
        let p = policy(10);
        let mut f = vec![Instant::now()];
        let t0 = Instant::now();
        let c = Cause::Exit(1);
        let waits: Vec<Decision> = (0..4).map(|_| decide(&p, &mut f, &c, t0)).collect();
        let ms = |m| Decision::Restart(Duration::from_millis(m));
        assert_eq!(waits, [ms(100), ms(200), ms(250), ms(250)]);
    }

    #[test]
    fn requests_do_not_count_as_failures() {
        let p = policy(4);
        let mut f = vec![Instant::now(); 3];
        assert_eq!(
            decide(&p, &mut f, &Cause::Requested(Request::Restart), Instant::now()),
            Decision::Restart(Duration::ZERO)
        );
        assert!(f.is_empty());
        assert_eq!(decide(&p, &mut f, &Cause::Requested(Request::Stop), Instant::now()), Decision::StayDown);
    }
}
