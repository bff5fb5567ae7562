//! The control socket: how `ddmctl` and libDDM programs talk to the DDM.
//!
//! A `SOCK_SEQPACKET` Unix socket (default [`ddf::ddm::DEFAULT_CONTROL_SOCKET`]),
//! one thread per connection, one request and one answer at a time, the same
//! framing and handshake as the driver links ([`ddf::ipc`]). The socket file
//! is mode 0666: anyone may ask; the caller's credentials (`SO_PEERCRED`) are
//! what decide whether a request that changes something is allowed.
//!
//! Anyone may connect, so nobody may hold ddm hostage ([`Limits`]): a user
//! other than root has at most [`Limits::per_user`] connections open, all
//! of them together [`Limits::total`]; one more is answered with an error
//! and closed at once. A connection that sends nothing (no handshake, no
//! next request) or does not take its answers for [`Limits::timeout`] is
//! closed. A frame over the size limit, or one that lies about its length,
//! ends its connection; one that does not decode is answered with an
//! error. Each refusal is logged (at most a few lines a second). Root's
//! connections are never refused, so `ddmctl status` answers meanwhile.
//!
//! A `Monitor` request turns its connection into a stream: the DDM answers
//! `Done` once the subscription is live, then one `Event` frame per event
//! ([`crate::monitor`]) until the caller closes the connection. Refusals a
//! script may act on (permission denied, no such driver or node) are
//! `Refused` with a [`Refusal`]; other failures are `Error`.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ddf::ipc::{Channel, IpcError, PeerCred, RecvBuf};
use ddf::proto::{ControlRequest, ControlResponse, DdmInfo, NodeInfo, Refusal};
use log::{debug, warn};
use nix::sys::socket::{self, setsockopt, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::time::TimeVal;

use crate::core::{spawn_named, Core};
use crate::ids::Ino;
use crate::monitor::Monitor;
use crate::plug::PlugError;
use crate::sync::{Mutex, Rank};
use crate::tree::NodeKind;

mod view;
pub use view::{acl_text, node, status, tree};

/// Errors setting up the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The directory for the socket could not be made.
    #[error("cannot create directory {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    /// Another ddm answers on this socket.
    #[error("another ddm is listening on {0}; stop it or use --socket")]
    InUse(PathBuf),
    /// socket/bind/listen failed.
    #[error("cannot listen on {0}")]
    Listen(PathBuf, #[source] std::io::Error),
}

/// Binds the control socket at `path` (replacing a stale socket file).
pub fn bind(path: &Path) -> Result<OwnedFd, ControlError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ControlError::Dir(dir.to_owned(), e))?;
    }
    if path.exists() {
        if Channel::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_owned()));
        }
        let _ = std::fs::remove_file(path);
    }
    let err = |e: nix::Error| ControlError::Listen(path.to_owned(), e.into());
    let fd = socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).map_err(err)?;
    let addr = UnixAddr::new(path).map_err(err)?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| ControlError::Listen(path.to_owned(), e))?;
    socket::listen(&fd, socket::Backlog::new(64).map_err(err)?).map_err(err)?;
    Ok(fd)
}

/// Who may change things through the control socket.
#[derive(Debug, Clone)]
pub struct Rights {
    /// Members of this group (primary or supplementary) may, besides root.
    pub admin_gid: Option<u32>,
    /// The mount point, for `Info`.
    pub mountpoint: String,
    /// The device number of the mount (`st_dev`), to check that a file
    /// given as proof of access is one of ours.
    pub mount_dev: u64,
    /// The event stream `Monitor` requests subscribe to.
    pub monitor: Arc<Monitor>,
}

/// How much of ddm the control socket's clients may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections one user other than root may have open at once.
    pub per_user: usize,
    /// Connections of all users but root together.
    pub total: usize,
    /// How long ddm waits for a client's next frame (its handshake, its
    /// next request), and for a client to take an answer.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { per_user: 32, total: 256, timeout: Duration::from_secs(60) }
    }
}

