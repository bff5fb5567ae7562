//! The DDM's shared state and its links to driver processes.
//!
//! [`Core`] owns the device tree, the driver instances and the table of open
//! files. Each running driver has a [`Conn`]: its socket, the requests in
//! flight (parked FUSE replies keyed by request id), and the FIFO of frames
//! waiting to be written.
//!
//! ## Threads
//! - FUSE workers call [`Conn::call`]: it parks the reply object under a new
//!   request id and hands the frame to the socket without blocking (if the
//!   socket is full, the frame joins the in-memory FIFO). **No FUSE worker
//!   ever waits on a driver.**
//! - One *writer* thread per driver drains that FIFO, blocking only itself.
//! - One *reader* thread per driver receives replies and completes the parked
//!   FUSE requests; it also handles device registration.
//! - One *reaper* thread per driver waits for the process to exit.
//! - The *interrupt watcher* ends parked requests whose caller was signalled
//!   (see [`crate::interrupt`]).
//!
//! When a driver dies or breaks the protocol, every request it had in flight
//! ends with `EIO` at once.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use access_policy::{NodeKind as PolicyKind, Perm};
use ddf::driver::SOCKET_FD_ENV;
use ddf::ipc::{encode_frame, Channel, IpcError, RecvBuf};
use ddf::proto::{
    Answer, Call, DdmToDriver, DeviceClass, DeviceId, DeviceSpec, DriverState, DriverToDdm, Errno,
    Handle, RequestId,
};
use fuser::{FopenFlags, Notifier, PollNotifier, ReplyData, ReplyIoctl, ReplyOpen, ReplyPoll, ReplyWrite};
use log::{debug, error, info, warn};

use crate::manifest::Manifest;
use crate::tree::{DeviceRef, Ino, NodeKind, Tree, ROOT};

/// Most bytes of frames one driver's FIFO may hold before new requests are
/// refused with `ENOBUFS`: the DDM's memory stays bounded even when a driver
/// stops reading.
const FIFO_MAX_BYTES: usize = 64 << 20;

/// Locks a mutex, recovering the data if a thread panicked while holding it:
/// the DDM keeps serving rather than cascading one bug into every thread.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A FUSE reply waiting for a driver's answer.
#[derive(Debug)]
pub enum Parked {
    /// An open: on success a file handle is made for `ino`.
    Open {
        /// The FUSE reply.
        reply: ReplyOpen,
        /// The node opened.
        ino: Ino,
        /// Its class (decides the open flags).
        class: DeviceClass,
        /// `open(2)` flags.
        flags: i32,
    },
    /// A read.
    Read(ReplyData),
    /// A write.
    Write(ReplyWrite),
    /// An ioctl.
    Ioctl(ReplyIoctl),
    /// A poll.
    Poll(ReplyPoll),
    /// Nobody waits for the answer (a close, or a request whose caller was
    /// interrupted); the answer is dropped when it comes.
    Discard,
}

impl Parked {
    /// Ends the request with `err` (no driver answer will come, or it came
    /// malformed).
    pub fn fail(self, err: Errno) {
        let e = fuser::Errno::from_i32(err.0);
        match self {
            Parked::Open { reply, .. } => reply.error(e),
            Parked::Read(r) => r.error(e),
            Parked::Write(r) => r.error(e),
            Parked::Ioctl(r) => r.error(e),
            Parked::Poll(r) => r.error(e),
            Parked::Discard => {}
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Parked::Open { .. } => "open",
            Parked::Read(_) => "read",
            Parked::Write(_) => "write",
            Parked::Ioctl(_) => "ioctl",
            Parked::Poll(_) => "poll",
            Parked::Discard => "discarded",
        }
    }
}

/// A request in flight.
#[derive(Debug)]
pub struct Pending {
    /// The reply to complete.
    pub parked: Parked,
    /// The calling thread (FUSE gives the thread id), for interrupts.
    pub pid: u32,
    /// When it was sent.
    pub since: Instant,
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
}

impl Conn {
    fn new(chan: Channel) -> Conn {
        Conn {
            chan,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            out: Mutex::new(OutQueue::default()),
            out_cv: Condvar::new(),
            dead: AtomicBool::new(false),
        }
    }

