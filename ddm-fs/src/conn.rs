//! One incarnation's link to a driver process: the socket, the requests in
//! flight, and the FIFO of frames waiting for the socket.
//!
//! FUSE workers call [`Conn::call`]: it parks the caller's reply under a new
//! request id and hands the frame to the socket without blocking (if the
//! socket is full, the frame joins a bounded in-memory FIFO that a writer
//! thread drains). No FUSE worker ever waits on a driver. [`Conn::kill`]
//! ends every request in flight with `EIO` at once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ddf::ipc::{encode_frame, Channel, IpcError};
use ddf::proto::{Call, DdmToDriver, Errno, RequestId};
use log::debug;

use crate::reply::Parked;
use crate::sync::{Condvar, Mutex, Rank};

/// Most bytes of frames one driver's FIFO may hold before new requests are
/// refused with `ENOBUFS`: the DDM's memory stays bounded even when a driver
/// stops reading.
const FIFO_MAX_BYTES: usize = 64 << 20;

/// A request in flight.
#[derive(Debug)]
pub struct Pending {
    /// The reply to complete.
    pub parked: Parked,
    /// The calling thread (FUSE gives the thread id), for interrupts.
    pub pid: u32,
    /// When it was sent.
    pub since: Instant,
    /// When the driver counts as hung if it has not answered (calls that
    /// may block have none).
    pub deadline: Option<Instant>,
    /// The call's name, for log lines.
    pub call: &'static str,
}

#[derive(Debug, Default)]
struct OutQueue {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    /// The writer thread holds a frame it took from the queue.
    busy: bool,
    closed: bool,
}

/// One incarnation's link to a driver process.
#[derive(Debug)]
pub struct Conn {
    chan: Channel,
    /// Requests in flight by id.
    pub pending: Mutex<HashMap<RequestId, Pending>>,
    next_id: AtomicU64,
    out: Mutex<OutQueue>,
    out_cv: Condvar,
    dead: AtomicBool,
    /// What was in flight when the link died (for the death's log line).
    failed: Mutex<Vec<String>>,
    blocking: Vec<String>,
    request_timeout: Duration,
    /// The fast path, once the driver has its ring.
    pub(crate) fast: OnceLock<crate::fast::LinkRing>,
    /// Whether the link's reader has stopped (it read the socket's end).
    read_all: Mutex<bool>,
    read_all_cv: Condvar,
}

/// The name of a call, as manifests' `blocking_calls` use it.
pub fn call_name(call: &Call) -> &'static str {
    match call {
        Call::Open { .. } => "open",
        Call::Close { .. } => "close",
        Call::Read { .. } => "read",
        Call::Write { .. } => "write",
        Call::Ioctl { .. } => "ioctl",
        Call::Poll { .. } => "poll",
        Call::Scatter { .. } => "scatter",
        Call::Gather { .. } => "gather",
    }
}

impl Conn {
    /// A link over `chan`; calls not named in `blocking` must be answered
    /// within `request_timeout`.
    pub fn new(chan: Channel, blocking: Vec<String>, request_timeout: Duration) -> Conn {
        Conn {
            blocking,
            request_timeout,
            failed: Mutex::new(Rank::Kill, Vec::new()),
            chan,
            pending: Mutex::new(Rank::Pending, HashMap::new()),
            next_id: AtomicU64::new(1),
            out: Mutex::new(Rank::Out, OutQueue::default()),
            out_cv: Condvar::new(),
            dead: AtomicBool::new(false),
            fast: OnceLock::new(),
            read_all: Mutex::new(Rank::Leaf, false),
            read_all_cv: Condvar::new(),
        }
    }

    /// The reader says it read everything the driver sent (or stopped).
    pub fn reader_done(&self) {
        *self.read_all.lock() = true;
        self.read_all_cv.notify_all();
    }

    /// Waits, at most `timeout`, for the reader to have read everything the
    /// driver sent before it died: an answer it gave just before its end is
    /// an answer, not a loss.
    pub fn wait_reader(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut done = self.read_all.lock();
        while !*done {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self.read_all_cv.wait_timeout(done, left);
        }
        true
    }