/// Open connections by user (root's are not counted).
type Open = Arc<Mutex<HashMap<u32, usize>>>;

/// A connection's place in the count; given back when it is dropped.
struct Slot {
    open: Open,
    uid: u32,
}

impl Slot {
    /// Takes a place for a connection of `uid`, or says why there is none.
    fn take(open: &Open, uid: u32, limits: &Limits) -> Result<Option<Slot>, String> {
        if uid == 0 {
            return Ok(None);
        }
        let mut map = open.lock();
        let mine = map.get(&uid).copied().unwrap_or(0);
        if mine >= limits.per_user {
            return Err(format!("too many connections: uid {uid} has {mine} open (at most {})", limits.per_user));
        }
        let all: usize = map.values().sum();
        if all >= limits.total {
            return Err(format!(
                "too many connections: {all} are open (at most {} for users other than root)",
                limits.total
            ));
        }
        *map.entry(uid).or_default() += 1;
        Ok(Some(Slot { open: open.clone(), uid }))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.open.lock();
        if let Some(n) = map.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.uid);
            }
        }
    }
}

/// Lines of abuse a second that reach the log (one client must not flood it).
const ABUSE_LINES_PER_SEC: u32 = 5;

/// Logs a line about a misbehaving client, within [`ABUSE_LINES_PER_SEC`];
/// the lines left out are counted in the next one that is logged.
fn abuse(what: std::fmt::Arguments<'_>) {
    static BUDGET: Mutex<Option<(Instant, u32, u64)>> = Mutex::new(Rank::Leaf, None);
    let mut b = BUDGET.lock();
    let now = Instant::now();
    let (since, lines, dropped) = b.get_or_insert((now, 0, 0));
    if now.duration_since(*since) >= Duration::from_secs(1) {
        *since = now;
        *lines = 0;
    }
    if *lines < ABUSE_LINES_PER_SEC {
        *lines += 1;
        let more =
            if *dropped > 0 { format!(" ({dropped} such lines left out before this one)") } else { String::new() };
        *dropped = 0;
        warn!("control: {what}{more}");
    } else {
        *dropped += 1;
    }
}

/// Closes refused connections gently. Closing a socket whose client's
/// frames ddm never read resets the connection, and the client then loses
/// the reason it was sent (`ECONNRESET` comes before the queued frames).
/// So a refused connection is shut for writing and handed here, where what
/// the client sends is read and dropped until it hangs up or
/// [`Refuser::LINGER`] passes. At most [`Refuser::HELD`] wait at once;
/// more are closed at once (a client refused in a flood may lose its
/// reason, never ddm its descriptors).
struct Refuser {
    tx: std::sync::mpsc::SyncSender<Channel>,
}

impl Refuser {
    /// How long a refused connection is kept for its client to read.
    const LINGER: Duration = Duration::from_secs(1);
    /// The most refused connections kept at once.
    const HELD: usize = 64;

    fn start() -> Refuser {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Channel>(Refuser::HELD);
        spawn_named("control-refuse", move || Refuser::run(&rx));
        Refuser { tx }
    }

    fn hand_over(&self, chan: Channel) {
        let _ = socket::shutdown(chan.as_fd().as_raw_fd(), socket::Shutdown::Write);
        // Full (or the thread is gone): close at once.
        let _ = self.tx.try_send(chan);
    }

