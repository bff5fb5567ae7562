//! libIPC: framed, typed messages over Unix sockets.
//!
//! Every link in ddf (DDM to driver, `ddmctl` to DDM) is a `SOCK_SEQPACKET`
//! Unix socket. The kernel keeps message boundaries for us, so one message is
//! one datagram, the same in both directions:
//!
//! ```text
//! +----------------+---------------------------+---------------------+
//! | header_len u32 | header: postcard, typed   | payload: raw bytes  |
//! | little endian  | (header_len bytes)        | (the rest)          |
//! +----------------+---------------------------+---------------------+
//! ```
//!
//! The header is a typed message from [`crate::proto`], encoded with postcard.
//! The payload carries bulk data (what a read returns, what a write brings)
//! as plain bytes, so it is never copied through serde: the sender hands it
//! to the kernel as its own iovec, and the receiver borrows it from the
//! receive buffer.
//!
//! Why `SOCK_SEQPACKET`: framing by the kernel (no partial frames to
//! reassemble), file descriptors travel with the message they belong to
//! (`SCM_RIGHTS`), `SO_PEERCRED` names the peer, and a closed peer reads as a
//! zero-length message.
//!
//! Limits: a frame is at most [`FRAME_MAX`] bytes and carries at most
//! [`MAX_FDS`] descriptors. These fit the default `net.core.wmem_max`, so no
//! tuning of the host is needed. A larger frame, a truncated one, a header
//! that does not decode or leaves bytes over, are all [`IpcError`]s for that
//! peer, never a panic.
//!
//! Before first use both ends exchange a [`crate::proto::Hello`] carrying
//! [`crate::proto::PROTOCOL_VERSION`]; see [`Channel::handshake`].

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno as NixErrno;
use nix::sys::socket::{
    self, recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::proto::{Hello, PROTOCOL_MAGIC, PROTOCOL_VERSION};

/// The largest frame, header and payload together, in bytes.
pub const FRAME_MAX: usize = 256 * 1024;

/// The largest bulk payload one frame carries; larger transfers are split
/// (reads and writes through FUSE never exceed it: see `ddm`'s `max_write`).
pub const PAYLOAD_MAX: usize = 128 * 1024;

/// The most file descriptors one frame may carry.
pub const MAX_FDS: usize = 8;

/// Bytes of the length prefix that opens every frame.
const LEN_PREFIX: usize = 4;

/// What can go wrong on a channel. Each variant names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// `sendmsg` failed.
    #[error("send failed")]
    Send(#[source] std::io::Error),
    /// `recvmsg` failed.
    #[error("receive failed")]
    Recv(#[source] std::io::Error),
    /// The socket is full and the send was asked not to block.
    #[error("peer is not keeping up (socket full)")]
    WouldBlock,
    /// The peer closed its end.
    #[error("peer closed the connection")]
    Closed,
    /// The frame to send is larger than [`FRAME_MAX`].
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size of the frame.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A received frame or its control data did not fit the buffer.
    #[error("received frame was truncated (frame or descriptors over the limit)")]
    Truncated,
    /// A received frame is shorter than its own length prefix says.
    #[error("malformed frame: {len} bytes, header claims {header_len}")]
    Malformed {
        /// Bytes received.
        len: usize,
        /// What the prefix claimed.
        header_len: usize,
    },
    /// The header did not decode as the expected message type.
    #[error("header does not decode")]
    Decode(#[source] postcard::Error),
    /// The header decoded but left bytes over.
    #[error("header has {0} trailing bytes")]
    Trailing(usize),
    /// The header could not be encoded (a bug on our side, reported, not panicked).
    #[error("header does not encode")]
    Encode(#[source] postcard::Error),
    /// More descriptors than [`MAX_FDS`] were sent or received.
    #[error("too many file descriptors in one frame ({0}, limit {MAX_FDS})")]
    TooManyFds(usize),
    /// The peer speaks another protocol or another version.
    #[error("protocol mismatch: peer speaks {magic:?} version {theirs}, we speak version {ours}")]
    Version {
        /// The peer's magic bytes.
        magic: [u8; 4],
        /// The peer's version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// Creating or configuring a socket failed.
    #[error("socket setup failed")]
    Setup(#[source] std::io::Error),
}

/// Result of channel operations.
pub type Result<T> = std::result::Result<T, IpcError>;

/// A received frame: the header bytes, the payload borrowed from the receive
/// buffer, and any descriptors that came with it (owned: they close on drop).
#[derive(Debug)]
pub struct Frame<'a> {
    header: &'a [u8],
    /// Bulk bytes after the header.
    pub payload: &'a [u8],
    /// Descriptors passed with the frame.
    pub fds: Vec<OwnedFd>,
}

impl<'a> Frame<'a> {
    /// Splits a raw datagram into header and payload. Total: any input gives
    /// a frame or an error.
    pub fn parse(bytes: &'a [u8], fds: Vec<OwnedFd>) -> Result<Frame<'a>> {
        let Some((prefix, rest)) = bytes.split_first_chunk::<LEN_PREFIX>() else {
            return Err(IpcError::Malformed { len: bytes.len(), header_len: LEN_PREFIX });
        };
        let header_len = u32::from_le_bytes(*prefix) as usize;
        if header_len > rest.len() {
            return Err(IpcError::Malformed { len: bytes.len(), header_len });
        }
        let (header, payload) = rest.split_at(header_len);
        Ok(Frame { header, payload, fds })
    }

    /// Decodes the header as `T`; all of its bytes must be used.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        decode_exact(self.header)
    }
}

/// How many bytes `value` takes encoded as a frame's header (`usize::MAX`
/// if it cannot be encoded): for senders that split a long answer into
/// frames of at most [`FRAME_MAX`] bytes.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::experimental::serialized_size(value).unwrap_or(usize::MAX)
}

/// Decodes `bytes` as exactly one `T`.
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(IpcError::Decode)?;
    if !rest.is_empty() {
        return Err(IpcError::Trailing(rest.len()));
    }
    Ok(value)
}

/// Encodes a frame's header (postcard) into `buf`, replacing what it held:
/// the header of a frame whose payload travels apart (a ring slot).
pub fn encode_header<T: Serialize>(header: &T, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    let v = postcard::to_extend(header, std::mem::take(buf)).map_err(IpcError::Encode)?;
    *buf = v;
    Ok(())
}

/// Encodes a frame as it goes on the wire (used by tests and by tools that
/// want to see the bytes; [`Channel::send`] does not copy the payload).
pub fn encode_frame<T: Serialize>(header: &T, payload: &[u8]) -> Result<Vec<u8>> {
    let h = postcard::to_stdvec(header).map_err(IpcError::Encode)?;
    let mut out = Vec::with_capacity(LEN_PREFIX + h.len() + payload.len());
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    Ok(out)
}

/// A buffer frames are received into; reuse one per reader.
#[derive(Debug)]
pub struct RecvBuf {
    data: Vec<u8>,
}

impl Default for RecvBuf {
    fn default() -> Self {
        RecvBuf { data: vec![0; FRAME_MAX] }
    }
}

/// Credentials of the process at the other end of a socket (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// One end of a `SOCK_SEQPACKET` link. Sending is safe from several threads
/// at once (each frame is one atomic `sendmsg`); receiving is for one thread.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair, both ends close-on-exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| IpcError::Setup(e.into()))?;
        let (a, b) = (Channel::from_fd(a)?, Channel::from_fd(b)?);
        Ok((a, b))
    }

    /// Wraps a connected `SOCK_SEQPACKET` socket and sizes its send buffer
    /// for [`FRAME_MAX`] frames (the kernel caps this at `wmem_max`, which by
    /// default still leaves room for a full frame).
    pub fn from_fd(fd: OwnedFd) -> Result<Channel> {
        let want = 2 * FRAME_MAX;
        setsockopt(&fd, sockopt::SndBuf, &want).map_err(|e| IpcError::Setup(e.into()))?;
        Ok(Channel { fd })
    }

    /// Connects to a listening socket at `path` (the DDM's control socket).
    pub fn connect(path: &std::path::Path) -> Result<Channel> {
        let fd = socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| IpcError::Setup(e.into()))?;
        let addr = socket::UnixAddr::new(path).map_err(|e| IpcError::Setup(e.into()))?;
        socket::connect(fd.as_raw_fd(), &addr).map_err(|e| IpcError::Setup(e.into()))?;
        Channel::from_fd(fd)
    }

    /// Takes ownership of an inherited descriptor number (a driver's socket
    /// from its DDM).
    ///
    /// # Safety
    /// `raw` must be an open descriptor that nothing else owns or closes.
    pub unsafe fn from_raw_fd(raw: RawFd) -> Result<Channel> {
        // SAFETY: the caller promises `raw` is open and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Channel::from_fd(fd)
    }

    /// Sends one frame, blocking while the socket is full.
    pub fn send<T: Serialize>(&self, header: &T, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.send_flags(header, payload, fds, MsgFlags::empty())
    }

    /// Sends one frame or fails with [`IpcError::WouldBlock`] at once when the
    /// socket is full.
    pub fn try_send<T: Serialize>(&self, header: &T, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.send_flags(header, payload, fds, MsgFlags::MSG_DONTWAIT)
    }

    /// Sends bytes already framed by [`encode_frame`] (queued frames).
    pub fn send_raw(&self, frame: &[u8], fds: &[BorrowedFd<'_>], nonblocking: bool) -> Result<()> {
        let flags = if nonblocking { MsgFlags::MSG_DONTWAIT } else { MsgFlags::empty() };
        self.sendmsg_iov(&[IoSlice::new(frame)], fds, flags)
    }

    fn send_flags<T: Serialize>(
        &self,
        header: &T,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        flags: MsgFlags,
    ) -> Result<()> {
        let mut hbuf = [0u8; 512];
        let owned;
        let h: &[u8] = match postcard::to_slice(header, &mut hbuf) {
            Ok(h) => h,
            Err(postcard::Error::SerializeBufferFull) => {
                owned = postcard::to_stdvec(header).map_err(IpcError::Encode)?;
                &owned
            }
            Err(e) => return Err(IpcError::Encode(e)),
        };
        let prefix = (h.len() as u32).to_le_bytes();
        let iov = [IoSlice::new(&prefix), IoSlice::new(h), IoSlice::new(payload)];
        self.sendmsg_iov(&iov, fds, flags)
    }

    fn sendmsg_iov(&self, iov: &[IoSlice<'_>], fds: &[BorrowedFd<'_>], flags: MsgFlags) -> Result<()> {
        let len: usize = iov.iter().map(|s| s.len()).sum();
        if len > FRAME_MAX {
            return Err(IpcError::TooLarge { len, max: FRAME_MAX });
        }
        if fds.len() > MAX_FDS {
            return Err(IpcError::TooManyFds(fds.len()));
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsgs = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
        loop {
            match sendmsg::<()>(self.fd.as_raw_fd(), iov, cmsgs, flags | MsgFlags::MSG_NOSIGNAL, None) {
                Ok(_) => return Ok(()),
                Err(NixErrno::EINTR) => continue,
                Err(NixErrno::EAGAIN) => return Err(IpcError::WouldBlock),
                Err(NixErrno::EPIPE) | Err(NixErrno::ECONNRESET) => return Err(IpcError::Closed),
                Err(e) => return Err(IpcError::Send(e.into())),
            }
        }
    }

    /// Receives one frame into `buf`. Blocks until one arrives; a closed
    /// peer is [`IpcError::Closed`].
    pub fn recv<'b>(&self, buf: &'b mut RecvBuf) -> Result<Frame<'b>> {
        self.recv_flags(buf, MsgFlags::empty())
    }

    /// Receives one frame if one is waiting, else [`IpcError::WouldBlock`]
    /// at once.
    pub fn try_recv<'b>(&self, buf: &'b mut RecvBuf) -> Result<Frame<'b>> {
        self.recv_flags(buf, MsgFlags::MSG_DONTWAIT)
    }

    fn recv_flags<'b>(&self, buf: &'b mut RecvBuf, flags: MsgFlags) -> Result<Frame<'b>> {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut reset = false;
        let (len, fds, truncated) = loop {
            let mut iov = [IoSliceMut::new(&mut buf.data)];
            match recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC | flags) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(raw) = c {
                                for r in raw {
                                    // SAFETY: the kernel just installed `r` in our
                                    // table for us; nothing else owns it.
                                    fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                                }
                            }
                        }
                    }
                    let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                    break (msg.bytes, fds, truncated);
                }
                Err(NixErrno::EINTR) => continue,
                Err(NixErrno::EAGAIN) => return Err(IpcError::WouldBlock),
                // The peer closed with frames of ours unread: the kernel
                // reports the reset before the frames the peer sent us
                // just before it closed (a driver's last reply, or why it
                // could not start). They are still queued: read them; the
                // end comes after them.
                Err(NixErrno::ECONNRESET) if !reset => reset = true,
                Err(NixErrno::ECONNRESET) => return Err(IpcError::Closed),
                Err(e) => return Err(IpcError::Recv(e.into())),
            }
        };
        if truncated {
            return Err(IpcError::Truncated);
        }
        if len == 0 {
            return Err(IpcError::Closed);
        }
        if fds.len() > MAX_FDS {
            return Err(IpcError::TooManyFds(fds.len()));
        }
        Frame::parse(&buf.data[..len], fds)
    }

    /// Exchanges [`Hello`] messages and checks that the peer speaks our
    /// protocol version. Both ends call it before anything else.
    pub fn handshake(&self, buf: &mut RecvBuf) -> Result<()> {
        self.send(&Hello::ours(), &[], &[])?;
        let frame = self.recv(buf)?;
        let hello: Hello = frame.decode()?;
        if hello.magic != PROTOCOL_MAGIC || hello.version != PROTOCOL_VERSION {
            return Err(IpcError::Version { magic: hello.magic, theirs: hello.version, ours: PROTOCOL_VERSION });
        }
        Ok(())
    }

    /// The credentials of the peer process (`SO_PEERCRED`).
    pub fn peer_cred(&self) -> Result<PeerCred> {
        let c = socket::getsockopt(&self.fd, sockopt::PeerCredentials).map_err(|e| IpcError::Setup(e.into()))?;
        Ok(PeerCred { pid: c.pid(), uid: c.uid(), gid: c.gid() })
    }

    /// The supplementary groups of the peer process (`SO_PEERGROUPS`).
    pub fn peer_groups(&self) -> Result<Vec<u32>> {
        let mut groups = vec![0 as libc::gid_t; 64];
        loop {
            let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
            // SAFETY: `groups` is a writable buffer of `len` bytes, and the
            // kernel writes at most `len` bytes and updates `len`.
            let rc = unsafe {
                libc::getsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_PEERGROUPS,
                    groups.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            let n = len as usize / std::mem::size_of::<libc::gid_t>();
            if rc == 0 {
                groups.truncate(n);
                return Ok(groups);
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
                groups.resize(n, 0);
                continue;
            }
            return Err(IpcError::Setup(err));
        }
    }

    /// Shuts the socket down in both directions: a thread blocked in
    /// [`Channel::recv`] wakes with [`IpcError::Closed`].
    pub fn shutdown(&self) {
        let _ = socket::shutdown(self.fd.as_raw_fd(), socket::Shutdown::Both);
    }
}

