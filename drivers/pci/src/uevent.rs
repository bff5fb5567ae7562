//! Kernel hotplug events (uevents) from a `NETLINK_KOBJECT_UEVENT` socket.
//!
//! The kernel multicasts one datagram per event to group 1: a header record
//! `ACTION@DEVPATH`, then `KEY=VALUE` records (`ACTION`, `DEVPATH`,
//! `SUBSYSTEM`, `SEQNUM`, and for PCI `PCI_SLOT_NAME`, `PCI_ID`, ...), each
//! ended by a NUL byte:
//!
//! ```text
//! add@/devices/pci0000:00/0000:00:03.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:03.0\0SUBSYSTEM=pci\0...
//! ```
//!
//! [`parse`] is bounded and total: any byte string gives an event or an
//! error, never a panic. Messages that udev rebroadcasts (group 2, a binary
//! header after `libudev\0`) are refused, and so is any datagram not sent
//! by the kernel itself (netlink port id 0).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno as NixErrno;
use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// The largest datagram taken; the kernel's own limit is 2048 bytes of
/// variables plus the header (`UEVENT_BUFFER_SIZE`).
pub const UEVENT_MAX: usize = 8192;

/// The most `KEY=VALUE` records one event may carry (the kernel's
/// `UEVENT_NUM_ENVP` is 64).
pub const VARS_MAX: usize = 128;

/// The kernel's multicast group for its own uevents.
const KERNEL_GROUP: u32 = 1;

/// Receive buffer asked for, so that a burst (a hot-plugged bridge) fits.
const RCVBUF: usize = 1 << 20;

/// What happened to a device (the kernel's `kobject_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A device appeared.
    Add,
    /// A device went away.
    Remove,
    /// A device changed.
    Change,
    /// A device was renamed or moved.
    Move,
    /// A device went online.
    Online,
    /// A device went offline.
    Offline,
    /// A kernel driver was bound to a device.
    Bind,
    /// A kernel driver was unbound from a device.
    Unbind,
}

impl Action {
    /// Parses the kernel's name for an action.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "add" => Action::Add,
            "remove" => Action::Remove,
            "change" => Action::Change,
            "move" => Action::Move,
            "online" => Action::Online,
            "offline" => Action::Offline,
            "bind" => Action::Bind,
            "unbind" => Action::Unbind,
            _ => return None,
        })
    }
}

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// What happened.
    pub action: Action,
    /// The device's path below `/sys` (`/devices/pci0000:00/0000:00:03.0`).
    pub devpath: String,
    /// The `KEY=VALUE` records, in order.
    pub vars: Vec<(String, String)>,
}

impl Uevent {
    /// The value of variable `key`.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The `SUBSYSTEM` variable.
    pub fn subsystem(&self) -> Option<&str> {
        self.var("SUBSYSTEM")
    }

    /// For an event about a PCI function that changes what the PCI bus
    /// shows (a function added or removed, a kernel driver bound or
    /// unbound): its address (`PCI_SLOT_NAME`, else the last component of
    /// the device path). `None` for every other event.
    pub fn pci_function(&self) -> Option<&str> {
        if self.subsystem() != Some("pci") {
            return None;
        }
        let relevant = match self.action {
            Action::Add | Action::Remove | Action::Bind | Action::Unbind => true,
            Action::Change | Action::Move | Action::Online | Action::Offline => false,
        };
        if !relevant {
            return None;
        }
        self.var("PCI_SLOT_NAME").or_else(|| self.devpath.rsplit('/').next()).filter(|a| !a.is_empty())
    }
}

/// Why a datagram is not a kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UeventError {
    /// Longer than [`UEVENT_MAX`].
    #[error("{0} bytes, over the limit of {UEVENT_MAX}")]
    TooLong(usize),
    /// Nothing in it.
    #[error("empty message")]
    Empty,
    /// A udev rebroadcast (`libudev` header), not a kernel event.
    #[error("a libudev message, not a kernel event")]
    Libudev,
    /// A record is not UTF-8.
    #[error("record {0} is not UTF-8")]
    NotUtf8(usize),
    /// The first record is not `ACTION@DEVPATH`.
    #[error("header {0:?} is not ACTION@/DEVPATH")]
    BadHeader(String),
    /// The action is not one the kernel sends.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// A record after the header is not `KEY=VALUE`.
    #[error("record {0} is not KEY=VALUE")]
    BadVar(usize),
    /// More than [`VARS_MAX`] records.
    #[error("more than {VARS_MAX} variables")]
    TooManyVars,
    /// `ACTION` or `DEVPATH` disagrees with the header.
    #[error("{0} disagrees with the header")]
    Mismatch(&'static str),
}

