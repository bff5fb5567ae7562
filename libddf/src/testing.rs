//! A stand-in for the DDM, to test a driver process over the real protocol.
//!
//! A driver's integration tests start the real driver binary with
//! [`StandIn::spawn`], play the DDM's part of the libDriver protocol
//! ([`StandIn::start`], [`StandIn::call`], ...) and look at what the driver
//! says. No root, no mount, no `ddm` needed:
//!
//! ```no_run
//! use ddf::testing::StandIn;
//! // In a driver crate's tests: env!("CARGO_BIN_EXE_<name>").
//! let mut ddm = StandIn::spawn("target/debug/ddf-null".as_ref())?;
//! let _said = ddm.start("null", &[], Vec::new(), &[])?;
//! let handle = ddm.open(ddf::proto::DeviceId(0), ddf::proto::OpenFlags::READ)?.expect("open");
//! assert!(ddm.read(handle, 0, 16)?.expect("read").is_empty());
//! # Ok::<(), ddf::testing::StandInError>(())
//! ```
//!
//! Every receive has a deadline ([`RECV_TIMEOUT`]): a driver that stops
//! answering fails the test instead of hanging it. The driver is killed when
//! the stand-in is dropped.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::driver::SOCKET_FD_ENV;
use crate::ipc::{Channel, IpcError, RecvBuf};
use crate::proto::{
    Answer, Call, DdmToDriver, DeviceId, DmaGrant, DriverToDdm, Errno, Handle, OpenFlags, RequestId, StateEntry,
};

