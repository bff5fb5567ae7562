//! libDDM: the proxy programs use to talk to the device driver manager.
//!
//! `ddmctl` is a thin shell around this module; any program may use it the
//! same way. Each method is one request on the DDM's control socket and one
//! answer, so a call "feels just like a local method invocation" (paper
//! §3.4). Drivers register their devices through the same library, on their
//! own link: see [`crate::driver::Context::add_device`].
//!
//! ```no_run
//! let mut ddm = ddf::ddm::Ddm::connect(ddf::ddm::DEFAULT_CONTROL_SOCKET.as_ref())?;
//! for node in ddm.tree()? {
//!     println!("/{} {:?}", node.path, node.driver);
//! }
//! # Ok::<(), ddf::ddm::DdmError>(())
//! ```

use std::path::{Path, PathBuf};

use crate::ipc::{Channel, IpcError, RecvBuf};
use crate::proto::{ControlRequest, ControlResponse, DdmInfo, DriverStatus, Fault, NodeInfo, Query};

/// Where `ddm` listens unless told otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ddf/control.sock";

/// What can go wrong talking to the DDM.
#[derive(Debug, thiserror::Error)]
pub enum DdmError {
    /// The control socket could not be reached.
    #[error("cannot reach ddm at {path} (is ddm running? see --socket)")]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// Why.
        #[source]
        source: IpcError,
    },
    /// The link failed mid-call.
    #[error("control link to ddm failed")]
    Ipc(#[from] IpcError),
    /// The DDM refused or failed the request; its words.
    #[error("{0}")]
    Refused(String),
    /// The DDM answered something that does not fit the request.
    #[error("unexpected answer from ddm: {0}")]
    Unexpected(String),
}

/// A connection to the DDM's control socket.
#[derive(Debug)]
pub struct Ddm {
    chan: Channel,
    buf: RecvBuf,
}

impl Ddm {
    /// Connects and does the version handshake.
    pub fn connect(path: &Path) -> Result<Ddm, DdmError> {
        let chan = Channel::connect(path).map_err(|source| DdmError::Connect { path: path.to_owned(), source })?;
        let mut buf = RecvBuf::default();
        chan.handshake(&mut buf)?;
        Ok(Ddm { chan, buf })
    }

    /// Sends one request and returns the answer, with
    /// [`ControlResponse::Error`] turned into [`DdmError::Refused`].
    pub fn call(&mut self, req: &ControlRequest) -> Result<ControlResponse, DdmError> {
        self.call_fds(req, &[]).map(|(r, _)| r)
    }

    fn call_fds(
        &mut self,
        req: &ControlRequest,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(ControlResponse, Vec<std::os::fd::OwnedFd>), DdmError> {
        self.chan.send(req, &[], fds)?;
        let frame = self.chan.recv(&mut self.buf)?;
        match frame.decode::<ControlResponse>()? {
            ControlResponse::Error(msg) => Err(DdmError::Refused(msg)),
            other => Ok((other, frame.fds)),
        }
    }

    /// A direct connection to the driver of the device `file` was opened on
    /// (a file under the DDM's mount): libDriver's client proxy, with no
    /// FUSE in the path. Opening the file is the permission check (the
    /// kernel's, against mode, owner, groups and ACLs); the link gets the
    /// access `file` was opened with, and only for that device.
    pub fn connect_device(&mut self, file: &std::fs::File) -> Result<crate::driver::Client, DdmError> {
        use std::os::fd::AsFd;
        let (answer, mut fds) = self.call_fds(&ControlRequest::Direct, &[file.as_fd()])?;
        match answer {
            ControlResponse::Direct { device, access, ring, .. } => {
                if fds.is_empty() {
                    return Err(DdmError::Unexpected("Direct without a socket".into()));
                }
                let chan = Channel::from_fd(fds.remove(0))?;
                let unexpected = |e: &dyn std::error::Error| DdmError::Unexpected(crate::error_chain(e));
                match (ring, <[std::os::fd::OwnedFd; 2]>::try_from(fds)) {
                    (Some(spec), Ok([ring, bell])) => {
                        let ring = crate::ring::Ring::accept(ring, spec).map_err(|e| unexpected(&e))?;
                        let bell = crate::ring::Doorbell::from_fd(bell);
                        crate::driver::Client::with_ring(chan, device, access.access(), ring, bell)
                            .map_err(|e| unexpected(&e))
                    }
                    _ => crate::driver::Client::new(chan, device, access.access()).map_err(|e| unexpected(&e)),
                }
            }
            other => Err(DdmError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The device tree, parents before children.
    pub fn tree(&mut self) -> Result<Vec<NodeInfo>, DdmError> {
        match self.call(&ControlRequest::Tree)? {
            ControlResponse::Tree(nodes) => Ok(nodes),
            other => Err(DdmError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Every driver instance and its state.
    pub fn status(&mut self) -> Result<Vec<DriverStatus>, DdmError> {
        match self.call(&ControlRequest::Status)? {
            ControlResponse::Status(drivers) => Ok(drivers),
            other => Err(DdmError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The nodes that answer `query`, e.g. every device on the PCI bus:
    /// `find(&Query { bus: Some("pci".into()), ..Default::default() })`.
    pub fn find(&mut self, query: &Query) -> Result<Vec<NodeInfo>, DdmError> {
        match self.call(&ControlRequest::Find(query.clone()))? {
            ControlResponse::Tree(nodes) => Ok(nodes),
            other => Err(DdmError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Starts a new instance of driver `driver`, its devices on `bus`.
    pub fn load(&mut self, driver: &str, bus: Option<&str>, params: &[(String, String)]) -> Result<String, DdmError> {
        self.done(&ControlRequest::Load {
            driver: driver.to_owned(),
            bus: bus.map(str::to_owned),
            params: params.to_vec(),
        })
    }

    /// Unbinds the device at `path` from its driver, or stops the driver
    /// serving it.
    pub fn unload(&mut self, path: &str) -> Result<String, DdmError> {
        self.done(&ControlRequest::Unload { path: path.to_owned() })
    }

    /// Has bus drivers enumerate again (one bus, or all).
    pub fn rescan(&mut self, bus: Option<&str>) -> Result<String, DdmError> {
        self.done(&ControlRequest::Rescan { bus: bus.map(str::to_owned) })
    }

    /// Where the DDM is mounted, its version and pid.
    pub fn info(&mut self) -> Result<DdmInfo, DdmError> {
        match self.call(&ControlRequest::Info)? {
            ControlResponse::Info(info) => Ok(info),
            other => Err(DdmError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Restarts driver `driver` now (also out of quarantine). Needs root or
    /// the admin group.
    pub fn restart(&mut self, driver: &str) -> Result<String, DdmError> {
        self.done(&ControlRequest::Restart { driver: driver.to_owned() })
    }

    /// Injects `fault` into driver `driver`. Needs root or the admin group.
    pub fn inject(&mut self, driver: &str, fault: Fault) -> Result<String, DdmError> {
        self.done(&ControlRequest::Inject { driver: driver.to_owned(), fault })
    }

    fn done(&mut self, req: &ControlRequest) -> Result<String, DdmError> {
        match self.call(req)? {
            ControlResponse::Done(msg) => Ok(msg),
            other => Err(DdmError::Unexpected(format!("{other:?}"))),
        }
    }
}