/// Parses one datagram from the kernel.
pub fn parse(buf: &[u8]) -> Result<Uevent, UeventError> {
    if buf.len() > UEVENT_MAX {
        return Err(UeventError::TooLong(buf.len()));
    }
    if buf.starts_with(b"libudev\0") {
        return Err(UeventError::Libudev);
    }
    // Records end with NUL; the last one may lack it. Empty records (a
    // trailing NUL, doubled NULs) carry nothing and are skipped.
    let mut records = buf.split(|b| *b == 0).enumerate().filter(|(_, r)| !r.is_empty());
    let (_, header) = records.next().ok_or(UeventError::Empty)?;
    let header = std::str::from_utf8(header).map_err(|_| UeventError::NotUtf8(0))?;
    let (action, devpath) = header
        .split_once('@')
        .filter(|(a, p)| !a.is_empty() && p.starts_with('/'))
        .ok_or_else(|| UeventError::BadHeader(header.chars().take(64).collect()))?;
    let action_kind =
        Action::parse(action).ok_or_else(|| UeventError::UnknownAction(action.chars().take(32).collect()))?;
    let mut vars = Vec::new();
    for (i, rec) in records {
        if vars.len() >= VARS_MAX {
            return Err(UeventError::TooManyVars);
        }
        let rec = std::str::from_utf8(rec).map_err(|_| UeventError::NotUtf8(i))?;
        let (k, v) = rec.split_once('=').filter(|(k, _)| !k.is_empty()).ok_or(UeventError::BadVar(i))?;
        vars.push((k.to_owned(), v.to_owned()));
    }
    let ev = Uevent { action: action_kind, devpath: devpath.to_owned(), vars };
    if ev.var("ACTION").is_some_and(|a| a != action) {
        return Err(UeventError::Mismatch("ACTION"));
    }
    if ev.var("DEVPATH").is_some_and(|p| p != devpath) {
        return Err(UeventError::Mismatch("DEVPATH"));
    }
    Ok(ev)
}

/// What can go wrong opening the uevent socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// `socket(AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)` failed.
    #[error("netlink uevent socket")]
    Socket(#[source] NixErrno),
    /// Binding to the kernel's event group failed.
    #[error("binding the netlink socket to the kernel's uevent group")]
    Bind(#[source] NixErrno),
}

/// The outcome of one [`UeventSocket::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A datagram from the kernel of this many bytes.
    Message(usize),
    /// A datagram from someone other than the kernel; dropped.
    NotKernel,
    /// Nothing more to read now.
    Drained,
    /// The socket's buffer overflowed: events were lost, rescan.
    Overflow,
}

