//! A driver incarnation's life as the core sees it: it begins with a link,
//! its messages are read and acted on one at a time (registration, replies,
//! state, counters), and it ends when its process does.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ddf::ipc::{IpcError, RecvBuf, MAX_FDS};
use ddf::proto::{Answer, DdmToDriver, DriverState, DriverToDdm, StateEntry};
use log::{debug, error, info, warn};

use super::complete::DriverAnswer;
use super::{
    spawn_named, Cause, Core, Event, Instance, ProtocolError, Request, Stored, STATE_MAX_BYTES, STATE_MAX_KEYS,
};
use crate::conn::Conn;
use crate::ids::Ino;

/// Unsolicited messages (anything but replies) a driver may send in a burst,
/// and per second after it: beyond that it floods, and is killed.
const FLOOD_BURST: f64 = 50_000.0;
const FLOOD_RATE: u32 = 20_000;

/// How long the end of an incarnation waits for its reader to read what the
/// driver sent before it died (its socket may outlive it in a child).
const READER_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Most bytes of a counter's name.
const COUNTER_NAME_MAX: usize = 64;

/// How an incarnation ended, as [`Core::end_incarnation`] settled it.
#[derive(Debug)]
pub struct Ended {
    /// Why it ended: the DDM's reason if it killed it, else what the
    /// process did.
    pub cause: Cause,
    /// The same, as people read it (also `user.ddf.last_exit`).
    pub how: String,
    /// The requests in flight that failed with `EIO`.
    pub in_flight: Vec<String>,
}

impl Core {
    /// Makes `conn` the current incarnation of `inst` (process `pid`, if it
    /// has one) and starts its reader and writer threads.
    pub fn begin_incarnation(self: &Arc<Core>, inst: &Arc<Instance>, conn: Arc<Conn>, pid: Option<u32>) {
        {
            let mut live = inst.live.lock();
            live.state = DriverState::Starting;
            live.pid = pid;
            live.conn = Some(conn.clone());
            live.kill_reason = None;
            live.ping = None;
            live.last_ping = Some(Instant::now());
            live.started_at = Some(Instant::now());
            live.devices.clear();
            live.buses.clear();
            live.seen.clear();
            live.violation = None;
            live.start_failure = None;
            live.refused = 0;
        }
        inst.changed.notify_all();
        self.emit(Event::Started { driver: inst.id, pid });
        let core = self.clone();
        let i = inst.clone();
        let c = conn.clone();
        spawn_named(&format!("rd-{}", inst.name()), move || core.serve_link(&i, &c));
        spawn_named(&format!("wr-{}", inst.name()), move || conn.writer_loop());
    }

    /// Serves one incarnation's socket until it closes or breaks the
    /// protocol; runs on the link's reader thread.
    pub fn serve_link(self: &Arc<Core>, inst: &Arc<Instance>, conn: &Arc<Conn>) {
        let mut buf = RecvBuf::default();
        let mut bucket = FLOOD_BURST;
        let mut refilled = Instant::now();
        let outcome = (|| -> Result<(), ProtocolError> {
            conn.chan().handshake(&mut buf).map_err(|e| ProtocolError::Handshake(ddf::error_chain(&e)))?;
            self.send_start(inst, conn)?;
            if self.config.fast_path {
                self.give_ring(inst, conn);
            }
            loop {
                let frame = match conn.chan().recv(&mut buf) {
                    Ok(f) => f,
                    Err(IpcError::Closed) => return Ok(()),
                    Err(e) => return Err(ProtocolError::Frame(ddf::error_chain(&e))),
                };
                let msg: DriverToDdm = frame.decode().map_err(|e| ProtocolError::Message(ddf::error_chain(&e)))?;
                if floods(&msg) {
                    let now = Instant::now();
                    bucket =
                        (bucket + now.duration_since(refilled).as_secs_f64() * f64::from(FLOOD_RATE)).min(FLOOD_BURST);
                    refilled = now;
                    bucket -= 1.0;
                    if bucket < 0.0 {
                        return Err(ProtocolError::Flood { rate: FLOOD_RATE });
                    }
                }
                // A link that was ended (its process is being reaped, a new
                // incarnation may be starting) says nothing more: what it
                // still had in the socket must not touch the next one's books.
                if conn.is_dead() || (touches_books(&msg) && !is_current(inst, conn)) {
                    return Ok(());
                }
                let fds = frame.fds;
                self.on_message(inst, conn, msg, frame.payload, fds)?;
            }
        })();
        if let Err(why) = outcome {
            if !conn.is_dead() {
                error!("driver {}: protocol violation: {why}; killing it", inst.name());
                inst.kill(Cause::Protocol(why));
            }
        }
        conn.reader_done();
        conn.kill();
    }