    /// Sends `call` by the socket and parks `parked` until the driver
    /// answers. Never blocks on the driver. On failure the parked reply is
    /// failed here.
    pub fn call(&self, call: Call, payload: &[u8], parked: Parked, pid: u32) -> Option<RequestId> {
        let id = self.register(&call, parked, pid)?;
        self.send_call(id, call, payload);
        Some(id)
    }

    /// Registers a call as in flight (before it is sent, so that an answer
    /// always finds it); `None` if the link is dead (the reply is failed).
    pub(crate) fn register(&self, call: &Call, parked: Parked, pid: u32) -> Option<RequestId> {
        if self.dead.load(Ordering::Acquire) {
            parked.fail(Errno::EIO);
            return None;
        }
        let id = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let name = call_name(call);
        let now = Instant::now();
        let deadline = (!self.blocking.iter().any(|b| b == name)).then(|| now + self.request_timeout);
        self.pending.lock().insert(id, Pending { parked, pid, since: now, deadline, call: name });
        Some(id)
    }

    /// Sends registered call `id` by the socket.
    pub(crate) fn send_call(&self, id: RequestId, call: Call, payload: &[u8]) {
        let msg = DdmToDriver::Call { id, call };
        if let Err(err) = self.send(&msg, payload) {
            if let Some(p) = self.pending.lock().remove(&id) {
                p.parked.fail(err);
            }
        }
    }

    /// Queues a message to the driver in FIFO order, without blocking.
    pub fn send(&self, msg: &DdmToDriver, payload: &[u8]) -> Result<(), Errno> {
        let mut q = self.out.lock();
        if q.closed {
            return Err(Errno::EIO);
        }
        if q.frames.is_empty() && !q.busy {
            match self.chan.try_send(msg, payload, &[]) {
                Ok(()) => return Ok(()),
                Err(IpcError::WouldBlock) => {}
                Err(e) => {
                    debug!("send to driver failed: {e}");
                    return Err(Errno::EIO);
                }
            }
        }
        let frame = encode_frame(msg, payload).map_err(|_| Errno::EIO)?;
        if q.bytes + frame.len() > FIFO_MAX_BYTES {
            return Err(Errno::ENOBUFS);
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        self.out_cv.notify_one();
        Ok(())
    }

    /// Drains the FIFO into the socket; runs on the link's writer thread.
    pub fn writer_loop(&self) {
        loop {
            let frame = {
                let mut q = self.out.lock();
                loop {
                    if q.closed {
                        return;
                    }
                    if let Some(f) = q.frames.pop_front() {
                        q.bytes -= f.len();
                        q.busy = true;
                        break f;
                    }
                    q = self.out_cv.wait(q);
                }
            };
            let res = self.chan.send_raw(&frame, &[], false);
            let mut q = self.out.lock();
            q.busy = false;
            if let Err(e) = res {
                debug!("writer: {e}");
                q.closed = true;
                return;
            }
        }
    }

    /// Marks the link dead, stops its threads, and fails every request in
    /// flight with `EIO`. Returns what was in flight when the link died
    /// (for the log), whichever thread killed it first.
    pub fn kill(&self) -> Vec<String> {
        let mut failed = self.failed.lock();
        if self.dead.swap(true, Ordering::AcqRel) {
            return failed.clone();
        }
        {
            let mut q = self.out.lock();
            q.closed = true;
            q.frames.clear();
            q.bytes = 0;
        }
        self.out_cv.notify_all();
        self.chan.shutdown();
        let mut drained: Vec<(RequestId, Pending)> = self.pending.lock().drain().collect();
        drained.sort_by_key(|(id, _)| *id);
        let mut what = Vec::new();
        for (id, p) in drained {
            if p.parked.is_awaited() {
                what.push(format!("{} #{} from pid {}", p.call, id.0, p.pid));
            }
            p.parked.fail(Errno::EIO);
        }
        failed.clone_from(&what);
        what
    }

    /// The socket (for the reader thread).
    pub fn chan(&self) -> &Channel {
        &self.chan
    }

    /// Calls made on the link so far.
    pub fn calls(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Whether the link is gone.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}
