//! The wire messages of ddf, all in one place.
//!
//! Two links use them:
//! - **DDM and driver** (libDriver and libDDM): [`DdmToDriver`] one way,
//!   [`DriverToDdm`] the other, over the socket a driver inherits.
//! - **Control** (`ddmctl` and programs using [`crate::ddm`]):
//!   [`ControlRequest`] and [`ControlResponse`] over the DDM's control socket.
//!
//! Every link starts with a [`Hello`] each way ([`crate::ipc::Channel::handshake`]).
//! The encoding is postcard: enum variants are numbered by their position,
//! integers are varints. **Variants are only ever appended**, and any change
//! to an existing message bumps [`PROTOCOL_VERSION`]; the fixed-byte tests
//! here and in [`crate::ipc`] fail when the format moves by accident. The
//! enums are not `#[non_exhaustive]`: the version handshake is what guards
//! growth, and the DDM matches them exhaustively so that a new message cannot
//! go unhandled.
//!
//! Bulk data never sits in these types: it is the frame's payload (see
//! [`crate::ipc`]), and the variants that carry one say so.

use serde::{Deserialize, Serialize};

/// Magic bytes that open every [`Hello`].
pub const PROTOCOL_MAGIC: [u8; 4] = *b"DDF\x01";

/// Version of the messages in this module.
pub const PROTOCOL_VERSION: u32 = 3;

/// The first message each way on every link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PROTOCOL_MAGIC`].
    pub magic: [u8; 4],
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
}

impl Hello {
    /// Our own hello.
    pub fn ours() -> Hello {
        Hello { magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION }
    }
}

/// A positive `errno` value as the file API knows it (`libc::EIO`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Errno(pub i32);

impl Errno {
    /// I/O error: the answer when a driver died or answered nonsense.
    pub const EIO: Errno = Errno(libc::EIO);
    /// Invalid argument: the default answer to read and write.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// Not a typewriter: the default answer to ioctl.
    pub const ENOTTY: Errno = Errno(libc::ENOTTY);
    /// No such device or address: the default answer to open.
    pub const ENXIO: Errno = Errno(libc::ENXIO);
    /// No such device.
    pub const ENODEV: Errno = Errno(libc::ENODEV);
    /// Try again: a non-blocking call that would block.
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    /// Interrupted: the caller was signalled and the request abandoned.
    pub const EINTR: Errno = Errno(libc::EINTR);
    /// Bad file handle.
    pub const EBADF: Errno = Errno(libc::EBADF);
    /// No space left on device.
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(libc::EPERM);
    /// Function not implemented.
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    /// No buffer space: a driver's queue is full.
    pub const ENOBUFS: Errno = Errno(libc::ENOBUFS);
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", std::io::Error::from_raw_os_error(self.0), self.0)
    }
}

impl std::error::Error for Errno {}

/// Names one request on one DDM-driver link; unique while it is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Defines an id newtype over an integer: its own type, so that a device
/// number cannot be passed where a handle is wanted. On the wire it is the
/// integer (serde `transparent`), so the encoding does not change.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A device as the driver numbers it (its own index, stable for the life
    /// of the driver instance).
    DeviceId(u32)
);

id_type!(
    /// A driver's name for one open of one of its devices.
    Handle(u64)
);

id_type!(
    /// A bus as its driver numbers it.
    BusId(u32)
);

/// How a file was opened: `O_RDONLY`, `O_WRONLY` or `O_RDWR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read only.
    Read,
    /// Write only.
    Write,
    /// Read and write.
    ReadWrite,
}

impl Access {
    /// Whether this access allows reading.
    pub fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    /// Whether this access allows writing.
    pub fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }

    /// Whether `wanted` asks for no more than this access grants.
    pub fn permits(self, wanted: Access) -> bool {
        (!wanted.reads() || self.reads()) && (!wanted.writes() || self.writes())
    }

    /// The `O_ACCMODE` bits of this access.
    pub fn bits(self) -> i32 {
        match self {
            Access::Read => libc::O_RDONLY,
            Access::Write => libc::O_WRONLY,
            Access::ReadWrite => libc::O_RDWR,
        }
    }
}

/// `open(2)` flags (`O_*`) as they travel with a call: the access mode and
/// the status flags (`O_NONBLOCK`, ...). On the wire it is the `i32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpenFlags(pub i32);

impl OpenFlags {
    /// Read only, nothing else.
    pub const READ: OpenFlags = OpenFlags(libc::O_RDONLY);
    /// Write only, nothing else.
    pub const WRITE: OpenFlags = OpenFlags(libc::O_WRONLY);
    /// Read and write, nothing else.
    pub const READ_WRITE: OpenFlags = OpenFlags(libc::O_RDWR);

