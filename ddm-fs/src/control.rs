//! The control socket: how `ddmctl` and libDDM programs talk to the DDM.
//!
//! A `SOCK_SEQPACKET` Unix socket (default [`ddf::ddm::DEFAULT_CONTROL_SOCKET`]),
//! one thread per connection, one request and one answer at a time, the same
//! framing and handshake as the driver links ([`ddf::ipc`]). The socket file
//! is mode 0666: anyone may ask; the caller's credentials (`SO_PEERCRED`) are
//! what decide whether a request that changes something is allowed.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ddf::ipc::{Channel, IpcError, RecvBuf};
use ddf::proto::{ControlRequest, ControlResponse, DriverStatus, NodeInfo};
use log::{debug, warn};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

use crate::core::{lock, spawn_named, Core};
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

/// Accepts connections until the listening socket is shut down.
pub fn serve(core: Arc<Core>, listener: OwnedFd) {
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
        spawn_named("control", move || {
            if let Err(e) = client(&core, fd) {
                debug!("control client: {e}");
            }
        });
    }
}

fn client(core: &Core, fd: OwnedFd) -> Result<(), IpcError> {
    let chan = Channel::from_fd(fd)?;
    let cred = chan.peer_cred()?;
    let mut buf = RecvBuf::default();
    chan.handshake(&mut buf)?;
    loop {
        let frame = match chan.recv(&mut buf) {
            Ok(f) => f,
            Err(IpcError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let answer = match frame.decode::<ControlRequest>() {
            Ok(req) => {
                debug!("control: {req:?} from uid {} pid {}", cred.uid, cred.pid);
                handle(core, req)
            }
            Err(e) => {
                warn!("control: undecodable request from pid {}: {e}", cred.pid);
                ControlResponse::Error(format!("request not understood: {e}"))
            }
        };
        chan.send(&answer, &[], &[])?;
    }
}

fn handle(core: &Core, req: ControlRequest) -> ControlResponse {
    match req {
        ControlRequest::Tree => ControlResponse::Tree(tree(core)),
        ControlRequest::Status => ControlResponse::Status(status(core)),
    }
}

/// The tree as the control socket shows it.
pub fn tree(core: &Core) -> Vec<NodeInfo> {
    let tree = core.tree.read().unwrap_or_else(|p| p.into_inner());
    tree.walk()
        .into_iter()
        .map(|n| {
            let (class, driver, pid, state, size) = match &n.kind {
                NodeKind::Bus { .. } => (None, None, None, None, 0),
                NodeKind::Device(d) => {
                    let inst = core.instances.get(d.instance);
                    let (pid, state) = inst
                        .map(|i| {
                            let l = lock(&i.live);
                            (l.pid, Some(l.state))
                        })
                        .unwrap_or((None, None));
                    (Some(d.class), inst.map(|i| i.name().to_owned()), pid, state, d.size)
                }
            };
            NodeInfo {
                path: tree.path(n.ino),
                class,
                driver,
                pid,
                state,
                mode: n.perm.mode,
                uid: n.perm.uid,
                gid: n.perm.gid,
                size,
            }
        })
        .collect()
}

/// Every driver instance.
pub fn status(core: &Core) -> Vec<DriverStatus> {
    core.instances
        .iter()
        .map(|inst| {
            let devices = core.device_paths(inst);
            let live = lock(&inst.live);
            DriverStatus {
                name: inst.name().to_owned(),
                exec: inst.exec.display().to_string(),
                pid: live.pid,
                state: live.state,
                requests: inst.requests.load(std::sync::atomic::Ordering::Relaxed),
                errors: inst.errors.load(std::sync::atomic::Ordering::Relaxed),
                restarts: live.restarts,
                devices,
            }
        })
        .collect()
}
