//! The runtime loop that serves a [`Driver`]: the handshake, the DMA grant
//! if there is one, `Start`, and
//! then one request at a time from the DDM's socket and ring, the driver's
//! watched descriptors, its waker and its direct clients.
//!
//! ## Spinning
//!
//! Calls may come by a shared-memory ring ([`crate::ring`]). After it has
//! served something, the runtime keeps looking at its rings for a bounded,
//! adaptive time (spinning, with a look at its descriptors now and then, so
//! the DDM's socket and a keyboard's evdev files are still served) before
//! it sleeps in `poll` on its socket, descriptors, waker and doorbells. It
//! spins only when the DDM allows it (few busy links), when it may run on
//! more than one CPU, and when the last caller ran on another CPU than it:
//! spinning on the caller's CPU would only keep the caller from running.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, warn};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::reply::{ReplyTo, SlotReply, BY_SOCKET, IN_SLOT};
use super::{Context, Driver, IoctlReply, ReadReply, SavedState, StartInfo, Waker, WriteReply, SOCKET_FD_ENV};
use crate::ipc::{Channel, Frame, IpcError, RecvBuf, PAYLOAD_MAX};
use crate::mem::DmaRegion;
use crate::proto::{
    Access, Answer, Call, DdmToDriver, DeviceId, DmaGrant, DriverToDdm, Errno, Fault, Handle, OpenFlags, RequestId,
    RingSpec, StateEntry,
};
use crate::ring::{current_cpu, spin_until, usable_cpus, Doorbell, Ring, SlotState, SpinBudget};