    /// The flags of an open with `access` and nothing else.
    pub fn from_access(access: Access) -> OpenFlags {
        OpenFlags(access.bits())
    }

    /// The access mode. The fourth value of `O_ACCMODE` (3, Linux's "ioctl
    /// only" mode) counts as read and write, as the kernel checks it.
    pub fn access(self) -> Access {
        match self.0 & libc::O_ACCMODE {
            libc::O_RDONLY => Access::Read,
            libc::O_WRONLY => Access::Write,
            _ => Access::ReadWrite,
        }
    }

    /// Whether the caller asked not to block (`O_NONBLOCK`).
    pub fn nonblocking(self) -> bool {
        self.0 & libc::O_NONBLOCK != 0
    }

    /// The same flags with `O_NONBLOCK` set or cleared.
    pub fn with_nonblocking(self, on: bool) -> OpenFlags {
        if on {
            OpenFlags(self.0 | libc::O_NONBLOCK)
        } else {
            OpenFlags(self.0 & !libc::O_NONBLOCK)
        }
    }
}

/// How a device file behaves (paper §3.1: class is metadata, but it decides
/// the file's shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    /// A non-seekable stream: no size, no offsets, direct I/O.
    Char,
    /// Has a size; reads and writes at offsets.
    Block,
}

impl DeviceClass {
    /// The lower-case name used in the CLI, xattrs and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Char => "char",
            DeviceClass::Block => "block",
        }
    }
}

/// A driver's description of one of its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// The driver's number for it.
    pub device: DeviceId,
    /// File name on the bus (`null`, `keyboard0`); no `/`, not `.` or `..`.
    pub name: String,
    /// Char or block.
    pub class: DeviceClass,
    /// Size in bytes (block devices; 0 for char).
    pub size: u64,
    /// Which of this driver's buses it sits on; `None`: where the driver is
    /// attached (the null bus, for drivers started by ddm).
    pub bus: Option<BusId>,
    /// Its address on the bus or its serial: its stable identity (keys its
    /// permissions, shows as `user.ddf.address`).
    pub address: Option<String>,
    /// Identifiers and resources (`vendor`, `device`, `class`, `irq`, ...):
    /// what driver manifests match on, shown as `user.ddf.<key>`.
    pub meta: Vec<(String, String)>,
    /// Offer the device to the plugin manager: a driver whose manifest
    /// matches it is started (or handed the device) and serves the node
    /// from then on. Until then this driver serves it.
    pub offer: bool,
    /// For a driver bound to a device ([`DdmToDriver::Bind`]): the path of
    /// the node it now serves (the name must be that node's).
    pub serves: Option<String>,
}

impl DeviceSpec {
    /// A plain device on the driver's attach point.
    pub fn new(device: DeviceId, name: &str, class: DeviceClass, size: u64) -> DeviceSpec {
        DeviceSpec {
            device,
            name: name.to_owned(),
            class,
            size,
            bus: None,
            address: None,
            meta: Vec::new(),
            offer: false,
            serves: None,
        }
    }
}

/// A device the DDM hands to a driver whose manifest matched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundDevice {
    /// The node's path below the mount (`vbus/vdev0`).
    pub path: String,
    /// The node's name.
    pub name: String,
    /// The kind of bus it sits on (`pci`, `vbus`).
    pub bus_kind: String,
    /// Its address on the bus.
    pub address: Option<String>,
    /// Its identifiers and resources.
    pub meta: Vec<(String, String)>,
}

