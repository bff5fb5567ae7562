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
//!
//! [`Ddm::monitor`] turns a connection into a live stream of what happens
//! (`ddmctl monitor`):
//!
//! ```no_run
//! let ddm = ddf::ddm::Ddm::connect(ddf::ddm::DEFAULT_CONTROL_SOCKET.as_ref())?;
//! for event in ddm.monitor()? {
//!     println!("{:?}", event?.what);
//! }
//! # Ok::<(), ddf::ddm::DdmError>(())
//! ```

use std::path::{Path, PathBuf};

use crate::ipc::{Channel, IpcError, RecvBuf};
use crate::proto::{
    ControlRequest, ControlResponse, DdmInfo, DriverStatus, Fault, MonitorEvent, NodeDetail, NodeInfo, Query, Refusal,
};

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
    /// The caller may not do this (it needs root or the admin group); the
    /// DDM's words.
    #[error("{0}")]
    Denied(String),
    /// No such driver, node or device; the DDM's words.
    #[error("{0}")]
    NotFound(String),
    /// The DDM answered something that does not fit the request.
    #[error("unexpected answer from ddm: {0}")]
    Unexpected(String),
}

/// The DDM's hello and its reason for refusing a connection, as they wait
/// on a socket it closed.
fn door_refusal(chan: &Channel, buf: &mut RecvBuf) -> Option<DdmError> {
    chan.try_recv(buf).ok()?.decode::<crate::proto::Hello>().ok()?;
    refusal(chan.try_recv(buf).ok()?.decode::<ControlResponse>().ok()?).err()
}

/// A connection to the DDM's control socket. The DDM closes a connection
/// that stays idle for long (its `--control-timeout`); the next call then
/// connects again by itself.
#[derive(Debug)]
pub struct Ddm {
    chan: Channel,
    buf: RecvBuf,
    path: PathBuf,
}

impl Ddm {
    /// Connects and does the version handshake.
    pub fn connect(path: &Path) -> Result<Ddm, DdmError> {
        let mut buf = RecvBuf::default();
        let chan = Ddm::open(path, &mut buf)?;
        Ok(Ddm { chan, buf, path: path.to_owned() })
    }

    fn open(path: &Path, buf: &mut RecvBuf) -> Result<Channel, DdmError> {
        let chan = Channel::connect(path).map_err(|source| DdmError::Connect { path: path.to_owned(), source })?;
        match chan.handshake(buf) {
            Ok(()) => Ok(chan),
            // Refused at the door (too many connections): the DDM sent its
            // hello and its reason, and closed before ours arrived.
            Err(IpcError::Closed) => Err(door_refusal(&chan, buf).unwrap_or(DdmError::Ipc(IpcError::Closed))),
            Err(e) => Err(e.into()),
        }
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
        match self.chan.send(req, &[], fds) {
            // The DDM refused the connection (its reason waits), or closed
            // it when it was idle: then the request was not taken, so it
            // is safe to send it again on a new one.
            Err(IpcError::Closed) => {
                if let Ok(f) = self.chan.try_recv(&mut self.buf) {
                    if let Ok(ControlResponse::Error(why)) = f.decode::<ControlResponse>() {
                        return Err(DdmError::Refused(why));
                    }
                }
                self.chan = Ddm::open(&self.path, &mut self.buf)?;
                self.chan.send(req, &[], fds)?;
            }
            other => other?,
        }
        let frame = self.chan.recv(&mut self.buf)?;
        let answer = refusal(frame.decode::<ControlResponse>()?)?;
        Ok((answer, frame.fds))
    }

    /// Turns this connection into a live stream of what happens in the DDM
    /// (devices added, bound, removed; drivers started, died, restarted;
    /// permissions changed), from now on. For everyone. The stream ends
    /// when ddm does; a caller that reads too slowly loses events and is
    /// told how many ([`crate::proto::Happened::Lost`]).
    pub fn monitor(mut self) -> Result<EventStream, DdmError> {
        match self.call(&ControlRequest::Monitor)? {
            ControlResponse::Done(_) => Ok(EventStream { chan: self.chan, buf: self.buf }),
            other => Err(DdmError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Everything the DDM knows of the node at `path` (below the mount).
    pub fn node(&mut self, path: &str) -> Result<NodeDetail, DdmError> {
        match self.call(&ControlRequest::Node { path: path.to_owned() })? {
            ControlResponse::Node(detail) => Ok(detail),
            other => Err(DdmError::Unexpected(format!("{other:?}"))),
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
        let first = self.call(&ControlRequest::Tree)?;
        self.nodes(first)
    }

    /// The nodes of an answer to `Tree` or `Find`: the parts a big one came
    /// in, up to its last (see [`ControlResponse::TreePart`]).
    fn nodes(&mut self, mut answer: ControlResponse) -> Result<Vec<NodeInfo>, DdmError> {
        let mut all = Vec::new();
        loop {
            match answer {
                ControlResponse::Tree(nodes) if all.is_empty() => return Ok(nodes),
                ControlResponse::Tree(nodes) => {
                    all.extend(nodes);
                    return Ok(all);
                }
                ControlResponse::TreePart(nodes) => all.extend(nodes),
                other => return Err(DdmError::Unexpected(format!("{other:?}"))),
            }
            let frame = self.chan.recv(&mut self.buf)?;
            answer = refusal(frame.decode::<ControlResponse>()?)?;
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
        let first = self.call(&ControlRequest::Find(query.clone()))?;
        self.nodes(first)
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

/// The DDM's refusals as errors; any other answer as it is.
fn refusal(answer: ControlResponse) -> Result<ControlResponse, DdmError> {
    match answer {
        ControlResponse::Error(msg) => Err(DdmError::Refused(msg)),
        ControlResponse::Refused { why: Refusal::Denied, message } => Err(DdmError::Denied(message)),
        ControlResponse::Refused { why: Refusal::NotFound, message } => Err(DdmError::NotFound(message)),
        other => Ok(other),
    }
}

/// A live stream of the DDM's events ([`Ddm::monitor`]); an iterator that
/// ends when ddm closes the connection.
#[derive(Debug)]
pub struct EventStream {
    chan: Channel,
    buf: RecvBuf,
}

impl EventStream {
    /// Waits for the next event; `Ok(None)` when ddm closed the stream.
    pub fn next_event(&mut self) -> Result<Option<MonitorEvent>, DdmError> {
        let frame = match self.chan.recv(&mut self.buf) {
            Ok(f) => f,
            Err(IpcError::Closed) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match refusal(frame.decode::<ControlResponse>()?)? {
            ControlResponse::Event(e) => Ok(Some(e)),
            other => Err(DdmError::Unexpected(format!("{other:?}"))),
        }
    }
}

impl Iterator for EventStream {
    type Item = Result<MonitorEvent, DdmError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}