    /// Sends the instance's DMA grant, if it holds DMA memory, then `Start`
    /// with its parameters and stored state.
    fn send_start(&self, inst: &Instance, conn: &Conn) -> Result<(), ProtocolError> {
        {
            let dma = inst.dma.lock();
            if let Some(region) = dma.as_ref() {
                let grant = DdmToDriver::Dma(region.grant());
                conn.chan()
                    .send(&grant, &[], &[region.memfd()])
                    .map_err(|e| ProtocolError::Start(ddf::error_chain(&e)))?;
            }
        }
        let store = inst.store.lock();
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
        conn.chan().send(&start, &[], &fds).map_err(|e| ProtocolError::Start(ddf::error_chain(&e)))
    }

    /// Makes the fast path's ring for this incarnation and hands it over.
    /// Without one, calls take the socket; a failure is logged, not fatal.
    fn give_ring(&self, inst: &Instance, conn: &Conn) {
        let fast = match crate::fast::LinkRing::new(self.config.max_spinners, self.config.fixed_spin) {
            Ok(f) => f,
            Err(e) => {
                warn!("driver {}: no fast path: {}", inst.name(), ddf::error_chain(&e));
                return;
            }
        };
        let msg = DdmToDriver::Ring(fast.ring.spec());
        if let Err(e) = conn.chan().send(&msg, &[], &[fast.ring.fd(), fast.bell.as_fd()]) {
            warn!("driver {}: no fast path: {}", inst.name(), ddf::error_chain(&e));
            return;
        }
        let _ = conn.fast.set(fast);
    }