/// The DDM's messages to a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DdmToDriver {
    /// Sent once after the handshake (and after the [`DdmToDriver::Dma`]
    /// grant, if there is one): who the driver is, its parameters, and the
    /// state its previous incarnation left. The frame carries the state's
    /// descriptors, in the order of `state`, each entry taking
    /// [`StateEntry::fds`] of them.
    Start {
        /// The instance name (from its manifest).
        instance: String,
        /// `key=value` parameters from the manifest or the command line.
        params: Vec<(String, String)>,
        /// State left with the DDM by earlier incarnations.
        state: Vec<StateEntry>,
    },
    /// A client's call, to be answered by exactly one [`DriverToDdm::Reply`]
    /// with the same id.
    Call {
        /// The request id.
        id: RequestId,
        /// What is asked.
        call: Call,
    },
    /// The caller of request `id` gave up (it was signalled): the driver
    /// should drop it. The request is still answered exactly once.
    Cancel {
        /// The abandoned request.
        id: RequestId,
    },
    /// Liveness check; answered by [`DriverToDdm::Pong`] with the same `seq`.
    Ping {
        /// Sequence number to echo.
        seq: u64,
    },
    /// Finish (`fini`) and exit.
    Shutdown,
    /// Misbehave on purpose (fault injection, `ddmctl inject`): the runtime
    /// does it, whatever the driver.
    Inject(Fault),
    /// Serve a direct client (libDriver's client proxy, no FUSE in the
    /// path) on the socket that comes with this frame. The DDM checked the
    /// client's right to open `device` with `access` (`O_RDONLY`,
    /// `O_WRONLY` or `O_RDWR`); the runtime holds the client to it. The
    /// client speaks [`DdmToDriver::Call`] and gets [`DriverToDdm::Reply`],
    /// after a [`Hello`] each way.
    Attach {
        /// The one device the client may open.
        device: DeviceId,
        /// The access it may open it with.
        access: OpenFlags,
        /// The shape of the client's ring, when the frame also carries one
        /// (after the socket: the ring's memfd and its doorbell), as
        /// [`DdmToDriver::Ring`].
        ring: Option<RingSpec>,
    },
    /// The plugin manager hands this driver a device its manifest matches:
    /// it should register a device with [`DeviceSpec::serves`] set to the
    /// path, and serve it.
    Bind(BoundDevice),
    /// The device at `path` is gone (or unloaded): stop serving it.
    Unbind {
        /// The node's path.
        path: String,
    },
    /// Enumerate the bus again: report devices that appeared, remove those
    /// that went (bus drivers).
    Rescan,
    /// The fast path: calls may come in this shared-memory ring too
    /// ([`crate::ring`]). The frame carries its memfd and its doorbell (an
    /// eventfd), in that order.
    Ring(RingSpec),
    /// The DMA memory the driver's manifest asks for (`[dma]`), with its
    /// memfd as the frame's one descriptor. Sent only to a driver whose
    /// manifest asks, after the handshake and **before** [`DdmToDriver::Start`],
    /// to every incarnation (the same memory each time). Before `Start`
    /// because the runtime must have it before it builds the driver, and a
    /// runtime that is not waiting for a grant must never be left waiting
    /// for one: it reads until `Start`, keeping a grant that comes first.
    Dma(DmaGrant),
}

/// The shape of a ring ([`crate::ring`]): how many slots of how many bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingSpec {
    /// Slots.
    pub slots: u32,
    /// Bytes per slot, control words included.
    pub slot_size: u32,
}

/// DMA memory the DDM allocated, locked and resolved for a driver: a memfd
/// of [`DmaGrant::len`] bytes made of pages of [`DmaGrant::page_size`]
/// bytes, each physically contiguous, at the physical addresses in
/// [`DmaGrant::pages`] (see [`crate::mem::DmaRegion`] for what is promised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaGrant {
    /// Bytes of the region: the memfd's size, `pages.len() * page_size`.
    pub len: u64,
    /// The size of its pages: a huge page size (2 MiB) or the base page
    /// size (4 KiB) when the manifest accepts page-sized segments.
    pub page_size: u64,
    /// The physical (bus) address of each page, in the region's order.
    pub pages: Vec<u64>,
    /// Whether the DDM holds the pages with a long-term pin, so that the
    /// kernel can neither swap nor migrate them (`false`: locked only).
    pub pinned: bool,
}

/// Most pages one [`DmaGrant`] may name (it must fit in one frame).
pub const DMA_PAGES_MAX: usize = 16_384;

/// A fault the driver runtime injects into itself on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// `panic!` in the runtime.
    Panic,
    /// `abort()`.
    Abort,
    /// Raise `SIGSEGV`.
    Segv,
    /// Stop answering anything, heartbeats included, forever.
    Hang,
    /// Send a frame that does not decode.
    Garbage,
    /// Exit with this status, unasked.
    Exit(i32),
    /// Send unsolicited messages as fast as possible.
    Flood,
    /// Answer a request that was never made.
    StrayReply,
    /// Answer the next call that comes by the ring with garbage in its slot
    /// (if none comes within 2 s, the next answer by the socket: a garbage
    /// frame).
    RingGarbage,
    /// Answer the next call that comes by the ring with a reply to a
    /// request never made (or, after 2 s, by the socket: the same).
    RingStray,
    /// Answer the next call that comes by the ring with a length beyond its
    /// slot (or, after 2 s, by the socket: a header longer than its frame).
    RingOverlong,
    /// Die in the middle of the next answer in a ring slot (or, after 2 s,
    /// of the next answer).
    RingDeath,
    /// Make system calls no driver may make (open a socket, `ptrace`,
    /// `execve`): the system call filter kills it with `SIGSYS`.
    ForbiddenSyscall,
}

