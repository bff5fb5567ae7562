//! What a driver can do wrong, and what can keep one from starting.
//!
//! A [`ProtocolError`] ends the driver's incarnation (it is killed and
//! restarted like a crash); a [`SpawnError`] counts as a death at start.
//! Both are clonable values, so that they can be kept as the reason of a
//! death and shown in `user.ddf.last_exit`.

use std::path::PathBuf;
use std::sync::Arc;

use ddf::proto::{BusId, DeviceId, RequestId};

/// How a driver broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The version handshake failed.
    #[error("handshake: {0}")]
    Handshake(String),
    /// It said it cannot start after it said it is ready.
    #[error("a start failure after Ready")]
    StartFailedLate,
    /// `Start` could not be sent.
    #[error("start: {0}")]
    Start(String),
    /// A frame that is not a frame (too large, truncated, ...).
    #[error("bad frame: {0}")]
    Frame(String),
    /// A frame whose message does not decode.
    #[error("bad message: {0}")]
    Message(String),
    /// More unsolicited messages than the DDM takes.
    #[error("flood: more than {rate} unsolicited messages a second")]
    Flood {
        /// Messages a second allowed after the burst.
        rate: u32,
    },
    /// Descriptors with a message that takes none.
    #[error("{0} descriptors sent with a message that takes none")]
    StrayFds(usize),
    /// The state store would grow past its limit.
    #[error("state store over {0} bytes")]
    StateBytes(usize),
    /// The state store would hold too many keys.
    #[error("state store over {0} keys")]
    StateKeys(usize),
    /// Too many counters.
    #[error("more than {0} counters")]
    Counters(usize),
    /// A counter name too long.
    #[error("counter name over {0} bytes")]
    CounterName(usize),
    /// A reply to no request in flight.
    #[error("reply to unknown request {}", .0 .0)]
    UnknownRequest(RequestId),
    /// A read answered with more bytes than asked for.
    #[error("read #{} answered {got} bytes, {asked} asked", .id.0)]
    ReadTooLong {
        /// The request.
        id: RequestId,
        /// Bytes answered.
        got: usize,
        /// Bytes asked.
        asked: u32,
    },
    /// A write claiming more bytes written than it brought.
    #[error("write #{} claims {claimed} bytes written of {brought}", .id.0)]
    WriteTooLong {
        /// The request.
        id: RequestId,
        /// Bytes claimed.
        claimed: u32,
        /// Bytes brought.
        brought: u32,
    },
    /// An ioctl answered with more output than the caller takes.
    #[error("ioctl #{} answered {got} bytes, {asked} asked", .id.0)]
    IoctlTooLong {
        /// The request.
        id: RequestId,
        /// Bytes answered.
        got: usize,
        /// Bytes asked.
        asked: u32,
    },
    /// An answer of the wrong kind for its request.
    #[error("answer {answer} does not fit {kind} request {}", .id.0)]
    Mismatch {
        /// The request.
        id: RequestId,
        /// What the request was.
        kind: &'static str,
        /// What came.
        answer: String,
    },
    /// A bus number registered twice.
    #[error("bus number {0} registered twice")]
    BusTwice(BusId),
    /// A bus that names itself as its parent.
    #[error("bus {0} claims to be its own parent")]
    OwnParent(BusId),
    /// A device on a bus the driver never made.
    #[error("device on unknown bus {0}")]
    UnknownBus(BusId),
    /// A device number registered twice.
    #[error("device number {0} registered twice")]
    DeviceTwice(DeviceId),
    /// More devices and buses than one instance may have (its manifest's
    /// `max_devices`).
    #[error("more than {0} devices and buses (the manifest's max_devices)")]
    TooManyDevices(usize),
    /// What the driver left in the ring is no answer to the call there.
    #[error("ring: {0}")]
    Ring(String),
    /// More registrations refused (bad names, metadata that does not fit)
    /// than one incarnation may earn.
    #[error("more than {0} registrations refused")]
    Refusals(u64),
    /// A bound driver claims a node that is not bound to it.
    #[error("serves {0:?}, which is not bound to it")]
    NotBound(String),
}

/// Why a driver process could not be started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpawnError {
    /// The socket pair for its link.
    #[error("socketpair")]
    Socket(#[source] Arc<ddf::ipc::IpcError>),
    /// Preparing its sandbox.
    #[error("sandbox")]
    Sandbox(#[source] Arc<crate::sandbox::SandboxError>),
    /// Starting its executable.
    #[error("cannot start {}", .0.display())]
    Exec(PathBuf, #[source] Arc<std::io::Error>),
    /// ddm is shutting down.
    #[error("ddm is stopping")]
    Stopping,
    /// The DMA memory its manifest asks for cannot be had.
    #[error("DMA memory")]
    Dma(#[source] Arc<crate::dma::DmaError>),
}