    /// Acts on one message of a driver.
    pub(super) fn on_message(
        self: &Arc<Core>,
        inst: &Arc<Instance>,
        conn: &Arc<Conn>,
        msg: DriverToDdm,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), ProtocolError> {
        let takes_fds = match &msg {
            DriverToDdm::SaveState { .. } => true,
            DriverToDdm::Reply { result, .. } => fds.len() == 1 && matches!(result, Ok(Answer::OpenedBacked { .. })),
            _ => false,
        };
        if !fds.is_empty() && !takes_fds {
            return Err(ProtocolError::StrayFds(fds.len()));
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
                let mut live = inst.live.lock();
                if live.ping.is_some_and(|(s, _)| s == seq) {
                    live.ping = None;
                }
                Ok(())
            }
            DriverToDdm::PollWake { handle } => {
                self.poll_wake(conn, handle);
                Ok(())
            }
            DriverToDdm::SaveState { key } => save_state(inst, key, payload, fds),
            DriverToDdm::DropState { key } => {
                inst.store.lock().remove(&key);
                Ok(())
            }
            DriverToDdm::Counters(list) => {
                let mut counters = inst.counters.lock();
                for (name, value) in list {
                    if counters.len() >= ddf::proto::COUNTERS_MAX && !counters.contains_key(&name) {
                        return Err(ProtocolError::Counters(ddf::proto::COUNTERS_MAX));
                    }
                    if name.len() > COUNTER_NAME_MAX {
                        return Err(ProtocolError::CounterName(COUNTER_NAME_MAX));
                    }
                    counters.insert(name, value);
                }
                Ok(())
            }
            DriverToDdm::SandboxViolation { syscall, arch } => {
                let call = crate::seccomp::describe(i64::from(syscall), arch);
                let mut live = inst.live.lock();
                // One report per incarnation: its process is dying.
                if live.violation.is_none() {
                    error!(
                        "driver {}: sandbox violation: its system call filter refused {call}; it dies of SIGSYS",
                        inst.name()
                    );
                    live.violation = Some(call);
                }
                Ok(())
            }
            DriverToDdm::StartFailed { why } => {
                let mut live = inst.live.lock();
                if live.state != DriverState::Starting {
                    return Err(ProtocolError::StartFailedLate);
                }
                let why: String = why.chars().filter(|c| !c.is_control()).collect();
                let mut end = why.len().min(ddf::proto::START_FAILED_MAX);
                while !why.is_char_boundary(end) {
                    end -= 1;
                }
                error!("driver {}: cannot start: {}", inst.name(), &why[..end]);
                live.start_failure.get_or_insert_with(|| why[..end].to_owned());
                Ok(())
            }
            DriverToDdm::Reply { id, result } => {
                let Some(p) = conn.pending.lock().remove(&id) else {
                    return Err(ProtocolError::UnknownRequest(id));
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

    /// The incarnation said it is ready: nodes it did not register again go,
    /// files waiting for it are re-opened, listeners are told.
    fn on_ready(self: &Arc<Core>, inst: &Arc<Instance>, conn: &Arc<Conn>) {
        let stale: Vec<Ino> = {
            let mut live = inst.live.lock();
            let seen = std::mem::take(&mut live.seen);
            // Nodes the plugin manager handed it are served again after it
            // is handed them again (Bind comes after Ready): not stale.
            let bindings = self.bindings.lock();
            let kept = |ino: &Ino| seen.contains(ino) || bindings.get(ino) == Some(&super::Binding::Bound(inst.id));
            let stale = live.names.values().filter(|ino| !kept(ino)).copied().collect();
            live.names.retain(|_, ino| kept(ino));
            drop(bindings);
            live.seen = seen;
            stale
        };
        // The nodes it did not register again go before anyone sees it ready.
        for ino in stale {
            self.remove_node(ino);
        }
        let (restarted_in, restarts) = {
            let mut live = inst.live.lock();
            live.state = DriverState::Running;
            (live.died_at.take().map(|t| t.elapsed()), live.restarts)
        };
        inst.changed.notify_all();
        let serving = self.paths_for_log(inst);
        match restarted_in {
            Some(d) => info!(
                "driver {}: restarted (restart {restarts}) in {} ms, serving {serving}",
                inst.name(),
                d.as_millis()
            ),
            None => info!("driver {}: ready, serving {serving}", inst.name()),
        }
        self.emit(Event::Ready { driver: inst.id, restarted: restarted_in.is_some() });
        self.reopen_waiting(inst, conn);
    }

    /// Ends incarnation `conn` of `inst` (its process is gone, or it never
    /// had one): every request in flight fails with `EIO`, the state goes
    /// to what `decide` says given the instance's recent failures and the
    /// cause, and the instance's open files wait for the next incarnation
    /// or are dead. Returns how it ended and what `decide` returned besides.
    pub fn end_incarnation<T>(
        self: &Arc<Core>,
        inst: &Arc<Instance>,
        conn: &Arc<Conn>,
        exit: Cause,
        decide: impl FnOnce(&mut super::Health, &Cause) -> (DriverState, T),
    ) -> (Ended, T) {
        // Its process is gone: its socket holds what it sent last, which
        // the reader completes before anything left in flight fails.
        if !conn.wait_reader(READER_GRACE) {
            debug!("driver {}: its reader did not finish in {} ms", inst.name(), READER_GRACE.as_millis());
        }
        let in_flight = conn.kill();
        let stopping = self.is_stopping();
        let (ended, next, extra) = {
            let mut live = inst.live.lock();
            live.pid = None;
            if live.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                live.conn = None;
            }
            // Our reason, if we killed it; else what the process did.
            let reason = if stopping { Some(Cause::Requested(Request::Stop)) } else { live.kill_reason.take() };
            let (cause, how) = match reason {
                None => (exit.clone(), exit.to_string()),
                Some(r @ Cause::Requested(_)) => {
                    let how = r.to_string();
                    (r, how)
                }
                Some(r) => {
                    let how = format!("{r}; {exit}");
                    (r, how)
                }
            };
            live.last_exit = Some(how.clone());
            live.died_at = Some(Instant::now());
            live.ping = None;
            let mut health = std::mem::take(&mut live.health);
            let (next, extra) = decide(&mut health, &cause);
            live.health = health;
            live.violation = None;
            live.start_failure = None;
            live.state = next;
            (Ended { cause, how, in_flight }, next, extra)
        };
        inst.changed.notify_all();
        if next == DriverState::Stopped {
            // Stopped for good: its DMA memory goes back (a quarantined or
            // restarting driver keeps it for its next incarnation).
            inst.free_dma();
        }
        self.orphan_files(inst, next == DriverState::Failed);
        self.emit(Event::Died { driver: inst.id, how: ended.how.clone(), next });
        (ended, extra)
    }
}

/// Whether a message counts against the flood limit: what a driver may send
/// unasked and without a bound of its own (devices and buses are bounded by
/// the device limit, replies by the requests in flight).
fn floods(msg: &DriverToDdm) -> bool {
    match msg {
        DriverToDdm::Reply { .. }
        | DriverToDdm::AddDevice(_)
        | DriverToDdm::RemoveDevice { .. }
        | DriverToDdm::AddBus { .. }
        | DriverToDdm::RemoveBus { .. } => false,
        DriverToDdm::Ready
        | DriverToDdm::Pong { .. }
        | DriverToDdm::PollWake { .. }
        | DriverToDdm::SaveState { .. }
        | DriverToDdm::DropState { .. }
        | DriverToDdm::Counters(_)
        | DriverToDdm::SandboxViolation { .. }
        | DriverToDdm::StartFailed { .. } => true,
    }
}

/// Whether a message changes the instance's books (its nodes, its state,
/// its readiness): only the current incarnation may.
fn touches_books(msg: &DriverToDdm) -> bool {
    match msg {
        DriverToDdm::AddDevice(_)
        | DriverToDdm::RemoveDevice { .. }
        | DriverToDdm::AddBus { .. }
        | DriverToDdm::RemoveBus { .. }
        | DriverToDdm::Ready
        | DriverToDdm::SaveState { .. }
        | DriverToDdm::DropState { .. }
        | DriverToDdm::Counters(_)
        | DriverToDdm::SandboxViolation { .. }
        | DriverToDdm::StartFailed { .. } => true,
        DriverToDdm::Reply { .. } | DriverToDdm::Pong { .. } | DriverToDdm::PollWake { .. } => false,
    }
}

/// Whether `conn` is `inst`'s current incarnation.
fn is_current(inst: &Instance, conn: &Arc<Conn>) -> bool {
    inst.live.lock().conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn))
}

/// Keeps state for the driver's next incarnation, within the store's limits.
fn save_state(inst: &Instance, key: String, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<(), ProtocolError> {
    let mut store = inst.store.lock();
    let others: usize = store.iter().filter(|(k, _)| **k != key).map(|(_, s)| s.bytes.len()).sum();
    if others + bytes.len() > STATE_MAX_BYTES {
        return Err(ProtocolError::StateBytes(STATE_MAX_BYTES));
    }
    if !store.contains_key(&key) && store.len() >= STATE_MAX_KEYS {
        return Err(ProtocolError::StateKeys(STATE_MAX_KEYS));
    }
    debug!("driver {}: state {key:?} saved ({} bytes, {} fds)", inst.name(), bytes.len(), fds.len());
    store.insert(key, Stored { bytes: bytes.to_vec(), fds });
    Ok(())
}
