//! The libDriver client proxy: a driver call that looks like a local call.

use crate::ipc::{Channel, IpcError, RecvBuf, PAYLOAD_MAX};
use crate::proto::{Access, Answer, Call, DdmToDriver, DeviceId, DriverToDdm, Errno, Handle, OpenFlags, RequestId};

/// What can go wrong calling a driver directly.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The link to the driver failed (it died or restarted: connect again).
    #[error("link to the driver failed")]
    Ipc(#[from] IpcError),
    /// The driver answered with an error.
    #[error("driver answered {0}")]
    Errno(Errno),
    /// The driver answered something that does not fit the call.
    #[error("unexpected answer from the driver: {0}")]
    Protocol(String),
    /// The buffers of a vectored call hold more than one call carries.
    #[error("{0} bytes in one vectored call; at most {PAYLOAD_MAX}")]
    TooLong(usize),
}

/// The libDriver client proxy: calls to one device's driver that look like
/// local method calls, over a direct socket to the driver process (no FUSE,
/// no DDM in the path). Get one from [`crate::ddm::Ddm::connect_device`],
/// which checks the caller's right to the device first.
///
/// A link does not survive a restart of the driver: calls then fail with
/// [`ClientError::Ipc`], and a new connection is needed.
#[derive(Debug)]
pub struct Client {
    chan: Channel,
    buf: RecvBuf,
    next: u64,
    device: DeviceId,
    access: Access,
}

impl Client {
    /// Wraps the socket the DDM handed over and does the handshake.
    pub fn new(chan: Channel, device: DeviceId, access: Access) -> Result<Client, ClientError> {
        let mut buf = RecvBuf::default();
        chan.handshake(&mut buf)?;
        Ok(Client { chan, buf, next: 1, device, access })
    }

    /// The access this link was granted.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Makes one call and returns the answer and its payload (copied into `out`).
    pub fn call(&mut self, call: Call, payload: &[u8], out: &mut [u8]) -> Result<(Answer, usize), ClientError> {
        let id = RequestId(self.next);
        self.next += 1;
        self.chan.send(&DdmToDriver::Call { id, call }, payload, &[])?;
        let frame = self.chan.recv(&mut self.buf)?;
        match frame.decode::<DriverToDdm>()? {
            DriverToDdm::Reply { id: got, result } if got == id => {
                let answer = result.map_err(ClientError::Errno)?;
                let n = frame.payload.len().min(out.len());
                out[..n].copy_from_slice(&frame.payload[..n]);
                Ok((answer, n))
            }
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Opens the device with `open(2)` flags (within the granted access).
    pub fn open(&mut self, flags: OpenFlags) -> Result<Handle, ClientError> {
        let call = Call::Open { device: self.device, flags };
        match self.call(call, &[], &mut [])? {
            (Answer::Opened { handle } | Answer::OpenedBacked { handle }, _) => Ok(handle),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Reads into `buf` at `offset`; returns the bytes read (0 is end of file).
    pub fn read(&mut self, handle: Handle, offset: u64, buf: &mut [u8]) -> Result<usize, ClientError> {
        let len = buf.len().min(PAYLOAD_MAX) as u32;
        let call = Call::Read { handle, offset, len, flags: OpenFlags::default() };
        match self.call(call, &[], buf)? {
            (Answer::Data, n) => Ok(n),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Reads one run at `offset` into several buffers, in order (the
    /// paper's scatter, `preadv`); returns the bytes read.
    pub fn read_vectored(
        &mut self,
        handle: Handle,
        offset: u64,
        bufs: &mut [std::io::IoSliceMut<'_>],
    ) -> Result<usize, ClientError> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total > PAYLOAD_MAX {
            return Err(ClientError::TooLong(total));
        }
        let lens = bufs.iter().map(|b| b.len() as u32).collect();
        let mut all = vec![0u8; total];
        let n = match self.call(Call::Scatter { handle, offset, lens }, &[], &mut all)? {
            (Answer::Data, n) => n,
            (other, _) => return Err(ClientError::Protocol(format!("{other:?}"))),
        };
        let mut at = 0;
        for b in bufs.iter_mut() {
            let k = b.len().min(n - at);
            b[..k].copy_from_slice(&all[at..at + k]);
            at += k;
        }
        Ok(n)
    }

    /// Writes `data` at `offset` (at most [`PAYLOAD_MAX`] bytes per call);
    /// returns the bytes taken.
    pub fn write(&mut self, handle: Handle, offset: u64, data: &[u8]) -> Result<usize, ClientError> {
        let data = &data[..data.len().min(PAYLOAD_MAX)];
        let call = Call::Write { handle, offset, flags: OpenFlags::default() };
        match self.call(call, data, &mut [])? {
            (Answer::Written { len }, _) => Ok(len as usize),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Writes several buffers as one run at `offset` (the paper's gather,
    /// `pwritev`); returns the bytes taken.
    pub fn write_vectored(
        &mut self,
        handle: Handle,
        offset: u64,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Result<usize, ClientError> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total > PAYLOAD_MAX {
            return Err(ClientError::TooLong(total));
        }
        let lens = bufs.iter().map(|b| b.len() as u32).collect();
        let data: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        match self.call(Call::Gather { handle, offset, lens }, &data, &mut [])? {
            (Answer::Written { len }, _) => Ok(len as usize),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Device control; returns `ioctl(2)`'s value and the output bytes.
    pub fn ioctl(
        &mut self,
        handle: Handle,
        cmd: u32,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(i32, usize), ClientError> {
        let call = Call::Ioctl { handle, cmd, out_len: out.len().min(PAYLOAD_MAX) as u32 };
        match self.call(call, input, out)? {
            (Answer::Ioctl { result }, n) => Ok((result, n)),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Closes a handle.
    pub fn close(&mut self, handle: Handle) -> Result<(), ClientError> {
        match self.call(Call::Close { handle }, &[], &mut [])? {
            (Answer::Closed, _) => Ok(()),
            (other, _) => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }
}