    /// Sends `call` and parks `parked` until the driver answers. Never
    /// blocks on the driver. On failure the parked reply is failed here.
    pub fn call(&self, call: Call, payload: &[u8], parked: Parked, pid: u32) -> Option<RequestId> {
        if self.dead.load(Ordering::Acquire) {
            parked.fail(Errno::EIO);
            return None;
        }
        let id = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed));
        lock(&self.pending).insert(
            id,
            Pending {
                parked,
                pid,
                since: Instant::now(),
            },
        );
        let msg = DdmToDriver::Call { id, call };
        if let Err(err) = self.send(&msg, payload) {
            if let Some(p) = lock(&self.pending).remove(&id) {
                p.parked.fail(err);
            }
            return None;
        }
        Some(id)
    }

    /// Queues a message to the driver in FIFO order, without blocking.
    pub fn send(&self, msg: &DdmToDriver, payload: &[u8]) -> Result<(), Errno> {
        let mut q = lock(&self.out);
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

    fn writer_loop(&self) {
        loop {
            let frame = {
                let mut q = lock(&self.out);
                loop {
                    if q.closed {
                        return;
                    }
                    if let Some(f) = q.frames.pop_front() {
                        q.bytes -= f.len();
                        q.busy = true;
                        break f;
                    }
                    q = self.out_cv.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let res = self.chan.send_raw(&frame, &[], false);
            let mut q = lock(&self.out);
            q.busy = false;
            if let Err(e) = res {
                debug!("writer: {e}");
                q.closed = true;
                return;
            }
        }
    }

    /// Marks the link dead, stops its threads, and fails every request in
    /// flight with `EIO`. Returns how many requests were failed.
    pub fn kill(&self) -> usize {
        self.dead.store(true, Ordering::Release);
        {
            let mut q = lock(&self.out);
            q.closed = true;
            q.frames.clear();
            q.bytes = 0;
        }
        self.out_cv.notify_all();
        self.chan.shutdown();
        let drained: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        let n = drained.iter().filter(|p| !matches!(p.parked, Parked::Discard)).count();
        for p in drained {
            p.parked.fail(Errno::EIO);
        }
        n
    }

    /// Whether the link is gone.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

/// What changes over a driver instance's life.
#[derive(Debug)]
pub struct Live {
    /// State.
    pub state: DriverState,
    /// Process id while running.
    pub pid: Option<u32>,
    /// The current incarnation's link.
    pub conn: Option<Arc<Conn>>,
    /// Its devices: driver number to inode.
    pub devices: HashMap<DeviceId, Ino>,
    /// Restarts so far.
    pub restarts: u32,
    /// How the last incarnation ended.
    pub last_exit: Option<String>,
    /// Incarnation counter; bumps on every start.
    pub generation: u64,
}

/// A driver instance: one manifest, one process at a time.
#[derive(Debug)]
pub struct Instance {
    /// Index in [`Core::instances`].
    pub index: usize,
    /// Its manifest.
    pub manifest: Manifest,
    /// Executable path.
    pub exec: PathBuf,
    /// Changing state.
    pub live: Mutex<Live>,
    /// Signalled when the state changes (start-up waits on it).
    pub changed: Condvar,
    /// Calls answered.
    pub requests: AtomicU64,
    /// Calls answered with an error.
    pub errors: AtomicU64,
}

impl Instance {
    /// The current link, if the driver runs.
    pub fn conn(&self) -> Option<Arc<Conn>> {
        lock(&self.live).conn.clone()
    }

    /// Name for log lines.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

/// An open file under the mount.
#[derive(Debug)]
pub struct OpenFile {
    /// The node.
    pub ino: Ino,
    /// The driver instance.
    pub instance: usize,
    /// The driver's handle.
    pub handle: Handle,
    /// The incarnation that issued the handle.
    pub conn: Arc<Conn>,
    /// The kernel's poll handle, if the file is polled.
    pub poll: Option<PollNotifier>,
}

/// Everything the DDM knows.
#[derive(Debug)]
pub struct Core {
    /// The device tree.
    pub tree: RwLock<Tree>,
    /// Driver instances, fixed at start.
    pub instances: Vec<Arc<Instance>>,
    /// Open files by FUSE file handle.
    pub files: Mutex<HashMap<u64, OpenFile>>,
    next_fh: AtomicU64,
    /// FUSE notifications, once mounted.
    pub notifier: OnceLock<Notifier>,
    /// Set once shutdown begins: nothing restarts after it.
    pub stopping: AtomicBool,
}

impl Core {
    /// A core with the null bus and the given driver instances (not started).
    pub fn new(manifests: Vec<Manifest>, driver_dir: &std::path::Path) -> Arc<Core> {
        let root_perm = access_policy::default_perm("", PolicyKind::Bus);
        let instances = manifests
            .into_iter()
            .enumerate()
            .map(|(index, manifest)| {
                Arc::new(Instance {
                    index,
                    exec: manifest.exec_path(driver_dir),
                    manifest,
                    live: Mutex::new(Live {
                        state: DriverState::Stopped,
                        pid: None,
                        conn: None,
                        devices: HashMap::new(),
                        restarts: 0,
                        last_exit: None,
                        generation: 0,
                    }),
                    changed: Condvar::new(),
                    requests: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                })
            })
            .collect();
        Arc::new(Core {
            tree: RwLock::new(Tree::new(root_perm)),
            instances,
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            notifier: OnceLock::new(),
            stopping: AtomicBool::new(false),
        })
    }

    /// Starts the driver process of `inst` and its threads.
    pub fn start(self: &Arc<Core>, inst: &Arc<Instance>) -> Result<(), String> {
        let (ours, theirs) = Channel::pair().map_err(|e| format!("socketpair: {e}"))?;
        let theirs: OwnedFd = theirs.into();
        let child_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&inst.exec);
        cmd.env(SOCKET_FD_ENV, "3")
            .env("DDF_INSTANCE", inst.name())
            .stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and calls
        // only async-signal-safe functions (dup2, fcntl, prctl).
        unsafe {
            cmd.pre_exec(move || {
                if child_fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(child_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // A driver never outlives its DDM, and never gains privileges.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0
                    || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", inst.exec.display()))?;
        drop(theirs);
        let pid = child.id();
        let conn = Arc::new(Conn::new(ours));
        {
            let mut live = lock(&inst.live);
            live.state = DriverState::Starting;
            live.pid = Some(pid);
            live.conn = Some(conn.clone());
            live.generation += 1;
        }
        inst.changed.notify_all();
        info!("driver {}: started pid {pid} ({})", inst.name(), inst.exec.display());

        let core = self.clone();
        let i = inst.clone();
        let c = conn.clone();
        spawn_named(&format!("rd-{}", inst.name()), move || core.reader(&i, &c));
        let c = conn.clone();
        spawn_named(&format!("wr-{}", inst.name()), move || c.writer_loop());
        let core = self.clone();
        let i = inst.clone();
        spawn_named(&format!("wait-{}", inst.name()), move || core.reap(&i, child, &conn));
        Ok(())
    }

    /// Waits until `inst` is running (or failed), at most `timeout`.
    pub fn wait_ready(&self, inst: &Instance, timeout: Duration) -> DriverState {
        let deadline = Instant::now() + timeout;
        let mut live = lock(&inst.live);
        while live.state == DriverState::Starting {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            live = inst
                .changed
                .wait_timeout(live, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        live.state
    }

    fn reap(self: &Arc<Core>, inst: &Arc<Instance>, mut child: Child, conn: &Arc<Conn>) {
        let status = child.wait();
        let how = match &status {
            Ok(s) => describe_exit(s),
            Err(e) => format!("wait failed: {e}"),
        };
        let failed = conn.kill();
        let paths = self.device_paths(inst);
        let stopping = self.stopping.load(Ordering::Acquire);
        {
            let mut live = lock(&inst.live);
            live.pid = None;
            live.last_exit = Some(how.clone());
            if live.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                live.conn = None;
            }
            live.state = if stopping || live.state == DriverState::Stopped {
                DriverState::Stopped
            } else {
                DriverState::Failed
            };
        }
        inst.changed.notify_all();
        if stopping {
            info!("driver {}: {how}", inst.name());
        } else {
            error!(
                "driver {} ({}) died: {how}; {failed} request(s) in flight failed with EIO",
                inst.name(),
                paths.join(", ")
            );
        }
    }

    /// Paths of an instance's devices, for log lines.
    pub fn device_paths(&self, inst: &Instance) -> Vec<String> {
        let inos: Vec<Ino> = lock(&inst.live).devices.values().copied().collect();
        let tree = self.tree.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = inos.into_iter().map(|i| format!("/{}", tree.path(i))).collect();
        v.sort();
        v
    }

    fn reader(self: &Arc<Core>, inst: &Arc<Instance>, conn: &Arc<Conn>) {
        let mut buf = RecvBuf::default();
        let outcome = (|| -> Result<(), String> {
            conn.chan.handshake(&mut buf).map_err(|e| format!("handshake: {e}"))?;
            let start = DdmToDriver::Start {
                instance: inst.name().to_owned(),
                params: inst.manifest.param_pairs(),
            };
            conn.send(&start, &[]).map_err(|e| format!("start: {e}"))?;
            loop {
                let frame = match conn.chan.recv(&mut buf) {
                    Ok(f) => f,
                    Err(IpcError::Closed) => return Ok(()),
                    Err(e) => return Err(format!("bad frame: {e}")),
                };
                let msg: DriverToDdm = frame.decode().map_err(|e| format!("bad message: {e}"))?;
                self.on_message(inst, conn, msg, frame.payload)?;
            }
        })();
        if let Err(why) = outcome {
            if !conn.is_dead() {
                error!("driver {}: protocol violation: {why}; killing it", inst.name());
                self.kill_process(inst);
            }
        }
        conn.kill();
    }

    /// Sends SIGKILL to an instance's process, if it runs.
    pub fn kill_process(&self, inst: &Instance) {
        if let Some(pid) = lock(&inst.live).pid {
            // SAFETY: kill(2) with a pid we started and have not reaped yet
            // (the reaper clears `pid` before the zombie goes away).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }

    fn on_message(self: &Arc<Core>, inst: &Arc<Instance>, conn: &Arc<Conn>, msg: DriverToDdm, payload: &[u8]) -> Result<(), String> {
        match msg {
            DriverToDdm::AddDevice(spec) => {
                self.add_device(inst, spec);
                Ok(())
            }
            DriverToDdm::RemoveDevice { device } => {
                self.remove_device(inst, device);
                Ok(())
            }
            DriverToDdm::Ready => {
                lock(&inst.live).state = DriverState::Running;
                inst.changed.notify_all();
                info!("driver {}: ready, serving {}", inst.name(), self.device_paths(inst).join(" "));
                Ok(())
            }
            DriverToDdm::Pong { seq } => {
                debug!("driver {}: pong {seq}", inst.name());
                Ok(())
            }
            DriverToDdm::PollWake { handle } => {
                self.poll_wake(inst.index, conn, handle);
                Ok(())
            }
            DriverToDdm::Reply { id, result } => {
                let Some(p) = lock(&conn.pending).remove(&id) else {
                    return Err(format!("reply to unknown request {}", id.0));
                };
                inst.requests.fetch_add(1, Ordering::Relaxed);
                if result.is_err() {
                    inst.errors.fetch_add(1, Ordering::Relaxed);
                }
                self.complete(inst, conn, id, p.parked, result, payload)
            }
        }
    }

    /// Completes a parked FUSE request with the driver's answer.
    fn complete(
        &self,
        inst: &Instance,
        conn: &Arc<Conn>,
        id: RequestId,
        parked: Parked,
        result: Result<Answer, Errno>,
        payload: &[u8],
    ) -> Result<(), String> {
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                let e = if (1..4096).contains(&e.0) { e } else { Errno::EIO };
                parked.fail(e);
                return Ok(());
            }
        };
        match (parked, answer) {
            (Parked::Discard, _) => {}
            (Parked::Open { reply, ino, class, flags }, Answer::Opened { handle }) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&self.files).insert(
                    fh,
                    OpenFile {
                        ino,
                        instance: inst.index,
                        handle,
                        conn: conn.clone(),
                        poll: None,
                    },
                );
                debug!("driver {}: open of inode {ino} (flags {flags:#o}) is handle {handle}, fh {fh}", inst.name());
                reply.opened(fuser::FileHandle(fh), open_flags(class));
            }
            (Parked::Read(reply), Answer::Data) => reply.data(payload),
            (Parked::Write(reply), Answer::Written { len }) => reply.written(len),
            (Parked::Ioctl(reply), Answer::Ioctl { result }) => reply.ioctl(result, payload),
            (Parked::Poll(reply), Answer::Polled { revents }) => {
                reply.poll(fuser::PollEvents::from_bits_truncate(revents))
            }
            (parked, answer) => {
                let kind = parked.kind();
                parked.fail(Errno::EIO);
                return Err(format!("answer {answer:?} does not fit {kind} request {}", id.0));
            }
        }
        Ok(())
    }

    fn poll_wake(&self, instance: usize, conn: &Arc<Conn>, handle: Handle) {
        let notifiers: Vec<PollNotifier> = lock(&self.files)
            .values_mut()
            .filter(|f| f.instance == instance && f.handle == handle && Arc::ptr_eq(&f.conn, conn))
            .filter_map(|f| f.poll.take())
            .collect();
        for n in notifiers {
            if let Err(e) = n.notify() {
                debug!("poll notify: {e}");
            }
        }
    }

    fn add_device(&self, inst: &Instance, spec: DeviceSpec) {
        let kind = match spec.class {
            DeviceClass::Char => PolicyKind::CharDevice,
            DeviceClass::Block => PolicyKind::BlockDevice,
        };
        let perm: Perm = access_policy::default_perm(&spec.name, kind);
        let node = NodeKind::Device(DeviceRef {
            instance: inst.index,
            device: spec.device,
            class: spec.class,
            size: if spec.class == DeviceClass::Block { spec.size } else { 0 },
        });
        let added = self
            .tree
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(ROOT, &spec.name, node, perm);
        match added {
            Ok(ino) => {
                lock(&inst.live).devices.insert(spec.device, ino);
                debug!("driver {}: device /{} is inode {ino}", inst.name(), spec.name);
            }
            Err(e) => warn!("driver {}: device {:?} refused: {e}", inst.name(), spec.name),
        }
    }

    fn remove_device(&self, inst: &Instance, device: DeviceId) {
        let Some(ino) = lock(&inst.live).devices.remove(&device) else {
            warn!("driver {}: removal of unknown device {device}", inst.name());
            return;
        };
        let removed = self.tree.write().unwrap_or_else(|p| p.into_inner()).remove(ino);
        if let Some(n) = self.notifier.get() {
            for node in removed {
                if let Err(e) = n.delete(fuser::INodeNo(node.parent), fuser::INodeNo(node.ino), node.name.as_ref()) {
                    debug!("inval {}: {e}", node.name);
                }
            }
        }
    }

    /// Stops every driver: asks nicely, fails what is in flight, then kills
    /// what did not exit within `grace`.
    pub fn stop_all(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        for inst in &self.instances {
            let conn = {
                let mut live = lock(&inst.live);
                live.state = DriverState::Stopped;
                live.conn.clone()
            };
            if let Some(c) = conn {
                let _ = c.send(&DdmToDriver::Shutdown, &[]);
                c.kill();
            }
        }
        let deadline = Instant::now() + grace;
        for inst in &self.instances {
            let mut live = lock(&inst.live);
            while live.pid.is_some() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(live);
                    warn!("driver {}: did not stop in time; killing it", inst.name());
                    self.kill_process(inst);
                    break;
                }
                live = inst
                    .changed
                    .wait_timeout(live, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
    }
}

/// FUSE open flags for a device class: char devices are non-seekable
/// streams; both bypass the page cache so every read and write reaches the
/// driver.
pub fn open_flags(class: DeviceClass) -> FopenFlags {
    match class {
        DeviceClass::Char => FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE | FopenFlags::FOPEN_STREAM,
        DeviceClass::Block => FopenFlags::FOPEN_DIRECT_IO,
    }
}

/// "exited with status 3", "killed by signal 9 (SIGKILL)", ...
pub fn describe_exit(s: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = s.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = s.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let core = if s.core_dumped() { ", core dumped" } else { "" };
        format!("killed by signal {sig} ({name}{core})")
    } else {
        format!("ended: {s}")
    }
}

/// Spawns a named thread; a failure to spawn is logged (the DDM goes on).
pub fn spawn_named<F: FnOnce() + Send + 'static>(name: &str, f: F) {
    if let Err(e) = std::thread::Builder::new().name(name.to_owned()).spawn(f) {
        error!("cannot start thread {name}: {e}");
    }
}