impl Fault {
    /// Parses the names `ddmctl inject` takes.
    pub fn parse(s: &str) -> Option<Fault> {
        Some(match s {
            "panic" | "crash" => Fault::Panic,
            "abort" => Fault::Abort,
            "segv" => Fault::Segv,
            "hang" => Fault::Hang,
            "garbage" => Fault::Garbage,
            "exit" => Fault::Exit(0),
            "flood" => Fault::Flood,
            "stray-reply" => Fault::StrayReply,
            "ring-garbage" => Fault::RingGarbage,
            "ring-stray" => Fault::RingStray,
            "ring-overlong" => Fault::RingOverlong,
            "ring-death" => Fault::RingDeath,
            "forbidden-syscall" => Fault::ForbiddenSyscall,
            other => Fault::Exit(other.strip_prefix("exit:")?.parse().ok()?),
        })
    }
}

/// One piece of state a driver left with the DDM (see
/// [`DriverToDdm::SaveState`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// The driver's name for it.
    pub key: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// How many descriptors belong to it.
    pub fds: u8,
}

/// A libDriver operation (paper §3.4, plus poll).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// Open `device`; `flags` are the `open(2)` flags.
    Open {
        /// Which device.
        device: DeviceId,
        /// `O_*` flags.
        flags: OpenFlags,
    },
    /// Close a handle.
    Close {
        /// The handle from [`Answer::Opened`].
        handle: Handle,
    },
    /// Read up to `len` bytes at `offset` (ignored by char devices).
    Read {
        /// The handle.
        handle: Handle,
        /// Byte offset.
        offset: u64,
        /// Most bytes wanted (at most [`crate::ipc::PAYLOAD_MAX`]).
        len: u32,
        /// The file's `O_*` flags now (`O_NONBLOCK` may have changed since open).
        flags: OpenFlags,
    },
    /// Write the frame's payload at `offset`.
    Write {
        /// The handle.
        handle: Handle,
        /// Byte offset.
        offset: u64,
        /// The file's `O_*` flags now.
        flags: OpenFlags,
    },
    /// Device control; the frame's payload is the input data.
    Ioctl {
        /// The handle.
        handle: Handle,
        /// The command number.
        cmd: u32,
        /// Most bytes of output the caller takes.
        out_len: u32,
    },
    /// Which of `events` (`POLLIN`, `POLLOUT`, ...) are ready now. With
    /// `notify`, the driver sends [`DriverToDdm::PollWake`] for this handle
    /// when readiness changes later.
    Poll {
        /// The handle.
        handle: Handle,
        /// Events of interest.
        events: u32,
        /// Whether a wake-up is wanted.
        notify: bool,
    },
    /// Read into several buffers (readv): one run of `lens` bytes starting at
    /// `offset`.
    Scatter {
        /// The handle.
        handle: Handle,
        /// Byte offset.
        offset: u64,
        /// Buffer sizes.
        lens: Vec<u32>,
    },
    /// Write several buffers (writev); the payload is their concatenation.
    Gather {
        /// The handle.
        handle: Handle,
        /// Byte offset.
        offset: u64,
        /// Buffer sizes, summing to the payload length.
        lens: Vec<u32>,
    },
}

