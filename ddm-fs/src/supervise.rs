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
//! - **Sandbox violations**: a driver whose system call filter refused a
//!   call dies of `SIGSYS`; its runtime reported the call first, and the
//!   death is logged and shown as a sandbox violation naming it. It counts
//!   like any crash.
//! - **Restart policy**: the first restart is immediate, the next waits
//!   `backoff_ms`, each later one twice as long (at most `backoff_max_ms`).
//!   `max_failures` deaths within `window_secs` put the driver in `failed`
//!   (quarantine): its files answer `ENXIO`/`EIO`.
//! - **Quarantine heals**: after `cooldown_ms` the driver is tried again by
//!   itself (as Minix's reincarnation server keeps trying). If it dies
//!   again within one window of that try, it goes straight back, for twice
//!   as long (at most `cooldown_max_ms`); once it has lived a window, it
//!   starts over. One client that can crash a driver thus denies it to
//!   others for a while, not for ever. `cooldown_ms = 0` keeps it down
//!   until `ddmctl restart`, which always tries at once and forgets the
//!   past. Defaults in [`crate::manifest::Supervision`].
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
use crate::core::{spawn_named, Cause, Core, Event, Health, Instance, Request};
use crate::manifest::Supervision;

/// What to do after a death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a new incarnation after this delay.
    Restart(Duration),
    /// Too many deaths: stay down for this cool-down, then try again
    /// (`None`: until `ddmctl restart`).
    Quarantine(Option<Duration>),
    /// Stay down: it was asked to stop.
    StayDown,
}

impl Decision {
    /// The state the instance goes to.
    pub fn state(self) -> DriverState {
        match self {
            Decision::Restart(_) => DriverState::Restarting,
            Decision::Quarantine(_) => DriverState::Failed,
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
        | Cause::Sandbox { .. }
        | Cause::StartFailed { .. }
        | Cause::Protocol(_)
        | Cause::Heartbeat
        | Cause::Deadline(_)
        | Cause::StartTimeout
        | Cause::Spawn(_) => Some(true),
        Cause::Requested(Request::Restart) => Some(false),
        Cause::Requested(Request::Stop) => None,
    }
}

/// Applies the restart policy to a death at `now`, updating the driver's
/// `health` (its recent deaths and quarantines).
pub fn decide(policy: &Supervision, health: &mut Health, cause: &Cause, now: Instant) -> Decision {
    match counts_as_failure(cause) {
        None => Decision::StayDown,
        Some(false) => {
            health.failures.clear();
            Decision::Restart(Duration::ZERO)
        }
        Some(true) => {
            let window = Duration::from_secs(policy.window_secs);
            health.failures.retain(|t| now.duration_since(*t) < window);
            health.failures.push(now);
            let n = health.failures.len() as u32;
            // Tried again after a cool-down and dead again within a window:
            // it keeps failing, straight back, for longer.
            let relapse = health.tried_at.is_some_and(|t| now.duration_since(t) < window);
            // Refusing to start is no crash that a restart may cure: the
            // same parameters refuse again. Quarantined at once (tried again
            // after the cool-down, or at `ddmctl restart`).
            let refused = matches!(cause, Cause::StartFailed { .. });
            if n >= policy.max_failures.max(1) || relapse || refused {
                health.quarantines = if relapse { health.quarantines.saturating_add(1) } else { 1 };
                health.failures.clear();
                let cooldown = cooldown(policy, health.quarantines);
                health.retry_at = cooldown.map(|d| now + d);
                return Decision::Quarantine(cooldown);
            }
            if n <= 1 {
                return Decision::Restart(Duration::ZERO);
            }
            let ms = policy.backoff_ms.saturating_mul(1u64 << (n - 2).min(20)).min(policy.backoff_max_ms);
            Decision::Restart(Duration::from_millis(ms))
        }
    }
}

/// The cool-down of the `nth` quarantine in a row: `cooldown_ms`, doubled
/// for each one before it, at most `cooldown_max_ms`; `None` when healing is
/// off (`cooldown_ms = 0`).
fn cooldown(policy: &Supervision, nth: u32) -> Option<Duration> {
    if policy.cooldown_ms == 0 {
        return None;
    }
    let doubled = policy.cooldown_ms.saturating_mul(1u64 << nth.saturating_sub(1).min(32));
    Some(Duration::from_millis(doubled.min(policy.cooldown_max_ms.max(policy.cooldown_ms))))
}

/// Waits for an incarnation's process to end, then decides what next; runs
/// on the process's reaper thread.
pub fn reap(core: &Arc<Core>, inst: &Arc<Instance>, mut child: Child, conn: &Arc<Conn>) {
    let status = child.wait();
    let exit = match &status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(0), _) => Cause::Exit(0),
                (Some(code), _) => {
                    // A driver that cannot start said why before it exited.
                    conn.wait_reader(REPORT_WAIT);
                    match inst.live.lock().start_failure.take() {
                        Some(why) => Cause::StartFailed { why, code },
                        None => Cause::Exit(code),
                    }
                }
                (None, Some(libc::SIGSYS)) => {
                    // Its runtime reported the refused call on the socket
                    // before it died: let the reader take in what is left.
                    conn.wait_reader(REPORT_WAIT);
                    let mut live = inst.live.lock();
                    live.violations = live.violations.saturating_add(1);
                    Cause::Sandbox { call: live.violation.take(), core: s.core_dumped() }
                }
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
    let (ended, decision) = core.end_incarnation(inst, conn, exit, |health, cause| {
        let d = decide(&policy, health, cause, Instant::now());
        (d.state(), d)
    });
    let paths = core.paths_for_log(inst);
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
        Decision::Quarantine(cooldown) => {
            error!("driver {} ({paths}) died: {how}; {flight}; {}", inst.name(), quarantined(inst, &policy, cooldown))
        }
    }
}

