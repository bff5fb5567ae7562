//! The control socket: how `ddmctl` and libDDM programs talk to the DDM.
//!
//! A `SOCK_SEQPACKET` Unix socket (default [`ddf::ddm::DEFAULT_CONTROL_SOCKET`]),
//! one thread per connection, one request and one answer at a time, the same
//! framing and handshake as the driver links ([`ddf::ipc`]). The socket file
//! is mode 0666: anyone may ask; the caller's credentials (`SO_PEERCRED`) are
//! what decide whether a request that changes something is allowed.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ddf::ipc::{Channel, IpcError, PeerCred, RecvBuf};
use ddf::proto::{ControlRequest, ControlResponse, DdmInfo, DriverStatus, NodeInfo};
use log::{debug, warn};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

use crate::core::{spawn_named, Core};
use crate::ids::Ino;
use crate::tree::NodeKind;

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
}

/// Accepts connections until the listening socket is shut down.
pub fn serve(core: Arc<Core>, listener: OwnedFd, rights: Rights) {
    loop {
        let fd = match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            Err(nix::Error::EINTR) | Err(nix::Error::ECONNABORTED) => continue,
            Err(e) => {
                debug!("control: accept: {e}");
                return;
            }
        };
        // SAFETY: accept4 just returned this descriptor to us alone.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let core = core.clone();
        let rights = rights.clone();
        spawn_named("control", move || {
            if let Err(e) = client(&core, fd, &rights) {
                debug!("control client: {e}");
            }
        });
    }
}

fn client(core: &Arc<Core>, fd: OwnedFd, rights: &Rights) -> Result<(), IpcError> {
    let chan = Channel::from_fd(fd)?;
    let cred = chan.peer_cred()?;
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
                        ControlResponse::Error(why)
                    }
                };
                (answer, Vec::new())
            }
            Err(e) => {
                warn!("control: undecodable request from pid {}: {e}", cred.pid);
                (ControlResponse::Error(format!("request not understood: {e}")), Vec::new())
            }
        };
        let give: Vec<std::os::fd::BorrowedFd<'_>> = give.iter().map(|f| f.as_fd()).collect();
        chan.send(&answer, &[], &give)?;
    }
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

fn handle(core: &Arc<Core>, req: ControlRequest, rights: &Rights) -> ControlResponse {
    let named =
        |driver: &str| core.instance(driver).ok_or_else(|| format!("no driver named {driver:?} (see ddmctl status)"));
    let done = |r: Result<String, String>| match r {
        Ok(msg) => ControlResponse::Done(msg),
        Err(e) => ControlResponse::Error(e),
    };
    let plugged = |r: Result<String, crate::plug::PlugError>| done(r.map_err(|e| ddf::error_chain(&e)));
    match req {
        ControlRequest::Tree => ControlResponse::Tree(tree(core)),
        ControlRequest::Status => ControlResponse::Status(status(core)),
        ControlRequest::Info => ControlResponse::Info(DdmInfo {
            mountpoint: rights.mountpoint.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
        }),
        ControlRequest::Restart { driver } => done(named(&driver).map(|i| crate::supervise::restart_request(core, &i))),
        ControlRequest::Inject { driver, fault } => {
            done(named(&driver).and_then(|i| crate::supervise::inject(&i, fault)))
        }
        ControlRequest::Direct => ControlResponse::Error("a direct connection needs an open device file".into()),
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

/// The tree as the control socket shows it.
pub fn tree(core: &Core) -> Vec<NodeInfo> {
    let nodes: Vec<(Ino, String, NodeKind, access_policy::Perm)> = {
        let tree = core.tree.read();
        tree.walk().into_iter().map(|n| (n.ino, tree.path(n.ino), n.kind.clone(), n.perm)).collect()
    };
    nodes
        .into_iter()
        .map(|(ino, path, kind, perm)| {
            let mut info = NodeInfo {
                path,
                class: None,
                driver: None,
                pid: None,
                state: None,
                mode: perm.mode,
                uid: perm.uid,
                gid: perm.gid,
                size: 0,
                bus: None,
                address: None,
                meta: Vec::new(),
                state_text: None,
            };
            match kind {
                NodeKind::Bus { kind, owner, .. } => {
                    info.bus = kind;
                    if let Some(inst) = owner.and_then(|o| core.inst(o)) {
                        let l = inst.live.lock();
                        info.driver = Some(inst.name().to_owned());
                        info.pid = l.pid;
                        info.state = Some(l.state);
                        info.state_text = Some(l.state.as_str().to_owned());
                    }
                }
                NodeKind::Device(d) => {
                    info.class = Some(d.class);
                    info.size = d.size;
                    if let Some(inst) = core.inst(d.instance) {
                        let (pid, state) = {
                            let l = inst.live.lock();
                            (l.pid, l.state)
                        };
                        info.driver = Some(inst.name().to_owned());
                        info.pid = pid;
                        info.state = Some(state);
                        info.state_text = crate::plug::node_state(core, ino, Some(state));
                    }
                    if let Some(b) = d.bus {
                        info.bus = Some(b.kind.clone());
                        info.address = b.address.clone();
                        info.meta = b.meta.clone();
                    }
                }
            }
            info
        })
        .collect()
}

/// Every driver instance.
pub fn status(core: &Core) -> Vec<DriverStatus> {
    core.all()
        .iter()
        .map(|inst| {
            let devices = core.device_paths(inst);
            let dma = inst.dma.lock().as_ref().map(|r| r.status());
            let live = inst.live.lock();
            DriverStatus {
                name: inst.name().to_owned(),
                exec: inst.exec.display().to_string(),
                pid: live.pid,
                state: live.state,
                last_exit: live.last_exit.clone(),
                requests: inst.requests.load(std::sync::atomic::Ordering::Relaxed),
                errors: inst.errors.load(std::sync::atomic::Ordering::Relaxed),
                restarts: live.restarts,
                devices,
                counters: inst.counters.lock().iter().map(|(k, v)| (k.clone(), *v)).collect(),
                fast_calls: live.conn.as_ref().map_or(0, |c| c.fast_calls()),
                dma,
            }
        })
        .collect()
}
