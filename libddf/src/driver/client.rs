//! The libDriver client proxy: a driver call that looks like a local call.
//!
//! A call goes by the ring the DDM made for the link ([`crate::ring`]) while
//! the driver spins on another CPU, and by the socket otherwise; an answer
//! late in the ring is taken from the socket.

use std::time::Duration;

use crate::ipc::{Channel, Frame, IpcError, RecvBuf, PAYLOAD_MAX};
use crate::proto::{Access, Answer, Call, DdmToDriver, DeviceId, DriverToDdm, Errno, Handle, OpenFlags, RequestId};
use crate::ring::{current_cpu, spin_until, Doorbell, Ring, SlotState, SpinBudget};

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
    /// The ring shared with the driver holds something that is no answer.
    #[error("the ring shared with the driver is broken")]
    Ring(#[from] crate::ring::RingError),
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
    ring: Option<ClientRing>,
}

/// The fast path of a client link.
#[derive(Debug)]
struct ClientRing {
    ring: Ring,
    bell: Doorbell,
    budget: SpinBudget,
    header: Vec<u8>,
    frame: Vec<u8>,
    /// Calls answered by the ring.
    answered: u64,
}

/// How a call sent by the ring went on.
enum Fast {
    /// Answered in the ring: the reply frame is in the ring's `frame`.
    Answered,
    /// The answer comes by the socket.
    BySocket,
}

impl Client {
    /// Wraps the socket the DDM handed over and does the handshake.
    pub fn new(chan: Channel, device: DeviceId, access: Access) -> Result<Client, ClientError> {
        let mut buf = RecvBuf::default();
        chan.handshake(&mut buf)?;
        Ok(Client { chan, buf, next: 1, device, access, ring: None })
    }

    /// The same, with the ring the DDM made for this link and its doorbell.
    pub fn with_ring(
        chan: Channel,
        device: DeviceId,
        access: Access,
        ring: Ring,
        bell: Doorbell,
    ) -> Result<Client, ClientError> {
        let mut c = Client::new(chan, device, access)?;
        let budget = SpinBudget::new(Duration::from_micros(50), Duration::from_micros(10), Duration::from_micros(500));
        c.ring = Some(ClientRing { ring, bell, budget, header: Vec::new(), frame: Vec::new(), answered: 0 });
        Ok(c)
    }

    /// Sends call `id` by the ring when the driver spins on another CPU;
    /// `None`: not by the ring (send it by the socket).
    fn call_by_ring(&mut self, id: RequestId, call: &Call, payload: &[u8]) -> Result<Option<Fast>, ClientError> {
        let Some(r) = &mut self.ring else { return Ok(None) };
        let cpu = current_cpu();
        if !r.ring.driver_spinning() || r.ring.driver_cpu() == cpu {
            return Ok(None);
        }
        let Some(slot) = r.ring.claim() else { return Ok(None) };
        crate::ipc::encode_header(&DdmToDriver::Call { id, call: call.clone() }, &mut r.header)?;
        if !r.ring.write_frame(slot, &r.header, payload) {
            r.ring.set(slot, SlotState::Free);
            return Ok(None);
        }
        r.ring.set_caller_cpu(cpu);
        r.ring.set(slot, SlotState::Request);
        if r.ring.take_doorbell() {
            r.bell.ring()?;
        }
        let ring = &r.ring;
        let (seen, waited) = spin_until(r.budget.get(), || match ring.state(slot) {
            Ok(SlotState::Reply | SlotState::Deferred) => Some(()),
            Ok(_) => None,
            Err(_) => Some(()),
        });
        let state = match seen {
            Some(()) => {
                r.budget.hit(waited);
                r.ring.state(slot)?
            }
            None => {
                r.budget.miss();
                if r.ring.give_up(slot) {
                    return Ok(Some(Fast::BySocket));
                }
                r.ring.state(slot)?
            }
        };
        match state {
            SlotState::Reply => {
                r.ring.read_frame(slot, &mut r.frame)?;
                r.ring.set(slot, SlotState::Free);
                r.answered += 1;
                Ok(Some(Fast::Answered))
            }
            SlotState::Deferred => {
                r.ring.set(slot, SlotState::Free);
                Ok(Some(Fast::BySocket))
            }
            other => Err(ClientError::Protocol(format!("ring slot {slot} went {other:?}"))),
        }
    }

    /// How many calls were answered by the ring so far.
    pub fn fast_calls(&self) -> u64 {
        self.ring.as_ref().map_or(0, |r| r.answered)
    }

    /// The access this link was granted.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Makes one call and returns the answer and its payload (copied into `out`).
    pub fn call(&mut self, call: Call, payload: &[u8], out: &mut [u8]) -> Result<(Answer, usize), ClientError> {
        let id = RequestId(self.next);
        self.next += 1;
        match self.call_by_ring(id, &call, payload)? {
            Some(Fast::Answered) => {
                let Some(r) = &self.ring else { return Err(ClientError::Protocol("no ring".into())) };
                let frame = Frame::parse(&r.frame, Vec::new())?;
                return answer_of(id, frame.decode::<DriverToDdm>()?, frame.payload, out);
            }
            Some(Fast::BySocket) => {}
            None => self.chan.send(&DdmToDriver::Call { id, call }, payload, &[])?,
        }
        let frame = self.chan.recv(&mut self.buf)?;
        answer_of(id, frame.decode::<DriverToDdm>()?, frame.payload, out)
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

/// The answer to call `id`, its payload copied into `out`.
fn answer_of(id: RequestId, msg: DriverToDdm, payload: &[u8], out: &mut [u8]) -> Result<(Answer, usize), ClientError> {
    match msg {
        DriverToDdm::Reply { id: got, result } if got == id => {
            let answer = result.map_err(ClientError::Errno)?;
            let n = payload.len().min(out.len());
            out[..n].copy_from_slice(&payload[..n]);
            Ok((answer, n))
        }
        other => Err(ClientError::Protocol(format!("{other:?}"))),
    }
}