/// A driver's messages to the DDM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriverToDdm {
    /// A device to show under the mount (libDDM register).
    AddDevice(DeviceSpec),
    /// A device that is gone.
    RemoveDevice {
        /// The driver's number for it.
        device: DeviceId,
    },
    /// `init` finished; the driver takes calls now.
    Ready,
    /// The answer to [`DdmToDriver::Call`] `id`.
    Reply {
        /// The request answered.
        id: RequestId,
        /// The outcome; some carry a payload.
        result: Result<Answer, Errno>,
    },
    /// Answer to [`DdmToDriver::Ping`].
    Pong {
        /// The echoed sequence number.
        seq: u64,
    },
    /// Readiness of `handle` changed (after a [`Call::Poll`] with `notify`).
    PollWake {
        /// The handle.
        handle: Handle,
    },
    /// Keep this state for the next incarnation (the state store): the
    /// payload is its bytes, the frame's descriptors (a memfd, ...) go with
    /// it. It replaces any state under the same key. The DDM handles a
    /// driver's messages in order, so state saved before a reply is stored
    /// before the client sees that reply.
    SaveState {
        /// The driver's name for it.
        key: String,
    },
    /// Forget the state under `key`.
    DropState {
        /// The key.
        key: String,
    },
    /// The driver's own counters (`lost_bytes`, ...), shown by `ddmctl
    /// status`. Each replaces the earlier value under its name; at most
    /// [`COUNTERS_MAX`] names are kept.
    Counters(Vec<(String, u64)>),
    /// A bus (a directory) this driver enumerates.
    AddBus {
        /// The driver's number for it.
        bus: BusId,
        /// Directory name.
        name: String,
        /// The kind of bus (`pci`, `vbus`): what manifests match on.
        kind: String,
        /// The bus it sits on; `None`: the driver's attach point.
        parent: Option<BusId>,
    },
    /// A bus that is gone, with everything on it.
    RemoveBus {
        /// The driver's number for it.
        bus: BusId,
    },
    /// The driver's system call filter refused a call (the runtime's
    /// `SIGSYS` handler sends it, then the driver dies of `SIGSYS`).
    SandboxViolation {
        /// The call's number (`si_syscall`).
        syscall: i32,
        /// Its architecture (`si_arch`, an `AUDIT_ARCH_*` value).
        arch: u32,
    },
    /// The driver cannot start: its constructor or its `init` refused (bad
    /// parameters, a device it cannot open). The runtime sends it before
    /// Ready, then exits; the DDM shows it as how the driver ended.
    StartFailed {
        /// Why, in the driver's words (at most [`START_FAILED_MAX`] bytes).
        why: String,
    },
}

/// The most bytes of a [`DriverToDdm::StartFailed`] reason the DDM keeps.
pub const START_FAILED_MAX: usize = 1024;

/// Most counter names the DDM keeps for one driver.
pub const COUNTERS_MAX: usize = 32;

/// A successful outcome of a [`Call`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// From [`Call::Open`].
    Opened {
        /// The driver's handle for later calls.
        handle: Handle,
    },
    /// From [`Call::Close`].
    Closed,
    /// From [`Call::Read`] and [`Call::Scatter`]: the bytes are the payload.
    Data,
    /// From [`Call::Write`] and [`Call::Gather`].
    Written {
        /// Bytes taken.
        len: u32,
    },
    /// From [`Call::Ioctl`]: the return value; output bytes are the payload.
    Ioctl {
        /// What `ioctl(2)` returns.
        result: i32,
    },
    /// From [`Call::Poll`].
    Polled {
        /// Ready events.
        revents: u32,
    },
    /// From [`Call::Open`], with one descriptor in the frame: the file that
    /// holds the device's bytes. The DDM hands it to the kernel (FUSE
    /// passthrough) and reads and writes of this open go straight to it,
    /// without the DDM or the driver.
    OpenedBacked {
        /// The driver's handle (still closed when the file is).
        handle: Handle,
    },
}

/// A request on the control socket. `Tree`, `Status`, `Info`, `Find`,
/// `Monitor` and `Node` are for everyone; the others change something and
/// need root or the DDM's admin group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// The device tree.
    Tree,
    /// Every driver instance.
    Status,
    /// Where the DDM is mounted and what it runs.
    Info,
    /// Restart a driver now (also out of the `failed` state).
    Restart {
        /// Driver instance name.
        driver: String,
    },
    /// Make a driver misbehave (fault injection).
    Inject {
        /// Driver instance name.
        driver: String,
        /// What to do.
        fault: Fault,
    },
    /// The nodes that answer a query (the paper's "drivers attached to the
    /// PCI bus"), in tree order.
    Find(Query),
    /// Start a new instance of a known driver (root or admin group).
    Load {
        /// The driver's manifest name.
        driver: String,
        /// The bus its devices go on (a path below the mount); `None`: the
        /// null bus.
        bus: Option<String>,
        /// Extra `key=value` parameters.
        params: Vec<(String, String)>,
    },
    /// Unbind a bound device from its driver, or stop the driver serving a
    /// node (root or admin group).
    Unload {
        /// The node, as a path below the mount.
        path: String,
    },
    /// Have bus drivers enumerate again and offer unbound devices to the
    /// manifests again (root or admin group).
    Rescan {
        /// One bus (a path below the mount); `None`: all.
        bus: Option<String>,
    },
    /// A direct connection to the driver of a device (libDriver without
    /// FUSE). The frame carries, as proof of the caller's right, a
    /// descriptor of the device file that the caller opened on the mount:
    /// the kernel already checked it, and its access mode is what is granted.
    Direct,
    /// A live stream of what happens (`ddmctl monitor`), for everyone. The
    /// DDM answers with [`ControlResponse::Event`] frames, one per event,
    /// until the caller closes the connection; a caller that falls behind
    /// loses events and is told how many ([`Happened::Lost`]).
    Monitor,
    /// Everything the DDM knows of one node (`ddmctl node`), for everyone.
    Node {
        /// The node, as a path below the mount.
        path: String,
    },
}