/// How long a driver's process may take, after it died of `SIGSYS`, to
/// have its report of the refused call read.
const REPORT_WAIT: Duration = Duration::from_secs(1);

/// What a quarantine means, for the log: why, and until when.
fn quarantined(inst: &Instance, policy: &Supervision, cooldown: Option<Duration>) -> String {
    let name = inst.name();
    let nth = inst.live.lock().health.quarantines;
    let why = if nth > 1 {
        format!("it failed again within {} s of its last try", policy.window_secs)
    } else {
        format!("{} deaths within {} s", policy.max_failures, policy.window_secs)
    };
    match cooldown {
        Some(d) => format!(
            "{why}: quarantined (state failed, quarantine {nth} in a row); tried again in {} s, or at once with `ddmctl restart {name}`",
            d.as_secs_f64()
        ),
        None => format!("{why}: quarantined (state failed) until `ddmctl restart {name}` (cooldown_ms is 0)"),
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
        let mut health = std::mem::take(&mut live.health);
        let decision = decide(&inst.manifest.supervision, &mut health, &cause, Instant::now());
        if decision == Decision::StayDown {
            health.retry_at = None;
        }
        live.health = health;
        live.last_exit = Some(cause.to_string());
        live.state = match decision {
            Decision::Restart(_) => DriverState::Restarting,
            Decision::Quarantine(_) | Decision::StayDown => DriverState::Failed,
        };
        decision
    };
    inst.changed.notify_all();
    match decision {
        Decision::Restart(delay) => restart_later(core, inst, delay.max(Duration::from_millis(100))),
        Decision::Quarantine(cooldown) => {
            let policy = &inst.manifest.supervision;
            error!("driver {}: cannot be started; {}", inst.name(), quarantined(inst, policy, cooldown));
            core.orphan_files(inst, true);
            core.emit(Event::Died { driver: inst.id, how: cause.to_string(), next: DriverState::Failed });
        }
        Decision::StayDown => {
            error!("driver {}: cannot be started; it stays down", inst.name());
            core.orphan_files(inst, true);
            core.emit(Event::Died { driver: inst.id, how: cause.to_string(), next: DriverState::Failed });
        }
    }
}