    fn run(rx: &std::sync::mpsc::Receiver<Channel>) {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        let mut held: Vec<(Channel, Instant)> = Vec::new();
        let mut buf = RecvBuf::default();
        loop {
            if held.is_empty() {
                match rx.recv() {
                    Ok(c) => held.push((c, Instant::now() + Refuser::LINGER)),
                    Err(_) => return,
                }
            }
            while let Ok(c) = rx.try_recv() {
                held.push((c, Instant::now() + Refuser::LINGER));
            }
            let mut gone = vec![false; held.len()];
            {
                let mut fds: Vec<PollFd<'_>> =
                    held.iter().map(|(c, _)| PollFd::new(c.as_fd(), PollFlags::POLLIN)).collect();
                // Short, so that newly refused connections join soon.
                let _ = nix::poll::poll(&mut fds, PollTimeout::from(50u16));
                for (i, fd) in fds.iter().enumerate() {
                    let ev = fd.revents().unwrap_or(PollFlags::empty());
                    if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                        gone[i] = true;
                    }
                }
            }
            let now = Instant::now();
            let mut i = 0;
            held.retain(|(c, until)| {
                let mut done = gone[i] || now >= *until;
                i += 1;
                // Drop what the client sent; end of file is its hang-up.
                loop {
                    match c.try_recv(&mut buf) {
                        Ok(_) => continue,
                        Err(IpcError::WouldBlock) => break,
                        Err(_) => {
                            done = true;
                            break;
                        }
                    }
                }
                !done
            });
        }
    }
}