/// A search of the tree; every field given must match (globs where noted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// The kind of bus a node sits on (`pci`), or the bus's path.
    pub bus: Option<String>,
    /// `char`, `block`, or `bus`.
    pub class: Option<String>,
    /// A glob on the node's name (`key*`).
    pub name: Option<String>,
    /// A glob on the serving driver's name.
    pub driver: Option<String>,
    /// The state (`running`, `failed`, `unbound`, ...).
    pub state: Option<String>,
}

/// Answer to [`ControlRequest::Info`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdmInfo {
    /// The mount point.
    pub mountpoint: String,
    /// ddm's version.
    pub version: String,
    /// ddm's process id.
    pub pid: u32,
}

/// The DDM's answer on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// Answer to [`ControlRequest::Tree`], parents before children.
    Tree(Vec<NodeInfo>),
    /// Answer to [`ControlRequest::Status`].
    Status(Vec<DriverStatus>),
    /// The request failed; the text says why and what to do.
    Error(String),
    /// Answer to [`ControlRequest::Info`].
    Info(DdmInfo),
    /// A change was made; the text says what.
    Done(String),
    /// Answer to [`ControlRequest::Direct`]; the frame carries the socket
    /// to the driver.
    Direct {
        /// The driver's number for the device.
        device: DeviceId,
        /// The access granted (`O_RDONLY`, `O_WRONLY` or `O_RDWR`).
        access: OpenFlags,
        /// The driver instance.
        driver: String,
        /// The shape of the ring shared with the driver, when the frame also
        /// carries one (after the socket: its memfd and the doorbell).
        ring: Option<RingSpec>,
    },
    /// One event of the stream that [`ControlRequest::Monitor`] asked for.
    Event(MonitorEvent),
    /// Answer to [`ControlRequest::Node`].
    Node(NodeDetail),
    /// The request was refused for a reason a script may act on; the text
    /// says why and what to do.
    Refused {
        /// What kind of refusal.
        why: Refusal,
        /// The DDM's words.
        message: String,
    },
    /// Part of an answer to [`ControlRequest::Tree`] or
    /// [`ControlRequest::Find`] too large for one frame (a bus of 100,000
    /// devices): more parts follow, and the answer ends with a
    /// [`ControlResponse::Tree`] that holds the last nodes. The nodes keep
    /// their order (parents before children) across the parts.
    TreePart(Vec<NodeInfo>),
}

/// One node of the tree as the control socket shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Path below the mount root, `""` for the root (the null bus).
    pub path: String,
    /// `None` for a bus, the class for a device.
    pub class: Option<DeviceClass>,
    /// The driver instance serving it.
    pub driver: Option<String>,
    /// That driver's process id, while it runs.
    pub pid: Option<u32>,
    /// The driver's state.
    pub state: Option<DriverState>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// The kind of bus the node sits on, for devices a bus driver reported.
    pub bus: Option<String>,
    /// Its address on that bus.
    pub address: Option<String>,
    /// Its identifiers and resources.
    pub meta: Vec<(String, String)>,
    /// The state as shown to people: the driver's state, or
    /// `unbound: <why>` for a device no driver took.
    pub state_text: Option<String>,
}

/// The life of a driver instance as the DDM sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverState {
    /// Process started, not yet ready.
    Starting,
    /// Serving calls.
    Running,
    /// Died; a new incarnation is on its way.
    Restarting,
    /// Gave up on it (crash loop); `ddmctl restart` retries.
    Failed,
    /// Stopped on purpose.
    Stopped,
}

impl DriverState {
    /// The lower-case name used in the CLI and xattrs.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverState::Starting => "starting",
            DriverState::Running => "running",
            DriverState::Restarting => "restarting",
            DriverState::Failed => "failed",
            DriverState::Stopped => "stopped",
        }
    }
}

/// At most this many paths in [`DriverStatus::devices`].
pub const STATUS_DEVICES_MAX: usize = 1000;