/// A non-blocking netlink socket bound to the kernel's uevent group.
#[derive(Debug)]
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    /// Opens the socket (non-blocking, close-on-exec) and joins the
    /// kernel's group. Fails without the right to (some sandboxes, network
    /// namespaces not owned by the initial user namespace receive nothing).
    pub fn open() -> Result<UeventSocket, SocketError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(SocketError::Socket)?;
        // Best effort: a larger buffer loses fewer events in a burst; when
        // it is refused, overflow still ends in a full rescan.
        if let Err(e) = setsockopt(&fd, sockopt::RcvBuf, &RCVBUF) {
            log::debug!("pci: SO_RCVBUF {RCVBUF}: {e}");
        }
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP)).map_err(SocketError::Bind)?;
        Ok(UeventSocket { fd })
    }

    /// Receives one datagram into `buf` (which should hold
    /// [`UEVENT_MAX`] bytes; a longer datagram is cut and will not parse).
    pub fn recv(&self, buf: &mut [u8]) -> Result<Received, NixErrno> {
        loop {
            match recvfrom::<NetlinkAddr>(self.fd.as_raw_fd(), buf) {
                Ok((n, from)) => {
                    return Ok(if from.is_some_and(|a| a.pid() == 0) {
                        Received::Message(n)
                    } else {
                        Received::NotKernel
                    })
                }
                Err(NixErrno::EAGAIN) => return Ok(Received::Drained),
                Err(NixErrno::ENOBUFS) => return Ok(Received::Overflow),
                Err(NixErrno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for UeventSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for UeventSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A PCI add as the kernel sends it (Linux 6.x, a virtio NIC), with the
    /// trailing NUL.
    const PCI_ADD: &[u8] = b"add@/devices/pci0000:00/0000:00:03.0\0\
        ACTION=add\0\
        DEVPATH=/devices/pci0000:00/0000:00:03.0\0\
        SUBSYSTEM=pci\0\
        PCI_CLASS=20000\0\
        PCI_ID=1AF4:1041\0\
        PCI_SUBSYS_ID=1AF4:1100\0\
        PCI_SLOT_NAME=0000:00:03.0\0\
        MODALIAS=pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00\0\
        SEQNUM=1234\0";

    #[test]
    fn a_pci_add() {
        let ev = parse(PCI_ADD).unwrap();
        assert_eq!(ev.action, Action::Add);
        assert_eq!(ev.devpath, "/devices/pci0000:00/0000:00:03.0");
        assert_eq!(ev.subsystem(), Some("pci"));
        assert_eq!(ev.var("SEQNUM"), Some("1234"));
        assert_eq!(ev.var("MODALIAS"), Some("pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00"));
        assert_eq!(ev.vars.len(), 9);
        assert_eq!(ev.pci_function(), Some("0000:00:03.0"));
    }

    #[test]
    fn bind_unbind_remove_are_pci_changes_others_are_not() {
        for (action, relevant) in [
            ("add", true),
            ("remove", true),
            ("bind", true),
            ("unbind", true),
            ("change", false),
            ("move", false),
            ("online", false),
            ("offline", false),
        ] {
            let msg = format!(
                "{action}@/devices/pci0000:00/0000:00:04.0\0ACTION={action}\0SUBSYSTEM=pci\0DRIVER=virtio-pci\0"
            );
            let ev = parse(msg.as_bytes()).unwrap();
            // No PCI_SLOT_NAME here: the address comes from the path.
            assert_eq!(ev.pci_function().is_some(), relevant, "{action}");
            if relevant {
                assert_eq!(ev.pci_function(), Some("0000:00:04.0"));
            }
        }
    }

    #[test]
    fn events_of_other_subsystems_are_not_pci_changes() {
        let ev = parse(b"add@/devices/virtual/net/lo\0ACTION=add\0SUBSYSTEM=net\0INTERFACE=lo\0").unwrap();
        assert_eq!(ev.pci_function(), None);
        let ev = parse(b"add@/devices/virtual/net/lo\0ACTION=add\0").unwrap();
        assert_eq!(ev.subsystem(), None);
        assert_eq!(ev.pci_function(), None);
    }

    #[test]
    fn a_missing_final_nul_and_doubled_nuls_are_tolerated() {
        let ev =
            parse(b"remove@/devices/pci0000:00/0000:00:05.0\0\0SUBSYSTEM=pci\0\0\0PCI_SLOT_NAME=0000:00:05.0").unwrap();
        assert_eq!(ev.action, Action::Remove);
        assert_eq!(ev.pci_function(), Some("0000:00:05.0"));
    }

    #[test]
    fn values_may_hold_equals_signs_and_be_empty() {
        let ev = parse(b"change@/devices/x\0A=b=c\0EMPTY=\0").unwrap();
        assert_eq!(ev.var("A"), Some("b=c"));
        assert_eq!(ev.var("EMPTY"), Some(""));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let cases: &[(&[u8], UeventError)] = &[
            (b"", UeventError::Empty),
            (b"\0\0\0", UeventError::Empty),
            (b"libudev\0\xfe\xed\xca\xfe", UeventError::Libudev),
            (b"\xff\xfe@/devices\0", UeventError::NotUtf8(0)),
            (b"add/devices/x\0", UeventError::BadHeader("add/devices/x".into())),
            (b"@/devices/x\0", UeventError::BadHeader("@/devices/x".into())),
            (b"add@devices/x\0", UeventError::BadHeader("add@devices/x".into())),
            (b"explode@/devices/x\0", UeventError::UnknownAction("explode".into())),
            (b"add@/devices/x\0NOEQUALS\0", UeventError::BadVar(1)),
            (b"add@/devices/x\0=value\0", UeventError::BadVar(1)),
            (b"add@/devices/x\0SUBSYSTEM=pci\0K=\xc3\x28\0", UeventError::NotUtf8(2)),
            (b"add@/devices/x\0ACTION=remove\0", UeventError::Mismatch("ACTION")),
            (b"add@/devices/x\0DEVPATH=/devices/y\0", UeventError::Mismatch("DEVPATH")),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes).as_ref(), Err(want), "{:?}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(parse(&[b'a'; UEVENT_MAX + 1]), Err(UeventError::TooLong(UEVENT_MAX + 1)));

        let mut many = b"add@/devices/x\0".to_vec();
        for i in 0..=VARS_MAX {
            many.extend_from_slice(format!("K{i}=v\0").as_bytes());
        }
        assert_eq!(parse(&many), Err(UeventError::TooManyVars));
    }

    /// Every prefix of a real message, and every single-byte corruption of
    /// it, parses to something or to an error.
    #[test]
    fn truncations_and_corruptions_do_not_panic() {
        for n in 0..=PCI_ADD.len() {
            let _ = parse(&PCI_ADD[..n]);
        }
        let mut buf = PCI_ADD.to_vec();
        for i in 0..buf.len() {
            for b in [0u8, b'@', b'=', 0xff, b'/'] {
                let keep = buf[i];
                buf[i] = b;
                let _ = parse(&buf);
                buf[i] = keep;
            }
        }
    }

    /// Opening the socket works here or fails cleanly; receiving on it with
    /// nothing pending is `Drained`, not a block.
    #[test]
    fn the_socket_opens_or_fails_cleanly() {
        match UeventSocket::open() {
            Ok(s) => {
                let mut buf = vec![0; UEVENT_MAX];
                // Events may arrive at any time; drain what is there.
                for _ in 0..1000 {
                    match s.recv(&mut buf).unwrap() {
                        Received::Drained => return,
                        Received::Message(_) | Received::NotKernel | Received::Overflow => {}
                    }
                }
            }
            Err(e) => eprintln!("no uevent socket here: {e}"),
        }
    }
}