/// Boxed error of a driver's constructor.
type InitError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How a driver process ends.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The socket from the DDM is missing or not a number.
    #[error("no DDM socket: {SOCKET_FD_ENV} is {0:?} (drivers are started by ddm, not by hand)")]
    NoSocket(Option<String>),
    /// The link to the DDM failed.
    #[error("link to the DDM failed")]
    Ipc(#[from] IpcError),
    /// The DDM sent something other than what the protocol allows here.
    #[error("unexpected message from the DDM: {0}")]
    Protocol(String),
    /// The driver's constructor refused.
    #[error("driver {instance} failed to start")]
    Make {
        /// The instance.
        instance: String,
        /// Why.
        #[source]
        source: InitError,
    },
    /// The driver's `init` refused.
    #[error("driver {instance}: init failed with {errno}")]
    Init {
        /// The instance.
        instance: String,
        /// What it answered.
        errno: Errno,
    },
    /// Creating the wake-up eventfd or polling failed.
    #[error("runtime setup failed")]
    Setup(#[source] std::io::Error),
    /// The DMA memory the DDM granted could not be taken.
    #[error("the DMA memory granted by the DDM cannot be used")]
    Dma(#[source] crate::mem::MemError),
}

/// Serves a driver until the DDM says stop or goes away. `make` builds the
/// driver from its start parameters (see [`StartInfo::config`]). Returns the
/// process exit code: 0 after a requested shutdown or when the DDM closes the
/// link, 1 on errors (logged).
pub fn run<D, E, F>(make: F) -> ExitCode
where
    D: Driver,
    E: std::error::Error + Send + Sync + 'static,
    F: FnOnce(&StartInfo) -> Result<D, E>,
{
    match serve(make) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Ipc(IpcError::Closed)) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// A ring the runtime serves calls from, and its doorbell.
#[derive(Debug)]
struct Served {
    ring: Arc<Ring>,
    bell: Doorbell,
    /// Where the next look for a call starts (fairness between slots).
    next: usize,
}

impl Served {
    fn accept(spec: RingSpec, fds: Vec<OwnedFd>) -> Result<Served, String> {
        let [ring, bell]: [OwnedFd; 2] = fds.try_into().map_err(|_| "a ring needs its memfd and its doorbell")?;
        let ring = Ring::accept(ring, spec).map_err(|e| crate::error_chain(&e))?;
        Ok(Served { ring: Arc::new(ring), bell: Doorbell::from_fd(bell), next: 0 })
    }
}

/// When the runtime spins, and for how long.
#[derive(Debug)]
struct Spin {
    budget: SpinBudget,
    /// When something was last served.
    last_work: Instant,
    /// Whether the rings say "spinning" now.
    on: bool,
    cpus: usize,
}

/// The longest one look at the rings lasts before the descriptors are
/// looked at (with a `poll` that does not block).
const SPIN_SLICE: Duration = Duration::from_micros(20);

impl Spin {
    fn new() -> Spin {
        Spin {
            budget: SpinBudget::new(Duration::from_micros(50), Duration::from_micros(10), Duration::from_micros(300)),
            last_work: Instant::now(),
            on: false,
            cpus: usable_cpus(),
        }
    }

    /// Whether spinning may pay now: the DDM allows it, there is another
    /// CPU, and the last caller ran on another CPU than this thread.
    fn allowed(&self, rings: &[&Served]) -> bool {
        let cpu = current_cpu();
        self.cpus > 1 && rings.iter().any(|s| s.ring.spin_allowed() && s.ring.caller_cpu() != cpu)
    }

    fn set(&mut self, rings: &[&Served], on: bool) {
        if self.on != on {
            self.on = on;
            for s in rings {
                s.ring.set_driver_spinning(on);
            }
        }
        if on {
            let cpu = current_cpu();
            for s in rings {
                s.ring.set_driver_cpu(cpu);
            }
        }
    }

    /// Something was served: a spin that found it counts as a hit.
    fn worked(&mut self) {
        if self.on {
            self.budget.hit(self.last_work.elapsed());
        }
        self.last_work = Instant::now();
    }
}

fn serve<D, E, F>(make: F) -> Result<(), RunError>
where
    D: Driver,
    E: std::error::Error + Send + Sync + 'static,
    F: FnOnce(&StartInfo) -> Result<D, E>,
{
    let var = std::env::var(SOCKET_FD_ENV).ok();
    let raw: RawFd = var
        .as_deref()
        .and_then(|v| v.parse().ok())
        .filter(|fd| *fd >= 3)
        .ok_or_else(|| RunError::NoSocket(var.clone()))?;
    // Refuse a number that is not an open descriptor instead of owning garbage.
    // SAFETY: F_GETFD only reads the descriptor table entry for `raw`.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(RunError::NoSocket(var));
    }
    // SAFETY: the DDM passed us `raw` for our exclusive use, we checked it is
    // open, and nothing else in this process owns it.
    let chan = Arc::new(unsafe { Channel::from_raw_fd(raw) }?);
    // Do not leak the socket into programs the driver may start.
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
    super::sandbox::install(chan.as_fd().as_raw_fd());

    let mut buf = RecvBuf::default();
    chan.handshake(&mut buf)?;
    // A DMA grant, if the manifest asks for one, comes before Start.
    let mut dma = None;
    let (start, state) = loop {
        let frame = chan.recv(&mut buf)?;
        let msg = frame.decode::<DdmToDriver>()?;
        match msg {
            DdmToDriver::Start { instance, params, state } => {
                break (StartInfo { instance, params }, take_state(state, frame.fds)?);
            }
            DdmToDriver::Dma(grant) if dma.is_none() => dma = Some(take_dma(&grant, frame.fds)?),
            DdmToDriver::Dma(_) => return Err(RunError::Protocol("a second DMA grant before Start".into())),
            other => return Err(RunError::Protocol(format!("expected Start, got {other:?}"))),
        }
    };
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| RunError::Setup(e.into()))?;
    let mut driver = match make(&start) {
        Ok(d) => d,
        Err(e) => {
            let e = RunError::Make { instance: start.instance.clone(), source: Box::new(e) };
            return Err(start_failed(&chan, e));
        }
    };
    let mut ctx = Context {
        chan: chan.clone(),
        state,
        start,
        dma,
        watches: Vec::new(),
        poll_waiters: HashSet::new(),
        waker: Waker(Arc::new(efd)),
        next_device: 0,
        next_bus: 0,
        stop: false,
    };
    if let Err(errno) = driver.init(&mut ctx) {
        return Err(start_failed(&chan, RunError::Init { instance: ctx.start.instance.clone(), errno }));
    }
    chan.send(&DriverToDdm::Ready, &[], &[])?;

    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let mut clients: Vec<ClientLink> = Vec::new();
    let mut ddm_ring: Option<Served> = None;
    let mut spin = Spin::new();
    let mut scratch = Vec::new();
    loop {
        if ctx.stop {
            let rings: Vec<&Served> = ddm_ring.iter().chain(clients.iter().filter_map(|c| c.ring.as_ref())).collect();
            spin.set(&rings, false);
            driver.fini(&mut ctx);
            return Ok(());
        }
        // Calls waiting in the rings first.
        let mut did = false;
        if let Some(s) = &mut ddm_ring {
            did |= serve_ddm_ring(&mut driver, &mut ctx, s)? > 0;
        }
        for i in (0..clients.len()).rev() {
            match serve_client_ring(&mut driver, &mut ctx, &mut clients[i], &mut scratch) {
                Ok(n) => did |= n > 0,
                Err(why) => drop_client(&mut driver, &mut ctx, &mut clients, i, &why),
            }
        }
        if did {
            spin.worked();
        }
        let rings: Vec<&Served> = ddm_ring.iter().chain(clients.iter().filter_map(|c| c.ring.as_ref())).collect();
        // How long poll may wait: not at all after work or while spinning;
        // else until something comes, with the doorbells armed.
        let mut armed = false;
        let timeout = if did {
            0
        } else if !rings.is_empty() && spin.last_work.elapsed() < spin.budget.get() && spin.allowed(&rings) {
            spin.set(&rings, true);
            let left = spin.budget.get().saturating_sub(spin.last_work.elapsed()).min(SPIN_SLICE);
            if spin_until(left, || rings.iter().any(|s| s.ring.has_call()).then_some(())).0.is_some() {
                continue;
            }
            0
        } else {
            if spin.on {
                spin.budget.miss();
            }
            spin.set(&rings, false);
            for s in &rings {
                s.ring.arm_doorbell();
            }
            armed = true;
            if rings.iter().any(|s| s.ring.has_call()) {
                for s in &rings {
                    s.ring.disarm_doorbell();
                }
                continue;
            }
            -1
        };
        pollfds.clear();
        for fd in [chan.as_fd().as_raw_fd(), ctx.waker.0.as_fd().as_raw_fd()] {
            pollfds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        }
        for s in &rings {
            pollfds.push(libc::pollfd { fd: s.bell.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let first_client = pollfds.len();
        for c in &clients {
            pollfds.push(libc::pollfd { fd: c.chan.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let first_watch = pollfds.len();
        for (fd, _) in &ctx.watches {
            pollfds.push(libc::pollfd { fd: *fd, events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: `pollfds` is a live, correctly sized array of pollfd; poll
        // on a descriptor that was closed meanwhile only reports POLLNVAL.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, timeout) };
        if armed {
            for s in &rings {
                s.ring.disarm_doorbell();
            }
        }
        for (i, s) in rings.iter().enumerate() {
            if pollfds[2 + i].revents != 0 {
                s.bell.clear();
            }
        }
        drop(rings);
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RunError::Setup(e));
        }
        if n == 0 {
            continue;
        }
        let mut worked = false;
        if pollfds[1].revents != 0 {
            let _ = ctx.waker.0.read();
            driver.wake(&mut ctx);
            worked = true;
        }
        let ready: Vec<u64> = pollfds[first_watch..]
            .iter()
            .zip(ctx.watches.iter())
            .filter(|(p, _)| p.revents != 0)
            .map(|(_, (_, t))| *t)
            .collect();
        for token in ready {
            driver.ready(&mut ctx, token);
            worked = true;
        }
        // Direct clients, newest first so that removal keeps indices valid.
        for i in (0..clients.len()).rev() {
            if pollfds[first_client + i].revents == 0 {
                continue;
            }
            worked = true;
            if let Err(why) = serve_client(&mut driver, &mut ctx, &mut clients[i], &mut buf) {
                drop_client(&mut driver, &mut ctx, &mut clients, i, &why);
            }
        }
        if pollfds[0].revents != 0 {
            worked = true;
            let frame = chan.recv(&mut buf)?;
            let msg: DdmToDriver = frame.decode()?;
            let fds = frame.fds;
            dispatch(&mut driver, &mut ctx, msg, frame.payload, fds, &mut clients, &mut ddm_ring)?;
        }
        if worked {
            spin.worked();
        }
    }
}

/// Tells the DDM why the driver cannot start (it shows that as how the
/// driver ended, and does not restart it in a loop), and gives the error
/// back for the log.
fn start_failed(chan: &Channel, e: RunError) -> RunError {
    let mut why = crate::error_chain(&e);
    if why.len() > crate::proto::START_FAILED_MAX {
        let mut end = crate::proto::START_FAILED_MAX;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
    }
    if let Err(err) = chan.send(&DriverToDdm::StartFailed { why }, &[], &[]) {
        warn!("cannot tell the DDM why the start failed: {err}");
    }
    e
}

/// Ends direct client `i`'s link; its handles are closed.
fn drop_client<D: Driver>(driver: &mut D, ctx: &mut Context, clients: &mut Vec<ClientLink>, i: usize, why: &str) {
    debug!("direct client gone: {why}");
    let gone = clients.swap_remove(i);
    for h in gone.handles {
        ctx.poll_waiters.remove(&h);
        driver.close(ctx, h);
    }
}

/// Takes the call in `slot` of `s`: the reply object that answers it, and
/// the handle that gives the slot back once the call was made.
fn slot_reply(
    s: &Served,
    slot: usize,
    orphan: bool,
    id: RequestId,
    chan: &Arc<Channel>,
) -> (ReplyTo, Option<SlotReply>) {
    if orphan {
        return (ReplyTo::new(id, chan.clone()), None);
    }
    let cell = Arc::new(AtomicU8::new(IN_SLOT));
    let to = ReplyTo::in_slot(id, chan.clone(), SlotReply { ring: s.ring.clone(), slot, cell: cell.clone() });
    (to, Some(SlotReply { ring: s.ring.clone(), slot, cell }))
}

/// After a call from `slot`: an answer not given yet comes by the socket
/// (the caller is told); an orphaned slot is freed.
fn settle(s: &Served, slot: usize, orphan: bool, keep: Option<SlotReply>) {
    match keep {
        None if orphan => s.ring.set(slot, SlotState::Free),
        Some(k) if k.cell.compare_exchange(IN_SLOT, BY_SOCKET, Ordering::AcqRel, Ordering::Acquire).is_ok() => {
            k.give_back();
        }
        None | Some(_) => {}
    }
}

/// Serves every call waiting in the DDM's ring. The DDM is trusted: its
/// calls are read in place, without a copy.
fn serve_ddm_ring<D: Driver>(driver: &mut D, ctx: &mut Context, s: &mut Served) -> Result<usize, RunError> {
    let mut n = 0;
    while let Some((slot, orphan)) = s.ring.take_call(s.next) {
        s.next = (slot + 1) % s.ring.slots();
        n += 1;
        let ring = s.ring.clone();
        // SAFETY: the slot is ours (Busy or OrphanBusy) until `settle`: the
        // DDM does not write a slot it gave the driver.
        let Some(bytes) = (unsafe { ring.frame_in_place(slot) }) else {
            return Err(RunError::Protocol(format!("ring slot {slot}: a frame longer than the slot")));
        };
        let frame = Frame::parse(bytes, Vec::new())?;
        let DdmToDriver::Call { id, call } = frame.decode::<DdmToDriver>()? else {
            return Err(RunError::Protocol(format!("ring slot {slot}: not a call")));
        };
        let (to, keep) = slot_reply(s, slot, orphan, id, &ctx.chan);
        call_driver(driver, ctx, to, call, frame.payload);
        settle(s, slot, orphan, keep);
    }
    Ok(n)
}

/// Serves every call waiting in a direct client's ring. The client is not
/// trusted: each call is copied out before it is looked at, and anything
/// wrong ends the client's link.
fn serve_client_ring<D: Driver>(
    driver: &mut D,
    ctx: &mut Context,
    client: &mut ClientLink,
    scratch: &mut Vec<u8>,
) -> Result<usize, String> {
    let Some(s) = &mut client.ring else { return Ok(0) };
    let mut taken = Vec::new();
    while let Some((slot, orphan)) = s.ring.take_call(s.next) {
        s.next = (slot + 1) % s.ring.slots();
        s.ring.read_frame(slot, scratch).map_err(|e| e.to_string())?;
        let frame = Frame::parse(scratch, Vec::new()).map_err(|e| e.to_string())?;
        let DdmToDriver::Call { id, call } = frame.decode::<DdmToDriver>().map_err(|e| e.to_string())? else {
            return Err(format!("ring slot {slot}: not a call"));
        };
        let (to, keep) = slot_reply(s, slot, orphan, id, &client.chan);
        taken.push((slot, orphan, keep, to, call, frame.payload.to_vec()));
    }
    let n = taken.len();
    for (slot, orphan, keep, to, call, payload) in taken {
        client_call(driver, ctx, client, to, call, &payload);
        if let Some(s) = &client.ring {
            settle(s, slot, orphan, keep);
        }
    }
    Ok(n)
}

/// A direct client of the driver (see [`DdmToDriver::Attach`]).
#[derive(Debug)]
struct ClientLink {
    chan: Arc<Channel>,
    device: DeviceId,
    access: Access,
    /// Handles this client opened: the only ones it may use.
    handles: HashSet<Handle>,
    greeted: bool,
    ring: Option<Served>,
}

/// Serves one frame of a direct client. An error ends the client's link
/// (its handles are closed); it never ends the driver.
fn serve_client<D: Driver>(
    driver: &mut D,
    ctx: &mut Context,
    client: &mut ClientLink,
    buf: &mut RecvBuf,
) -> Result<(), String> {
    let frame = client.chan.recv(buf).map_err(|e| e.to_string())?;
    if !frame.fds.is_empty() {
        return Err("a direct client sent descriptors".into());
    }
    if !client.greeted {
        let hello: crate::proto::Hello = frame.decode().map_err(|e| e.to_string())?;
        if hello != crate::proto::Hello::ours() {
            return Err(format!("direct client speaks {hello:?}"));
        }
        client.greeted = true;
        return Ok(());
    }
    let DdmToDriver::Call { id, call } = frame.decode::<DdmToDriver>().map_err(|e| e.to_string())? else {
        return Err("a direct client sent something other than a call".into());
    };
    let to = ReplyTo::new(id, client.chan.clone());
    client_call(driver, ctx, client, to, call, frame.payload);
    Ok(())
}

/// A direct client's call, held to the device and access it was granted and
/// to the handles it opened.
fn client_call<D: Driver>(
    driver: &mut D,
    ctx: &mut Context,
    client: &mut ClientLink,
    mut to: ReplyTo,
    call: Call,
    payload: &[u8],
) {
    let (handle, needs_read, needs_write) = match &call {
        Call::Open { device, flags } => {
            if *device != client.device || !client.access.permits(flags.access()) {
                to.send(Err(Errno::EPERM), &[]);
                return;
            }
            match driver.open(ctx, *device, *flags) {
                Ok(h) => {
                    client.handles.insert(h);
                    to.send(Ok(Answer::Opened { handle: h }), &[]);
                }
                Err(e) => to.send(Err(e), &[]),
            }
            return;
        }
        Call::Close { handle } => (*handle, false, false),
        Call::Read { handle, .. } | Call::Scatter { handle, .. } => (*handle, true, false),
        Call::Write { handle, .. } | Call::Gather { handle, .. } => (*handle, false, true),
        Call::Ioctl { handle, .. } | Call::Poll { handle, .. } => (*handle, false, false),
    };
    if !client.handles.contains(&handle)
        || (needs_read && !client.access.reads())
        || (needs_write && !client.access.writes())
    {
        to.send(Err(Errno::EBADF), &[]);
        return;
    }
    let call = match call {
        // No one to wake: a direct client polls.
        Call::Poll { handle, events, .. } => Call::Poll { handle, events, notify: false },
        Call::Close { handle } => {
            client.handles.remove(&handle);
            Call::Close { handle }
        }
        other => other,
    };
    call_driver(driver, ctx, to, call, payload);
}

/// Pairs the saved state entries with the descriptors that came with them.
fn take_state(
    entries: Vec<StateEntry>,
    fds: Vec<OwnedFd>,
) -> Result<std::collections::HashMap<String, SavedState>, RunError> {
    let want: usize = entries.iter().map(|e| usize::from(e.fds)).sum();
    if want != fds.len() {
        return Err(RunError::Protocol(format!("state names {want} descriptors, {} came", fds.len())));
    }
    let mut fds = fds.into_iter();
    Ok(entries
        .into_iter()
        .map(|e| {
            let mine: Vec<OwnedFd> = fds.by_ref().take(usize::from(e.fds)).collect();
            (e.key, SavedState { bytes: e.bytes, fds: mine })
        })
        .collect())
}

/// Maps the DMA region of a grant: its one descriptor, checked against it.
fn take_dma(grant: &DmaGrant, fds: Vec<OwnedFd>) -> Result<DmaRegion, RunError> {
    let [fd]: [OwnedFd; 1] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
        RunError::Protocol(format!("a DMA grant with {} descriptors, not 1", fds.len()))
    })?;
    DmaRegion::accept(fd, grant).map_err(RunError::Dma)
}

/// A ring fault armed by [`Fault`] injection, applied to the next answer put
/// in a ring slot: 0 none, else the fault's number below.
static RING_FAULT: AtomicU8 = AtomicU8::new(0);
const RING_GARBAGE: u8 = 1;
const RING_STRAY: u8 = 2;
const RING_OVERLONG: u8 = 3;
const RING_DEATH: u8 = 4;

/// When the armed ring fault was armed.
static ARMED_AT: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// How long an armed ring fault waits for a ring answer before it takes the
/// next answer by the socket instead (a driver the fast path does not
/// reach, say one whose callers share its CPU, must still break as asked).
const RING_FAULT_PATIENCE: Duration = Duration::from_secs(2);

/// An armed ring fault for an answer that goes by the socket, once no ring
/// answer came for [`RING_FAULT_PATIENCE`]: the same fault in socket terms.
/// Returns whether it struck (the answer itself is then not sent).
pub(super) fn socket_fault(chan: &Channel) -> bool {
    if RING_FAULT.load(Ordering::Acquire) == 0 {
        return false;
    }
    let patient = ARMED_AT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_some_and(|t| t.elapsed() < RING_FAULT_PATIENCE);
    if patient {
        return false;
    }
    let fault = RING_FAULT.swap(0, Ordering::AcqRel);
    match fault {
        0 => return false,
        RING_GARBAGE => {
            warn!("ring fault, by the socket: garbage");
            let _ = chan.send_raw(&[0xff; 48], &[], false);
        }
        RING_STRAY => {
            warn!("ring fault, by the socket: a reply to a request never made");
            let stray = DriverToDdm::Reply { id: RequestId(u64::MAX - 1), result: Err(Errno::EIO) };
            let _ = chan.send(&stray, &[], &[]);
        }
        RING_OVERLONG => {
            warn!("ring fault, by the socket: a header longer than its frame");
            let _ = chan.send_raw(&u32::MAX.to_le_bytes(), &[], false);
        }
        _ => {
            warn!("ring fault, by the socket: dying in the middle of an answer");
            std::process::abort();
        }
    }
    true
}

/// Applies an armed ring fault to the answer just written in `slot` (before
/// it is published); returns the fault applied, to arm again should the
/// caller have stopped waiting (it would never see it).
pub(super) fn ring_fault(ring: &Ring, slot: usize) -> u8 {
    let fault = RING_FAULT.swap(0, Ordering::AcqRel);
    match fault {
        0 => {}
        RING_GARBAGE => {
            warn!("ring fault: garbage in slot {slot}");
            let junk = [0xffu8; 48];
            ring.write_frame(slot, &junk[..40], &junk[40..]);
        }
        RING_STRAY => {
            warn!("ring fault: a reply to a request never made in slot {slot}");
            let stray = DriverToDdm::Reply { id: RequestId(u64::MAX - 1), result: Err(Errno::EIO) };
            let mut h = Vec::new();
            if crate::ipc::encode_header(&stray, &mut h).is_ok() {
                ring.write_frame(slot, &h, &[]);
            }
        }
        RING_OVERLONG => {
            warn!("ring fault: a length beyond slot {slot}");
            ring.write_frame(slot, &[], &[]);
            ring.set_frame_len(slot, u32::MAX);
        }
        _ => {
            warn!("ring fault: dying in the middle of answering in slot {slot}");
            std::process::abort();
        }
    }
    fault
}

/// Arms `fault` again (see [`ring_fault`]).
pub(super) fn rearm_ring_fault(fault: u8) {
    if fault != 0 {
        RING_FAULT.store(fault, Ordering::Release);
    }
}

/// Does what [`DdmToDriver::Inject`] asks. Most of these do not return.
fn inject(chan: &Channel, fault: Fault) -> Result<(), RunError> {
    warn!("fault injected on request: {fault:?}");
    match fault {
        Fault::Panic => panic!("injected panic (ddmctl inject)"),
        Fault::Abort => std::process::abort(),
        Fault::Segv => {
            // The Rust runtime handles SIGSEGV (to report stack overflows)
            // and returns from a raised one; restore the default action so
            // that the signal ends the process like a real invalid access.
            // SAFETY: signal(2) with SIG_DFL and raise(2) have no memory
            // preconditions; ending the process is the point.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
            Ok(())
        }
        Fault::Hang => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        Fault::Garbage => {
            let junk = [0xffu8; 64];
            chan.send_raw(&junk, &[], false)?;
            Ok(())
        }
        Fault::Exit(code) => std::process::exit(code),
        Fault::Flood => loop {
            chan.send(&DriverToDdm::PollWake { handle: Handle(0) }, &[], &[])?;
        },
        Fault::StrayReply => {
            let stray = DriverToDdm::Reply { id: RequestId(u64::MAX), result: Err(Errno::EIO) };
            chan.send(&stray, &[], &[])?;
            Ok(())
        }
        Fault::RingGarbage => arm(RING_GARBAGE),
        Fault::RingStray => arm(RING_STRAY),
        Fault::RingOverlong => arm(RING_OVERLONG),
        Fault::RingDeath => arm(RING_DEATH),
        Fault::ForbiddenSyscall => {
            super::sandbox::try_forbidden();
            Ok(())
        }
    }
}

fn arm(fault: u8) -> Result<(), RunError> {
    *ARMED_AT.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    RING_FAULT.store(fault, Ordering::Release);
    Ok(())
}

fn dispatch<D: Driver>(
    driver: &mut D,
    ctx: &mut Context,
    msg: DdmToDriver,
    payload: &[u8],
    fds: Vec<OwnedFd>,
    clients: &mut Vec<ClientLink>,
    ddm_ring: &mut Option<Served>,
) -> Result<(), RunError> {
    if !fds.is_empty() && !matches!(msg, DdmToDriver::Attach { .. } | DdmToDriver::Ring(_) | DdmToDriver::Dma(_)) {
        return Err(RunError::Protocol("descriptors with a message that takes none".into()));
    }
    match msg {
        DdmToDriver::Attach { device, access, ring } => {
            let mut fds = fds.into_iter();
            let Some(fd) = fds.next() else {
                return Err(RunError::Protocol("Attach without a socket".into()));
            };
            let ring = match ring {
                None => None,
                Some(spec) => Some(Served::accept(spec, fds.collect()).map_err(RunError::Protocol)?),
            };
            let chan = Arc::new(Channel::from_fd(fd)?);
            chan.send(&crate::proto::Hello::ours(), &[], &[])?;
            debug!("direct client attached for device {device} (access {:?})", access.access());
            clients.push(ClientLink {
                chan,
                device,
                access: access.access(),
                handles: HashSet::new(),
                greeted: false,
                ring,
            });
        }
        DdmToDriver::Ring(spec) => {
            let served = Served::accept(spec, fds).map_err(RunError::Protocol)?;
            debug!("{}: calls may come by a ring of {} slots", ctx.instance(), spec.slots);
            *ddm_ring = Some(served);
        }
        DdmToDriver::Start { .. } => {
            return Err(RunError::Protocol("second Start".into()));
        }
        DdmToDriver::Dma(_) => {
            return Err(RunError::Protocol("a DMA grant after Start".into()));
        }
        DdmToDriver::Ping { seq } => {
            ctx.chan.send(&DriverToDdm::Pong { seq }, &[], &[])?;
        }
        DdmToDriver::Shutdown => ctx.stop = true,
        DdmToDriver::Bind(dev) => {
            if let Err(e) = driver.bind(ctx, &dev) {
                warn!("{}: cannot serve {}: {e}", ctx.instance(), dev.path);
            }
        }
        DdmToDriver::Unbind { path } => driver.unbind(ctx, &path),
        DdmToDriver::Rescan => driver.rescan(ctx),
        DdmToDriver::Inject(fault) => inject(&ctx.chan, fault)?,
        DdmToDriver::Cancel { id } => driver.cancel(ctx, id),
        DdmToDriver::Call { id, call } => {
            let to = ReplyTo::new(id, ctx.chan.clone());
            call_driver(driver, ctx, to, call, payload);
        }
    }
    Ok(())
}

fn call_driver<D: Driver>(driver: &mut D, ctx: &mut Context, mut to: ReplyTo, call: Call, payload: &[u8]) {
    match call {
        Call::Open { device, flags } => match driver.open(ctx, device, flags) {
            Ok(handle) => match driver.backing_file(ctx, handle, flags) {
                Some(fd) => to.send_fds(Ok(Answer::OpenedBacked { handle }), &[], &[fd.as_fd()]),
                None => to.send(Ok(Answer::Opened { handle }), &[]),
            },
            Err(e) => to.send(Err(e), &[]),
        },
        Call::Close { handle } => {
            ctx.poll_waiters.remove(&handle);
            driver.close(ctx, handle);
            to.send(Ok(Answer::Closed), &[]);
        }
        Call::Read { handle, offset, len, flags } => {
            let max = len.min(PAYLOAD_MAX as u32);
            driver.read(ctx, handle, offset, max, ReadReply { to, max, flags });
        }
        Call::Write { handle, offset, flags: _ } => {
            driver.write(ctx, handle, offset, payload, WriteReply { to });
        }
        Call::Scatter { handle, offset, lens } => {
            let total: u64 = lens.iter().map(|l| u64::from(*l)).sum();
            let max = total.min(PAYLOAD_MAX as u64) as u32;
            let reply = ReadReply { to, max, flags: OpenFlags::default() };
            driver.scatter(ctx, handle, offset, &lens, reply);
        }
        Call::Gather { handle, offset, lens } => {
            let total: u64 = lens.iter().map(|l| u64::from(*l)).sum();
            if total != payload.len() as u64 {
                to.send(Err(Errno::EINVAL), &[]);
                return;
            }
            driver.gather(ctx, handle, offset, &lens, payload, WriteReply { to });
        }
        Call::Ioctl { handle, cmd, out_len } => {
            let max = out_len.min(PAYLOAD_MAX as u32);
            driver.ioctl(ctx, handle, cmd, payload, max, IoctlReply { to, max });
        }
        Call::Poll { handle, events, notify } => {
            let revents = driver.poll(ctx, handle, events);
            if notify && revents & events == 0 {
                ctx.poll_waiters.insert(handle);
            }
            to.send(Ok(Answer::Polled { revents }), &[]);
        }
    }
}