/// One driver instance as the control socket shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverStatus {
    /// Instance name.
    pub name: String,
    /// How its last incarnation ended, if one did.
    pub last_exit: Option<String>,
    /// Executable it runs.
    pub exec: String,
    /// Process id, while it runs.
    pub pid: Option<u32>,
    /// State.
    pub state: DriverState,
    /// Calls answered.
    pub requests: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// Times it was restarted.
    pub restarts: u32,
    /// Its devices (and buses), as paths below the mount, sorted: at most
    /// [`STATUS_DEVICES_MAX`] (see [`DriverStatus::device_count`]).
    pub devices: Vec<String>,
    /// The driver's own counters (see [`DriverToDdm::Counters`]).
    pub counters: Vec<(String, u64)>,
    /// Calls of the current incarnation that took the fast path (its ring).
    pub fast_calls: u64,
    /// The DMA memory the DDM holds for it, if its manifest asks for some.
    pub dma: Option<DmaStatus>,
    /// Times its system call filter killed it.
    pub violations: u32,
    /// In quarantine (`failed`): milliseconds until it is tried again by
    /// itself; `None` when no try is due (not quarantined, or the manifest
    /// turned healing off).
    pub next_try_ms: Option<u64>,
    /// Quarantines in a row (each doubles the cool-down).
    pub quarantines: u32,
    /// How many nodes it made or serves; [`DriverStatus::devices`] holds
    /// the first [`STATUS_DEVICES_MAX`] of them by path (a bus of 100,000
    /// devices would not fit in an answer; `ddmctl find --driver NAME`
    /// lists them all).
    pub device_count: u64,
}

/// A driver's DMA memory as the control socket shows it. The physical
/// addresses are not shown: they are privileged information (the kernel
/// hides them from unprivileged readers of `/proc/PID/pagemap`), and only
/// the driver itself gets them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaStatus {
    /// Bytes held.
    pub bytes: u64,
    /// The size of its pages (each one physically contiguous).
    pub page_size: u64,
    /// How many pages, that is segments, it has.
    pub segments: u32,
    /// Whether its pages are pinned against migration (else locked only).
    pub pinned: bool,
}

/// Why the DDM refused a request, for callers that act on it (`ddmctl`'s
/// exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// The caller may not do this (it changes the DDM, and the caller is
    /// neither root nor in the admin group).
    Denied,
    /// No such driver, node or device.
    NotFound,
}

/// One thing that happened in the DDM, as [`ControlRequest::Monitor`]
/// streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    /// Its number: one more than the event before it, from 1 at ddm's start
    /// (a gap means events this subscriber was not sent).
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// What.
    pub what: Happened,
}

/// What a [`MonitorEvent`] tells. Paths are below the mount, without a
/// leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Happened {
    /// A device node appeared.
    DeviceAdded {
        /// Its path.
        path: String,
        /// The driver that reported it.
        driver: String,
    },
    /// A bus directory appeared.
    BusAdded {
        /// Its path.
        path: String,
        /// The driver that enumerates it.
        driver: String,
    },
    /// A node (and everything below it) went.
    Removed {
        /// Its path.
        path: String,
    },
    /// The plugin manager handed a device to a driver whose manifest
    /// matches it.
    Bound {
        /// The device.
        path: String,
        /// The driver.
        driver: String,
    },
    /// A device was taken from the driver it was bound to.
    Unbound {
        /// The device.
        path: String,
        /// The driver it was bound to.
        driver: String,
        /// Why (`unloaded`, `removed`, `driver x failed (...)`).
        why: String,
    },
    /// A driver incarnation was started.
    Started {
        /// The driver.
        driver: String,
        /// Its process.
        pid: Option<u32>,
    },
    /// A driver said it is ready, the first time.
    Ready {
        /// The driver.
        driver: String,
    },
    /// A restarted driver is ready again.
    Restarted {
        /// The driver.
        driver: String,
        /// Its restarts so far.
        restarts: u32,
    },
    /// A driver incarnation ended.
    Died {
        /// The driver.
        driver: String,
        /// How (`killed by signal 9 (SIGKILL)`, ...).
        how: String,
        /// What comes next: restarting, failed (quarantined) or stopped.
        next: DriverState,
    },
    /// A driver died too often and stays down until `ddmctl restart`.
    Quarantined {
        /// The driver.
        driver: String,
        /// How its last incarnation ended.
        how: String,
    },
    /// An administrator restarted a driver that was down.
    Revived {
        /// The driver.
        driver: String,
    },
    /// A node's owner, group, mode or ACL changed.
    PermChanged {
        /// The node.
        path: String,
        /// Its permission bits now.
        mode: u32,
        /// Its owner now.
        uid: u32,
        /// Its group now.
        gid: u32,
    },
    /// This subscriber fell behind and `count` events were not sent to it.
    Lost {
        /// How many.
        count: u64,
    },
}