/// A quarantined driver's cool-down is over: it is tried again, and the
/// devices it gave back when it failed may be its again.
fn retry_quarantined(core: &Arc<Core>, inst: &Arc<Instance>) {
    let nth = {
        let mut live = inst.live.lock();
        if live.state != DriverState::Failed || live.health.retry_at.is_none() {
            return;
        }
        live.health.retry_at = None;
        live.health.tried_at = Some(Instant::now());
        live.state = DriverState::Restarting;
        live.health.quarantines
    };
    let window = inst.manifest.supervision.window_secs;
    warn!(
        "driver {}: cool-down over (quarantine {nth} in a row); trying it again (a death within {window} s quarantines it for twice as long)",
        inst.name()
    );
    restart_now(core, inst);
    core.emit(Event::Revived { driver: inst.id });
}

/// `ddmctl restart NAME`: a fresh start, also out of quarantine (at once,
/// whatever its cool-down; its past deaths and quarantines are forgotten).
pub fn restart_request(core: &Arc<Core>, inst: &Arc<Instance>) -> String {
    let state = {
        let mut live = inst.live.lock();
        live.health = Health::default();
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

/// One look of the watchdog at every driver, at `now`: pings, hangs, and
/// quarantines whose cool-down is over.
fn check(core: &Arc<Core>, now: Instant, seq: &mut u64) {
    let start_timeout = core.config.start_timeout;
    let conns: Vec<Arc<Conn>> = core.all().iter().filter_map(|i| i.conn()).collect();
    crate::fast::govern(conns.iter().filter_map(|c| c.fast.get().map(|f| (f, c.calls()))));
    for inst in core.all() {
        let policy = &inst.manifest.supervision;
        let mut verdict = None;
        let mut ping = None;
        let mut retry = false;
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
                DriverState::Failed => retry = live.health.retry_at.is_some_and(|t| now >= t),
                DriverState::Restarting | DriverState::Stopped => {}
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
        if retry {
            retry_quarantined(core, &inst);
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
            "name = \"t\"\nexec = \"x\"\n[supervision]\nmax_failures = {max_failures}\nwindow_secs = 10\nbackoff_ms = 100\nbackoff_max_ms = 250\ncooldown_ms = 1000\ncooldown_max_ms = 3000\n"
        );
        Manifest::parse(&text, "t").unwrap().supervision
    }

    fn deaths(n: usize, at: Instant) -> Health {
        Health { failures: vec![at; n], ..Health::default() }
    }

    const CRASH: Cause = Cause::Signal { sig: 9, core: false };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn restart_at_once_then_backoff_then_quarantine() {
        let p = policy(4);
        let mut h = Health::default();
        let t0 = Instant::now();
        assert_eq!(decide(&p, &mut h, &CRASH, t0), Decision::Restart(Duration::ZERO));
        assert_eq!(decide(&p, &mut h, &CRASH, t0), Decision::Restart(Duration::from_millis(100)));
        assert_eq!(decide(&p, &mut h, &CRASH, t0), Decision::Restart(Duration::from_millis(200)));
        assert_eq!(decide(&p, &mut h, &CRASH, t0), Decision::Quarantine(Some(secs(1))));
        assert_eq!((h.quarantines, h.retry_at), (1, Some(t0 + secs(1))));
    }

    #[test]
    fn a_driver_that_refuses_to_start_is_quarantined_at_once_and_tried_after_its_cool_down() {
        let p = policy(4);
        let mut h = Health::default();
        let t0 = Instant::now();
        let refused = Cause::StartFailed { why: "parameters of t: count = \"0\"".into(), code: 1 };
        assert_eq!(decide(&p, &mut h, &refused, t0), Decision::Quarantine(Some(secs(1))));
        assert_eq!(h.retry_at, Some(t0 + secs(1)));
        // A plain exit with the same status is a crash like any other.
        let mut h = Health::default();
        assert_eq!(decide(&p, &mut h, &Cause::Exit(1), t0), Decision::Restart(Duration::ZERO));
        assert_eq!(refused.to_string(), "refused to start: parameters of t: count = \"0\" (exited with status 1)");
    }

    #[test]
    fn old_failures_leave_the_window() {
        let p = policy(4);
        let mut h = Health::default();
        let t0 = Instant::now();
        let c = Cause::Exit(1);
        decide(&p, &mut h, &c, t0);
        decide(&p, &mut h, &c, t0);
        // 11 s later the two old deaths no longer count.
        let later = t0 + secs(11);
        assert_eq!(decide(&p, &mut h, &c, later), Decision::Restart(Duration::ZERO));
        let mut h = deaths(2, t0);
        assert_eq!(decide(&p, &mut h, &Cause::Heartbeat, t0), Decision::Restart(Duration::from_millis(200)));
    }

    #[test]
    fn backoff_is_capped() {
        // Deaths 2, 3, 4, 5 wait 100, 200, then 400 and 800 capped at 250.
        let p = policy(10);
        let t0 = Instant::now();
        let mut h = deaths(1, t0);
        let c = Cause::Exit(1);
        let waits: Vec<Decision> = (0..4).map(|_| decide(&p, &mut h, &c, t0)).collect();
        let ms = |m| Decision::Restart(Duration::from_millis(m));
        assert_eq!(waits, [ms(100), ms(200), ms(250), ms(250)]);
    }

    #[test]
    fn requests_do_not_count_as_failures() {
        let p = policy(4);
        let mut h = deaths(3, Instant::now());
        assert_eq!(
            decide(&p, &mut h, &Cause::Requested(Request::Restart), Instant::now()),
            Decision::Restart(Duration::ZERO)
        );
        assert!(h.failures.is_empty());
        assert_eq!(decide(&p, &mut h, &Cause::Requested(Request::Stop), Instant::now()), Decision::StayDown);
    }

    #[test]
    fn a_sandbox_violation_counts_like_a_crash() {
        let p = policy(2);
        let mut h = Health::default();
        let t0 = Instant::now();
        let v = Cause::Sandbox { call: Some("socket (41)".into()), core: false };
        assert_eq!(decide(&p, &mut h, &v, t0), Decision::Restart(Duration::ZERO));
        assert!(matches!(decide(&p, &mut h, &v, t0), Decision::Quarantine(_)));
        assert!(v.to_string().contains("system call socket (41) refused"), "{v}");
        assert!(v.is_own_doing());
    }

    #[test]
    fn a_relapse_after_the_cool_down_doubles_it_up_to_the_cap() {
        let p = policy(3);
        let t0 = Instant::now();
        let mut h = deaths(2, t0);
        assert_eq!(decide(&p, &mut h, &CRASH, t0), Decision::Quarantine(Some(secs(1))));
        // Tried again after its cool-down, it dies at once: one death is
        // enough, and the cool-down doubles, then hits the cap of 3 s.
        let mut now = t0;
        for want in [2, 3, 3] {
            now += secs(1);
            h.retry_at = None;
            h.tried_at = Some(now);
            assert_eq!(decide(&p, &mut h, &CRASH, now + secs(1)), Decision::Quarantine(Some(secs(want))));
        }
        assert_eq!(h.quarantines, 4);
        // Once it has lived a whole window after a try, it starts over:
        // a single death restarts it, a new crash loop starts at 1 s.
        let later = now + secs(30);
        h.tried_at = Some(now);
        assert_eq!(decide(&p, &mut h, &CRASH, later), Decision::Restart(Duration::ZERO));
        decide(&p, &mut h, &CRASH, later);
        assert_eq!(decide(&p, &mut h, &CRASH, later), Decision::Quarantine(Some(secs(1))));
        assert_eq!(h.quarantines, 1);
    }

    #[test]
    fn a_cool_down_of_zero_keeps_it_down() {
        let text = "name = \"t\"\nexec = \"x\"\n[supervision]\nmax_failures = 1\ncooldown_ms = 0\n";
        let p = Manifest::parse(text, "t").unwrap().supervision;
        let mut h = Health::default();
        assert_eq!(decide(&p, &mut h, &CRASH, Instant::now()), Decision::Quarantine(None));
        assert_eq!(h.retry_at, None);
    }
}