/// Accepts connections until the listening socket is shut down.
pub fn serve(core: Arc<Core>, listener: OwnedFd, rights: Rights, limits: Limits) {
    let open: Open = Arc::new(Mutex::new(Rank::Leaf, HashMap::new()));
    let refuser = Refuser::start();
    loop {
        let fd = match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            Err(nix::Error::EINTR) | Err(nix::Error::ECONNABORTED) => continue,
            // Out of descriptors or memory: the clients holding them must
            // go first; try again in a moment rather than stop serving.
            Err(e @ (nix::Error::EMFILE | nix::Error::ENFILE | nix::Error::ENOBUFS | nix::Error::ENOMEM)) => {
                abuse(format_args!("accept: {e}; waiting before the next"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => {
                debug!("control: accept: {e}");
                return;
            }
        };
        // SAFETY: accept4 just returned this descriptor to us alone.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let Ok(chan) = Channel::from_fd(fd) else { continue };
        let Ok(cred) = chan.peer_cred() else { continue };
        let slot = match Slot::take(&open, cred.uid, &limits) {
            Ok(slot) => slot,
            Err(why) => {
                abuse(format_args!("connection of uid {} (pid {}) refused: {why}", cred.uid, cred.pid));
                // The client hears why, without ddm waiting on it.
                let _ = chan.try_send(&ddf::proto::Hello::ours(), &[], &[]);
                let _ = chan.try_send(&ControlResponse::Error(why), &[], &[]);
                refuser.hand_over(chan);
                continue;
            }
        };
        let t = TimeVal::new(limits.timeout.as_secs() as _, limits.timeout.subsec_micros() as _);
        if let Err(e) = setsockopt(&chan.as_fd(), sockopt::ReceiveTimeout, &t)
            .and_then(|()| setsockopt(&chan.as_fd(), sockopt::SendTimeout, &t))
        {
            warn!("control: cannot set a timeout on a connection: {e}");
        }
        let core = core.clone();
        let rights = rights.clone();
        spawn_named("control", move || {
            let _slot = slot;
            match client(&core, &chan, cred, &rights) {
                Ok(()) | Err(IpcError::Closed) => {}
                Err(IpcError::WouldBlock) => abuse(format_args!(
                    "closed the connection of uid {} (pid {}): nothing sent, or answers not taken, for {} s",
                    cred.uid,
                    cred.pid,
                    limits.timeout.as_secs_f64()
                )),
                Err(e) => abuse(format_args!(
                    "closed the connection of uid {} (pid {}): {}",
                    cred.uid,
                    cred.pid,
                    ddf::error_chain(&e)
                )),
            }
        });
    }
}

fn client(core: &Arc<Core>, chan: &Channel, cred: PeerCred, rights: &Rights) -> Result<(), IpcError> {
    let groups = chan.peer_groups().unwrap_or_default();
    let mut buf = RecvBuf::default();
    chan.handshake(&mut buf)?;
    loop {
        let frame = match chan.recv(&mut buf) {
            Ok(f) => f,
            Err(IpcError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let decoded = frame.decode::<ControlRequest>();
        let fds = frame.fds;
        let (answer, give) = match decoded {
            Ok(ControlRequest::Monitor) => {
                debug!("control: monitor from uid {} pid {}", cred.uid, cred.pid);
                return stream(chan, &rights.monitor);
            }
            Ok(ControlRequest::Direct) => match direct(core, rights, fds) {
                Ok((answer, fds)) => (answer, fds),
                Err(why) => {
                    warn!("control: direct connection refused to uid {} (pid {}): {why}", cred.uid, cred.pid);
                    (ControlResponse::Error(why), Vec::new())
                }
            },
            Ok(req) => {
                debug!("control: {req:?} from uid {} pid {}", cred.uid, cred.pid);
                let answer = match allowed(&req, &cred, &groups, rights) {
                    Ok(()) => handle(core, req, rights),
                    Err(why) => {
                        warn!("control: {req:?} refused to uid {} (pid {}): {why}", cred.uid, cred.pid);
                        ControlResponse::Refused { why: Refusal::Denied, message: why }
                    }
                };
                (answer, Vec::new())
            }
            Err(e) => {
                abuse(format_args!("undecodable request from uid {} (pid {}): {e}", cred.uid, cred.pid));
                (ControlResponse::Error(format!("request not understood: {e}")), Vec::new())
            }
        };
        let answer = match answer {
            ControlResponse::Tree(nodes) => send_parts(chan, nodes)?,
            other => other,
        };
        let give: Vec<std::os::fd::BorrowedFd<'_>> = give.iter().map(|f| f.as_fd()).collect();
        chan.send(&answer, &[], &give)?;
    }
}

/// Room for the frame's length prefix, the variant and the list's length.
const PART_OVERHEAD: usize = 64;

/// Sends the first nodes of a tree too big for one frame as
/// [`ControlResponse::TreePart`]s, each as full as a frame allows; returns
/// the last answer, a [`ControlResponse::Tree`] that fits.
fn send_parts(chan: &Channel, nodes: Vec<NodeInfo>) -> Result<ControlResponse, IpcError> {
    let budget = ddf::ipc::FRAME_MAX - PART_OVERHEAD;
    let mut part = Vec::new();
    let mut size = 0;
    for n in nodes {
        // A node's fields are bounded (names, addresses, metadata), far
        // below a frame.
        let len = ddf::ipc::encoded_len(&n);
        if size + len > budget && !part.is_empty() {
            chan.send(&ControlResponse::TreePart(std::mem::take(&mut part)), &[], &[])?;
            size = 0;
        }
        size += len;
        part.push(n);
    }
    Ok(ControlResponse::Tree(part))
}

/// Whether the caller may make this request. Read-only requests are for
/// everyone; changes need uid 0 or membership of the admin group.
fn allowed(req: &ControlRequest, cred: &PeerCred, groups: &[u32], rights: &Rights) -> Result<(), String> {
    let changes = match req {
        // Direct carries its own proof (an open file of the device).
        ControlRequest::Tree
        | ControlRequest::Status
        | ControlRequest::Info
        | ControlRequest::Find(_)
        | ControlRequest::Monitor
        | ControlRequest::Node { .. }
        | ControlRequest::Direct => false,
        ControlRequest::Restart { .. }
        | ControlRequest::Inject { .. }
        | ControlRequest::Load { .. }
        | ControlRequest::Unload { .. }
        | ControlRequest::Rescan { .. } => true,
    };
    if !changes || cred.uid == 0 {
        return Ok(());
    }
    if let Some(g) = rights.admin_gid {
        if cred.gid == g || groups.contains(&g) {
            return Ok(());
        }
        return Err(format!(
            "permission denied: this changes the DDM and needs root or membership of the admin group (gid {g}); uid {} is neither",
            cred.uid
        ));
    }
    Err(format!(
        "permission denied: this changes the DDM and needs root (no admin group is configured: see ddm --admin-group); uid {} is not root",
        cred.uid
    ))
}

/// Streams events to a `Monitor` caller until it goes away. Only this
/// connection's thread ever waits here: publishing never does (see
/// [`crate::monitor`]).
fn stream(chan: &Channel, monitor: &Arc<Monitor>) -> Result<(), IpcError> {
    let sub = match monitor.subscribe() {
        Ok(s) => s,
        Err(e) => return chan.send(&ControlResponse::Error(e.to_string()), &[], &[]),
    };
    chan.send(&ControlResponse::Done("monitoring".into()), &[], &[])?;
    loop {
        match sub.next(std::time::Duration::from_secs(1)) {
            Some(event) => chan.send(&ControlResponse::Event(event), &[], &[])?,
            // Idle: notice a caller that went away (or spoke, which a
            // monitor connection must not).
            None if hung_up(chan) => return Ok(()),
            None => {}
        }
    }
}

/// Whether the peer of `chan` closed its end or sent something.
fn hung_up(chan: &Channel) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(chan.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => true,
        Err(nix::Error::EINTR) => false,
        Err(_) => true,
    }
}

/// A refusal for something that does not exist.
fn not_found(message: String) -> ControlResponse {
    ControlResponse::Refused { why: Refusal::NotFound, message }
}

fn handle(core: &Arc<Core>, req: ControlRequest, rights: &Rights) -> ControlResponse {
    let named =
        |driver: &str| core.instance(driver).ok_or_else(|| format!("no driver named {driver:?} (see ddmctl status)"));
    let plugged = |r: Result<String, PlugError>| {
        r.map_or_else(
            |e| {
                let message = ddf::error_chain(&e);
                match e {
                    PlugError::NoDriver(_) | PlugError::NoNode(_) | PlugError::NoDriverFor(_) => not_found(message),
                    PlugError::NotABus(_)
                    | PlugError::NotEnumerated(_)
                    | PlugError::Start(..)
                    | PlugError::NotRunning { .. } => ControlResponse::Error(message),
                }
            },
            ControlResponse::Done,
        )
    };
    match req {
        ControlRequest::Tree => ControlResponse::Tree(tree(core)),
        ControlRequest::Status => ControlResponse::Status(status(core)),
        ControlRequest::Info => ControlResponse::Info(DdmInfo {
            mountpoint: rights.mountpoint.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
        }),
        ControlRequest::Restart { driver } => match named(&driver) {
            Ok(i) => ControlResponse::Done(crate::supervise::restart_request(core, &i)),
            Err(why) => not_found(why),
        },
        ControlRequest::Inject { driver, fault } => match named(&driver) {
            Ok(i) => crate::supervise::inject(&i, fault).map_or_else(ControlResponse::Error, ControlResponse::Done),
            Err(why) => not_found(why),
        },
        ControlRequest::Direct => ControlResponse::Error("a direct connection needs an open device file".into()),
        // Answered by `stream`, never here.
        ControlRequest::Monitor => ControlResponse::Error("a monitor request takes its connection".into()),
        ControlRequest::Node { path } => match node(core, &path) {
            Some(detail) => ControlResponse::Node(detail),
            None => not_found(format!("no node /{} (see ddmctl tree)", path.trim_matches('/'))),
        },
        ControlRequest::Find(q) => {
            ControlResponse::Tree(tree(core).into_iter().filter(|n| crate::plug::matches_query(&q, n)).collect())
        }
        ControlRequest::Load { driver, bus, params } => {
            plugged(crate::plug::load(core, &driver, bus.as_deref(), &params))
        }
        ControlRequest::Unload { path } => plugged(crate::plug::unload(core, &path)),
        ControlRequest::Rescan { bus } => plugged(crate::plug::rescan(core, bus.as_deref())),
    }
}

/// Grants a direct link to a device's driver. The proof is a descriptor of
/// the device file opened on our mount: the kernel checked the caller's
/// rights when it was opened, and its access mode is what is granted.
fn direct(core: &Core, rights: &Rights, fds: Vec<OwnedFd>) -> Result<(ControlResponse, Vec<OwnedFd>), String> {
    let [proof]: [OwnedFd; 1] =
        fds.try_into().map_err(|_| "a direct connection needs exactly one open device file as proof".to_owned())?;
    let st = nix::sys::stat::fstat(&proof).map_err(|e| format!("cannot stat the proof: {e}"))?;
    if st.st_dev as u64 != rights.mount_dev {
        return Err(format!("the file given is not on the ddf mount {}", rights.mountpoint));
    }
    let flags = nix::fcntl::fcntl(&proof, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| format!("F_GETFL: {e}"))?;
    let access = ddf::proto::OpenFlags::from_access(ddf::proto::OpenFlags(flags).access());
    let dref = match core.tree.read().get(Ino(st.st_ino as u64)).map(|n| n.kind.clone()) {
        Some(NodeKind::Device(d)) => d,
        Some(NodeKind::Bus { .. }) => return Err("that is a bus, not a device".into()),
        None => return Err("that device is gone".into()),
    };
    let inst = core.inst(dref.instance).ok_or("no driver for that device")?;
    let conn = inst.conn().ok_or_else(|| format!("driver {} is not running", inst.name()))?;
    let (ours, theirs) = Channel::pair().map_err(|e| format!("socketpair: {e}"))?;
    let theirs: OwnedFd = theirs.into();
    // The fast path: a ring ddm makes and hands to both ends.
    let fast = if core.config.fast_path { client_ring() } else { None };
    let spec = fast.as_ref().map(|(r, _)| r.spec());
    let mut to_driver = vec![theirs.as_fd()];
    let mut to_client: Vec<OwnedFd> = vec![ours.into()];
    if let Some((ring, bell)) = &fast {
        to_driver.extend([ring.fd(), bell.as_fd()]);
        let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map_err(|e| format!("dup: {e}"));
        to_client.extend([dup(ring.fd())?, dup(bell.as_fd())?]);
    }
    let msg = ddf::proto::DdmToDriver::Attach { device: dref.device, access, ring: spec };
    conn.chan().send(&msg, &[], &to_driver).map_err(|e| format!("driver {}: {e}", inst.name()))?;
    log::info!("direct link to driver {} for device {} (access {:?})", inst.name(), dref.device, access.access());
    let answer = ControlResponse::Direct { device: dref.device, access, driver: inst.name().to_owned(), ring: spec };
    Ok((answer, to_client))
}

/// A ring and its doorbell for a direct client's link (`None`: the link
/// takes the socket only; logged).
fn client_ring() -> Option<(ddf::ring::Ring, ddf::ring::Doorbell)> {
    let spec = ddf::proto::RingSpec { slots: 2, slot_size: ddf::ring::DEFAULT_SLOT_SIZE };
    let made = ddf::ring::Ring::create(spec).and_then(|r| {
        r.set_spin_allowed(true);
        Ok((r, ddf::ring::Doorbell::new()?))
    });
    match made {
        Ok(m) => Some(m),
        Err(e) => {
            warn!("direct link without a fast path: {}", ddf::error_chain(&e));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn acls_read_as_getfacl_writes_them() {
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in
            [(1u16, 6u16, u32::MAX), (2, 4, 1000), (4, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 0, u32::MAX)]
        {
            acl.extend(tag.to_le_bytes());
            acl.extend(perm.to_le_bytes());
            acl.extend(id.to_le_bytes());
        }
        assert_eq!(acl_text(&acl).unwrap(), "user::rw-,user:1000:r--,group::r--,mask::r--,other::---");
        assert_eq!(acl_text(&acl[..7]), None);
        assert_eq!(acl_text(&[1, 0, 0, 0]), None);
    }
}