/// Gives a child process descriptor `fd` as its descriptor number `target`
/// across `exec`: `dup2` when the numbers differ (the copy has no
/// `FD_CLOEXEC`), else `FD_CLOEXEC` cleared. Meant for a `pre_exec` hook
/// (see [`keep_in_child`]): it makes only async-signal-safe system calls.
pub fn inherit_fd(fd: RawFd, target: RawFd) -> std::io::Result<()> {
    if fd == target {
        // SAFETY: fcntl(F_GETFD/F_SETFD) only reads and writes the flags of
        // a descriptor table entry; an invalid number is an error, not UB.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    // SAFETY: dup2 on two descriptor numbers; at worst it replaces `target`
    // in the child, which is what the caller asks for.
    } else if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `cmd`'s child inherit descriptor `fd` under its own number (for a
/// socket whose number the child learns from its environment).
pub fn keep_in_child(cmd: &mut std::process::Command, fd: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec and only calls
    // `inherit_fd`, which makes async-signal-safe system calls, allocates
    // nothing and takes no locks.
    unsafe { cmd.pre_exec(move || inherit_fd(fd, fd)) };
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Channel> for OwnedFd {
    fn from(c: Channel) -> OwnedFd {
        c.fd
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::proto::{Call, DdmToDriver, DeviceId, Handle, OpenFlags, RequestId};

    #[test]
    fn frame_layout_is_pinned() {
        // A read request for 4096 bytes at offset 0 of handle 7, id 42.
        let msg = DdmToDriver::Call {
            id: RequestId(42),
            call: Call::Read { handle: Handle(7), offset: 0, len: 4096, flags: OpenFlags(libc::O_NONBLOCK) },
        };
        let bytes = encode_frame(&msg, b"").unwrap();
        assert_eq!(
            bytes,
            [
                9, 0, 0, 0,  // header length, u32 LE
                1,  // DdmToDriver::Call
                42, // id (varint)
                2,  // Call::Read
                7,  // handle
                0,  // offset
                0x80, 0x20, // len 4096 as varint
                0x80, 0x20, // O_NONBLOCK (0o4000) as zig-zag varint
            ]
        );
    }

    #[test]
    fn payload_follows_header_uncopied() {
        let msg = DdmToDriver::Call {
            id: RequestId(1),
            call: Call::Write { handle: Handle(3), offset: 5, flags: OpenFlags(1) },
        };
        let bytes = encode_frame(&msg, b"hi").unwrap();
        assert_eq!(bytes, [6, 0, 0, 0, 1, 1, 3, 3, 5, 2, b'h', b'i']);
        let frame = Frame::parse(&bytes, Vec::new()).unwrap();
        assert_eq!(frame.payload, b"hi");
        let back: DdmToDriver = frame.decode().unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert!(matches!(Frame::parse(&[1, 0], vec![]), Err(IpcError::Malformed { .. })));
        assert!(matches!(Frame::parse(&[200, 0, 0, 0, 1], vec![]), Err(IpcError::Malformed { .. })));
        let f = Frame::parse(&[2, 0, 0, 0, 250, 250], vec![]).unwrap();
        assert!(f.decode::<DdmToDriver>().is_err());
        // A valid Ping followed by a stray byte inside the header.
        let f = Frame::parse(&[3, 0, 0, 0, 3, 9, 9], vec![]).unwrap();
        assert!(matches!(f.decode::<DdmToDriver>(), Err(IpcError::Trailing(1))));
        // Every short prefix of a valid frame, and every byte flipped, is
        // handled without panicking.
        let good = encode_frame(
            &DdmToDriver::Call {
                id: RequestId(u64::MAX),
                call: Call::Open { device: DeviceId(3), flags: OpenFlags(2) },
            },
            b"",
        )
        .unwrap();
        for n in 0..good.len() {
            if let Ok(f) = Frame::parse(&good[..n], vec![]) {
                let _ = f.decode::<DdmToDriver>();
            }
        }
        for i in 0..good.len() {
            for v in [0u8, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                if let Ok(f) = Frame::parse(&b, vec![]) {
                    let _ = f.decode::<DdmToDriver>();
                }
            }
        }
    }

    #[test]
    fn round_trip_with_fds_and_creds() {
        let (a, b) = Channel::pair().unwrap();
        let (x, _y) = Channel::pair().unwrap();
        let msg = DdmToDriver::Ping { seq: 9 };
        a.send(&msg, b"payload", &[x.as_fd()]).unwrap();
        let mut buf = RecvBuf::default();
        let f = b.recv(&mut buf).unwrap();
        assert_eq!(f.decode::<DdmToDriver>().unwrap(), msg);
        assert_eq!(f.payload, b"payload");
        assert_eq!(f.fds.len(), 1);
        let cred = b.peer_cred().unwrap();
        assert_eq!(cred.pid, std::process::id() as i32);
        let mut ours = nix::unistd::getgroups().unwrap().into_iter().map(|g| g.as_raw()).collect::<Vec<_>>();
        let mut theirs = b.peer_groups().unwrap();
        ours.sort();
        theirs.sort();
        assert_eq!(theirs, ours);
    }

    #[test]
    fn handshake_and_close() {
        let (a, b) = Channel::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = RecvBuf::default();
            b.handshake(&mut buf).unwrap();
        });
        let mut buf = RecvBuf::default();
        a.handshake(&mut buf).unwrap();
        t.join().unwrap();
        // b is dropped: the next receive reports a closed peer.
        assert!(matches!(a.recv(&mut buf), Err(IpcError::Closed)));
    }

    #[test]
    fn last_words_of_a_peer_that_closed_with_frames_unread_are_not_lost() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&7u32, &[], &[]).unwrap();
        b.send(&1u32, b"last", &[]).unwrap();
        b.send(&2u32, &[], &[]).unwrap();
        // b never reads a's frame: its close resets the connection.
        drop(b);
        let mut buf = RecvBuf::default();
        let f = a.recv(&mut buf).unwrap();
        assert_eq!((f.decode::<u32>().unwrap(), f.payload), (1, &b"last"[..]));
        assert_eq!(a.recv(&mut buf).unwrap().decode::<u32>().unwrap(), 2);
        assert!(matches!(a.recv(&mut buf), Err(IpcError::Closed)));
        assert!(matches!(a.recv(&mut buf), Err(IpcError::Closed)));
    }

    #[test]
    fn version_mismatch_is_reported() {
        let (a, b) = Channel::pair().unwrap();
        let other = Hello { magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION + 1 };
        b.send(&other, &[], &[]).unwrap();
        let mut buf = RecvBuf::default();
        let err = a.handshake(&mut buf).unwrap_err();
        assert!(matches!(err, IpcError::Version { theirs, .. } if theirs == PROTOCOL_VERSION + 1));
    }

    #[test]
    fn try_recv_does_not_block() {
        let (a, b) = Channel::pair().unwrap();
        let mut buf = RecvBuf::default();
        assert!(matches!(b.try_recv(&mut buf), Err(IpcError::WouldBlock)));
        a.send(&DdmToDriver::Ping { seq: 3 }, &[], &[]).unwrap();
        let f = b.try_recv(&mut buf).unwrap();
        assert_eq!(f.decode::<DdmToDriver>().unwrap(), DdmToDriver::Ping { seq: 3 });
    }

    #[test]
    fn oversized_frames_are_refused() {
        let (a, _b) = Channel::pair().unwrap();
        let big = vec![0u8; FRAME_MAX];
        let err = a.send(&DdmToDriver::Ping { seq: 1 }, &big, &[]).unwrap_err();
        assert!(matches!(err, IpcError::TooLarge { .. }));
    }

    #[test]
    fn full_frame_fits_the_socket() {
        let (a, b) = Channel::pair().unwrap();
        let data = vec![7u8; PAYLOAD_MAX];
        a.send(&DdmToDriver::Ping { seq: 1 }, &data, &[]).unwrap();
        let mut buf = RecvBuf::default();
        let f = b.recv(&mut buf).unwrap();
        assert_eq!(f.payload.len(), PAYLOAD_MAX);
    }
}