/// One node with everything the DDM knows of it (`ddmctl node`), the way
/// `udevadm info` shows a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDetail {
    /// What [`ControlRequest::Tree`] shows of it.
    pub node: NodeInfo,
    /// Its access ACL in `getfacl`'s short form (`user::rw-,user:1000:r--,...`),
    /// if it has one beyond the mode.
    pub acl: Option<String>,
    /// The bus driver that reported it, when another driver serves it.
    pub bus_driver: Option<String>,
    /// Why no driver serves it (a device no manifest matches, or whose
    /// driver let go of it).
    pub unbound: Option<String>,
    /// Times its driver was restarted.
    pub restarts: Option<u32>,
    /// How its driver's last incarnation ended.
    pub last_exit: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn enc<T: Serialize>(v: &T) -> Vec<u8> {
        postcard::to_stdvec(v).unwrap()
    }

    #[test]
    fn hello_is_pinned() {
        assert_eq!(enc(&Hello::ours()), [b'D', b'D', b'F', 1, 3]);
    }

    #[test]
    fn driver_messages_are_pinned() {
        let add = DriverToDdm::AddDevice(DeviceSpec::new(DeviceId(1), "zero", DeviceClass::Char, 0));
        // device, name, class, size, bus None, address None, meta [], offer false, serves None
        assert_eq!(enc(&add), [0, 1, 4, b'z', b'e', b'r', b'o', 0, 0, 0, 0, 0, 0, 0]);
        let reply = DriverToDdm::Reply { id: RequestId(300), result: Ok(Answer::Written { len: 1 }) };
        // 3 = Reply, 300 = [0xac, 0x02], 0 = Ok, 3 = Written, 1.
        assert_eq!(enc(&reply), [3, 0xac, 0x02, 0, 3, 1]);
        let err = DriverToDdm::Reply { id: RequestId(1), result: Err(Errno::EAGAIN) };
        // Err = 1, errno 11 as zig-zag varint = 22.
        assert_eq!(enc(&err), [3, 1, 1, 22]);
        assert_eq!(enc(&DdmToDriver::Cancel { id: RequestId(5) }), [2, 5]);
        assert_eq!(enc(&DdmToDriver::Shutdown), [4]);
        // 11 = Dma, len 8192 = [0x80, 0x40], page size 4096 = [0x80, 0x20],
        // two pages 0x1000 and 0x3000, pinned true.
        let grant = DmaGrant { len: 8192, page_size: 4096, pages: vec![0x1000, 0x3000], pinned: true };
        assert_eq!(enc(&DdmToDriver::Dma(grant)), [11, 0x80, 0x40, 0x80, 0x20, 2, 0x80, 0x20, 0x80, 0x60, 1]);
        // 11 = SandboxViolation, 41 as zig-zag varint = 82, 0xc000003e as varint.
        let v = DriverToDdm::SandboxViolation { syscall: 41, arch: 0xC000_003E };
        assert_eq!(enc(&v), [11, 82, 0xbe, 0x80, 0x80, 0x80, 0x0c]);
        // 5 = Inject, 12 = ForbiddenSyscall.
        assert_eq!(enc(&DdmToDriver::Inject(Fault::ForbiddenSyscall)), [5, 12]);
        // 12 = StartFailed, then the reason's length and bytes.
        assert_eq!(enc(&DriverToDdm::StartFailed { why: "no".into() }), [12, 2, b'n', b'o']);
    }

    #[test]
    fn control_messages_are_pinned() {
        assert_eq!(enc(&ControlRequest::Tree), [0]);
        assert_eq!(enc(&ControlRequest::Status), [1]);
        assert_eq!(enc(&ControlResponse::Error("no".into())), [2, 2, b'n', b'o']);
        assert_eq!(enc(&ControlRequest::Monitor), [10]);
        assert_eq!(enc(&ControlRequest::Node { path: "z".into() }), [11, 1, b'z']);
        let lost = MonitorEvent { seq: 3, unix_ms: 5, what: Happened::Lost { count: 2 } };
        // 6 = Event, seq 3, unix_ms 5, 12 = Lost, count 2.
        assert_eq!(enc(&ControlResponse::Event(lost)), [6, 3, 5, 12, 2]);
        let refused = ControlResponse::Refused { why: Refusal::NotFound, message: "x".into() };
        assert_eq!(enc(&refused), [8, 1, 1, b'x']);
        // 9 = TreePart, an empty list.
        assert_eq!(enc(&ControlResponse::TreePart(Vec::new())), [9, 0]);
    }
}