/// How long a receive waits for the driver.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to the driver under test.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// The driver could not be started.
    #[error("cannot start the driver")]
    Spawn(#[source] std::io::Error),
    /// The link failed (the driver died, or did not answer in time).
    #[error("link to the driver failed")]
    Ipc(#[from] IpcError),
    /// The driver said something the protocol does not allow here.
    #[error("unexpected message from the driver: {0}")]
    Unexpected(String),
}

/// One message a driver sent, with what came with it.
#[derive(Debug)]
pub struct Said {
    /// The message.
    pub msg: DriverToDdm,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its descriptors.
    pub fds: Vec<OwnedFd>,
}

/// What a call brought: the messages before the reply, the reply, and the
/// reply's payload.
pub type CallOutcome = (Vec<Said>, Result<Answer, Errno>, Vec<u8>);

/// A driver process and the DDM's end of its socket.
#[derive(Debug)]
pub struct StandIn {
    child: Child,
    chan: Channel,
    buf: RecvBuf,
    next_id: u64,
    next_seq: u64,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl StandIn {
    /// Starts the driver executable `exe` on a new socket and does the
    /// version handshake. Its log level is `warn` unless `RUST_LOG` is set.
    pub fn spawn(exe: &Path) -> Result<StandIn, StandInError> {
        let (ours, theirs) = Channel::pair()?;
        setsockopt(&ours.as_fd(), sockopt::ReceiveTimeout, &TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0))
            .map_err(|e| StandInError::Spawn(e.into()))?;
        let raw = theirs.as_fd().as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.env(SOCKET_FD_ENV, raw.to_string()).stdin(Stdio::null());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        crate::ipc::keep_in_child(&mut cmd, raw);
        let child = cmd.spawn().map_err(StandInError::Spawn)?;
        drop(theirs);
        let mut buf = RecvBuf::default();
        ours.handshake(&mut buf)?;
        Ok(StandIn { child, chan: ours, buf, next_id: 1, next_seq: 1 })
    }

    /// The driver's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the driver with `SIGKILL` (no `fini`, no goodbye) and waits.
    pub fn kill(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.kill()?;
        self.child.wait()
    }

    /// Waits for the driver to exit (after a `Shutdown`, say).
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }

    /// Sends a message.
    pub fn send(&mut self, msg: &DdmToDriver, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), StandInError> {
        Ok(self.chan.send(msg, payload, fds)?)
    }

    /// Receives one message.
    pub fn recv(&mut self) -> Result<Said, StandInError> {
        let f = self.chan.recv(&mut self.buf)?;
        let msg = f.decode::<DriverToDdm>()?;
        Ok(Said { msg, payload: f.payload.to_vec(), fds: f.fds })
    }

    /// Grants the driver DMA memory as the DDM does, before `Start`: `fd`
    /// is the memfd `grant` describes (a test may use an ordinary sealed
    /// memfd, [`crate::mem::SharedBuf`], with made-up addresses).
    pub fn grant_dma(&mut self, grant: DmaGrant, fd: BorrowedFd<'_>) -> Result<(), StandInError> {
        self.send(&DdmToDriver::Dma(grant), &[], &[fd])
    }

    /// Sends `Start` (instance name, parameters, saved state and its
    /// descriptors) and returns what the driver said until `Ready`.
    pub fn start(
        &mut self,
        instance: &str,
        params: &[(&str, &str)],
        state: Vec<StateEntry>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Vec<Said>, StandInError> {
        let params = params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.send(&DdmToDriver::Start { instance: instance.to_owned(), params, state }, &[], fds)?;
        let mut said = Vec::new();
        loop {
            let s = self.recv()?;
            if s.msg == DriverToDdm::Ready {
                return Ok(said);
            }
            said.push(s);
        }
    }

    /// Makes a call; returns what the driver said before the reply, the
    /// reply, and the reply's payload.
    pub fn call(&mut self, call: Call, payload: &[u8]) -> Result<CallOutcome, StandInError> {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.send(&DdmToDriver::Call { id, call }, payload, &[])?;
        let mut before = Vec::new();
        loop {
            let s = self.recv()?;
            match s.msg {
                DriverToDdm::Reply { id: got, result } if got == id => return Ok((before, result, s.payload)),
                DriverToDdm::Reply { id: got, .. } => {
                    return Err(StandInError::Unexpected(format!("reply to {} while waiting for {}", got.0, id.0)))
                }
                _ => before.push(s),
            }
        }
    }

    /// Sends `msg`, then a ping, and returns what the driver said before
    /// the pong: everything `msg` made it say.
    pub fn exchange(&mut self, msg: &DdmToDriver, payload: &[u8]) -> Result<Vec<Said>, StandInError> {
        self.send(msg, payload, &[])?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.send(&DdmToDriver::Ping { seq }, &[], &[])?;
        let mut said = Vec::new();
        loop {
            let s = self.recv()?;
            if s.msg == (DriverToDdm::Pong { seq }) {
                return Ok(said);
            }
            said.push(s);
        }
    }

    /// Opens `device`; the driver's handle, or its error.
    pub fn open(&mut self, device: DeviceId, flags: OpenFlags) -> Result<Result<Handle, Errno>, StandInError> {
        match self.call(Call::Open { device, flags }, &[])? {
            (_, Ok(Answer::Opened { handle } | Answer::OpenedBacked { handle }), _) => Ok(Ok(handle)),
            (_, Err(e), _) => Ok(Err(e)),
            (_, Ok(other), _) => Err(StandInError::Unexpected(format!("open answered {other:?}"))),
        }
    }

    /// Reads; the bytes, or the driver's error.
    pub fn read(&mut self, handle: Handle, offset: u64, len: u32) -> Result<Result<Vec<u8>, Errno>, StandInError> {
        match self.call(Call::Read { handle, offset, len, flags: OpenFlags::default() }, &[])? {
            (_, Ok(Answer::Data), data) => Ok(Ok(data)),
            (_, Err(e), _) => Ok(Err(e)),
            (_, Ok(other), _) => Err(StandInError::Unexpected(format!("read answered {other:?}"))),
        }
    }

    /// Writes; the count taken, or the driver's error.
    pub fn write(&mut self, handle: Handle, offset: u64, data: &[u8]) -> Result<Result<u32, Errno>, StandInError> {
        match self.call(Call::Write { handle, offset, flags: OpenFlags::default() }, data)? {
            (_, Ok(Answer::Written { len }), _) => Ok(Ok(len)),
            (_, Err(e), _) => Ok(Err(e)),
            (_, Ok(other), _) => Err(StandInError::Unexpected(format!("write answered {other:?}"))),
        }
    }
}
