//! The runtime loop that serves a [`Driver`]: the handshake, `Start`, and
//! then one request at a time from the DDM's socket, the driver's watched
//! descriptors, its waker and its direct clients.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::Arc;

use log::{debug, error, warn};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::reply::ReplyTo;
use super::{Context, Driver, IoctlReply, ReadReply, SavedState, StartInfo, Waker, WriteReply, SOCKET_FD_ENV};
use crate::ipc::{Channel, IpcError, RecvBuf, PAYLOAD_MAX};
use crate::proto::{
    Access, Answer, Call, DdmToDriver, DeviceId, DriverToDdm, Errno, Fault, Handle, OpenFlags, RequestId, StateEntry,
};

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

    let mut buf = RecvBuf::default();
    chan.handshake(&mut buf)?;
    let (start, state) = {
        let frame = chan.recv(&mut buf)?;
        let msg = frame.decode::<DdmToDriver>()?;
        match msg {
            DdmToDriver::Start { instance, params, state } => {
                (StartInfo { instance, params }, take_state(state, frame.fds)?)
            }
            other => return Err(RunError::Protocol(format!("expected Start, got {other:?}"))),
        }
    };
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| RunError::Setup(e.into()))?;
    let mut driver =
        make(&start).map_err(|e| RunError::Make { instance: start.instance.clone(), source: Box::new(e) })?;
    let mut ctx = Context {
        chan: chan.clone(),
        state,
        start,
        watches: Vec::new(),
        poll_waiters: HashSet::new(),
        waker: Waker(Arc::new(efd)),
        next_device: 0,
        next_bus: 0,
        stop: false,
    };
    driver.init(&mut ctx).map_err(|errno| RunError::Init { instance: ctx.start.instance.clone(), errno })?;
    chan.send(&DriverToDdm::Ready, &[], &[])?;

    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let mut clients: Vec<ClientLink> = Vec::new();
    loop {
        if ctx.stop {
            driver.fini(&mut ctx);
            return Ok(());
        }
        pollfds.clear();
        for fd in [chan.as_fd().as_raw_fd(), ctx.waker.0.as_fd().as_raw_fd()] {
            pollfds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        }
        for c in &clients {
            pollfds.push(libc::pollfd { fd: c.chan.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let first_watch = pollfds.len();
        for (fd, _) in &ctx.watches {
            pollfds.push(libc::pollfd { fd: *fd, events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: `pollfds` is a live, correctly sized array of pollfd; poll
        // on a descriptor that was closed meanwhile only reports POLLNVAL.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RunError::Setup(e));
        }
        if pollfds[1].revents != 0 {
            let _ = ctx.waker.0.read();
            driver.wake(&mut ctx);
        }
        let ready: Vec<u64> = pollfds[first_watch..]
            .iter()
            .zip(ctx.watches.iter())
            .filter(|(p, _)| p.revents != 0)
            .map(|(_, (_, t))| *t)
            .collect();
        for token in ready {
            driver.ready(&mut ctx, token);
        }
        // Direct clients, newest first so that removal keeps indices valid.
        for i in (0..clients.len()).rev() {
            if pollfds[2 + i].revents == 0 {
                continue;
            }
            if let Err(why) = serve_client(&mut driver, &mut ctx, &mut clients[i], &mut buf) {
                debug!("direct client gone: {why}");
                let gone = clients.swap_remove(i);
                for h in gone.handles {
                    ctx.poll_waiters.remove(&h);
                    driver.close(&mut ctx, h);
                }
            }
        }
        if pollfds[0].revents != 0 {
            let frame = chan.recv(&mut buf)?;
            let msg: DdmToDriver = frame.decode()?;
            let fds = frame.fds;
            dispatch(&mut driver, &mut ctx, msg, frame.payload, fds, &mut clients)?;
        }
    }
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
    let mut to = ReplyTo::new(id, client.chan.clone());
    let (handle, needs_read, needs_write) = match &call {
        Call::Open { device, flags } => {
            if *device != client.device || !client.access.permits(flags.access()) {
                to.send(Err(Errno::EPERM), &[]);
                return Ok(());
            }
            match driver.open(ctx, *device, *flags) {
                Ok(h) => {
                    client.handles.insert(h);
                    to.send(Ok(Answer::Opened { handle: h }), &[]);
                }
                Err(e) => to.send(Err(e), &[]),
            }
            return Ok(());
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
        return Ok(());
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
    call_driver(driver, ctx, to, call, frame.payload);
    Ok(())
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
    }
}

fn dispatch<D: Driver>(
    driver: &mut D,
    ctx: &mut Context,
    msg: DdmToDriver,
    payload: &[u8],
    fds: Vec<OwnedFd>,
    clients: &mut Vec<ClientLink>,
) -> Result<(), RunError> {
    if !fds.is_empty() && !matches!(msg, DdmToDriver::Attach { .. }) {
        return Err(RunError::Protocol("descriptors with a message that takes none".into()));
    }
    match msg {
        DdmToDriver::Attach { device, access } => {
            let Some(fd) = fds.into_iter().next() else {
                return Err(RunError::Protocol("Attach without a socket".into()));
            };
            let chan = Arc::new(Channel::from_fd(fd)?);
            chan.send(&crate::proto::Hello::ours(), &[], &[])?;
            debug!("direct client attached for device {device} (access {:?})", access.access());
            clients.push(ClientLink { chan, device, access: access.access(), handles: HashSet::new(), greeted: false });
        }
        DdmToDriver::Start { .. } => {
            return Err(RunError::Protocol("second Start".into()));
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
