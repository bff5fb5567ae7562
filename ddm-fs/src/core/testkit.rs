//! What the core's unit tests run it with: fake replies that report how
//! they were answered, a fake kernel notifier, and fake drivers: the test's
//! end of a real socket pair, with the core's real reader on the other end.
//! No FUSE, no root, no processes.

#![allow(clippy::unwrap_used)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use access_policy::{PermStore, Policy};
use ddf::ipc::{Channel, RecvBuf};
use ddf::proto::{
    Answer, BusId, Call, DdmToDriver, DeviceClass, DeviceId, DeviceSpec, DmaGrant, DriverState, DriverToDdm, Errno,
    Handle, RequestId, StateEntry,
};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::{Cause, Config, Core, Ended, Event, Instance, Launcher, Listener, SpawnError};
use crate::conn::Conn;
use crate::ids::{Fh, Ino};
use crate::manifest::Manifest;
use crate::reply::{self, Backing, Notify, Opened, Parked, PollWaker};

/// How long a test waits for something the core does on another thread.
pub const WAIT: Duration = Duration::from_secs(5);

/// How a fake reply was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An open: the file handle, and whether it got a passthrough backing.
    Opened { fh: Fh, class: DeviceClass, passthrough: bool },
    /// Read data.
    Data(Vec<u8>),
    /// Bytes written.
    Written(u32),
    /// An ioctl's value and output.
    Ioctl(i32, Vec<u8>),
    /// Poll events.
    Polled(u32),
    /// An error.
    Error(Errno),
}

/// A fake reply of any kind: it sends its answer down a channel.
pub struct Fake {
    tx: Sender<Outcome>,
    /// What `register_backing` answers: `Ok` makes a backing, `Err` refuses.
    backing_ok: bool,
}

/// The test's side of a fake reply.
pub struct Answered(Receiver<Outcome>);

impl Answered {
    /// The answer, waiting for it.
    pub fn get(&self) -> Outcome {
        self.0.recv_timeout(WAIT).expect("the reply was never answered")
    }

    /// Whether it was answered within `d` (a reply that must stay parked).
    pub fn within(&self, d: Duration) -> Option<Outcome> {
        self.0.recv_timeout(d).ok()
    }

    /// The file handle of an open that must have succeeded.
    pub fn fh(&self) -> Fh {
        match self.get() {
            Outcome::Opened { fh, .. } => fh,
            other => panic!("open answered {other:?}"),
        }
    }
}

/// A fake reply and the way to see its answer.
pub fn fake() -> (Box<Fake>, Answered) {
    let (tx, rx) = channel();
    (Box::new(Fake { tx, backing_ok: true }), Answered(rx))
}

/// A fake open reply whose front end refuses passthrough.
pub fn fake_no_passthrough() -> (Box<Fake>, Answered) {
    let (tx, rx) = channel();
    (Box::new(Fake { tx, backing_ok: false }), Answered(rx))
}

impl Fake {
    fn send(&self, o: Outcome) {
        let _ = self.tx.send(o);
    }
}

impl reply::OpenReply for Fake {
    fn opened(self: Box<Self>, o: Opened<'_>) {
        let passthrough = o.passthrough.is_some_and(|b| b.get::<u32>().is_some());
        self.send(Outcome::Opened { fh: o.fh, class: o.class, passthrough });
    }
    fn error(self: Box<Self>, err: Errno) {
        self.send(Outcome::Error(err));
    }
    fn register_backing(&self, _fd: BorrowedFd<'_>) -> std::io::Result<Backing> {
        if self.backing_ok {
            Ok(Backing::new(7u32))
        } else {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        }
    }
}

impl reply::DataReply for Fake {
    fn data(self: Box<Self>, data: &[u8]) {
        self.send(Outcome::Data(data.to_vec()));
    }
    fn error(self: Box<Self>, err: Errno) {
        self.send(Outcome::Error(err));
    }
}

impl reply::WriteReply for Fake {
    fn written(self: Box<Self>, len: u32) {
        self.send(Outcome::Written(len));
    }
    fn error(self: Box<Self>, err: Errno) {
        self.send(Outcome::Error(err));
    }
}

impl reply::IoctlReply for Fake {
    fn ioctl(self: Box<Self>, result: i32, out: &[u8]) {
        self.send(Outcome::Ioctl(result, out.to_vec()));
    }
    fn error(self: Box<Self>, err: Errno) {
        self.send(Outcome::Error(err));
    }
}

impl reply::PollReply for Fake {
    fn poll(self: Box<Self>, revents: u32) {
        self.send(Outcome::Polled(revents));
    }
    fn error(self: Box<Self>, err: Errno) {
        self.send(Outcome::Error(err));
    }
}

/// A poll waker that counts its wakes.
pub struct CountingWaker(pub Arc<Mutex<u32>>);

impl PollWaker for CountingWaker {
    fn wake(self: Box<Self>) {
        *self.0.lock().unwrap() += 1;
    }
}

/// What the core told the kernel.
#[derive(Debug, Default)]
pub struct Told {
    /// `(parent, name)` of entries invalidated.
    pub inval: Mutex<Vec<(Ino, String)>>,
    /// `(parent, ino, name)` of entries deleted.
    pub deleted: Mutex<Vec<(Ino, Ino, String)>>,
}

/// A fake kernel notifier.
pub struct FakeNotify(pub Arc<Told>);

impl Notify for FakeNotify {
    fn inval_entry(&self, parent: Ino, name: &str) {
        self.0.inval.lock().unwrap().push((parent, name.to_owned()));
    }
    fn delete(&self, parent: Ino, ino: Ino, name: &str) {
        self.0.deleted.lock().unwrap().push((parent, ino, name.to_owned()));
    }
}

/// Every event, in order.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl Listener for Recorder {
    fn on_event(&self, _core: &Arc<Core>, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

/// Starts fake incarnations: a socket pair, the core's reader on one end,
/// a [`FakeDriver`] for the test on the other.
struct FakeLauncher(Mutex<Sender<FakeDriver>>);

impl Launcher for FakeLauncher {
    fn launch(&self, core: &Arc<Core>, inst: &Arc<Instance>) -> Result<(), SpawnError> {
        let (ours, theirs) = Channel::pair().map_err(|e| SpawnError::Socket(Arc::new(e)))?;
        setsockopt(&theirs.as_fd(), sockopt::ReceiveTimeout, &TimeVal::new(WAIT.as_secs() as _, 0)).unwrap();
        let policy = &inst.manifest.supervision;
        let conn =
            Arc::new(Conn::new(ours, policy.blocking_calls.clone(), Duration::from_millis(policy.request_timeout_ms)));
        core.begin_incarnation(inst, conn.clone(), None);
        let fake = FakeDriver {
            inst: inst.clone(),
            conn,
            chan: theirs,
            buf: RecvBuf::default(),
            next_device: 0,
            state: Vec::new(),
            fds: Vec::new(),
            dma: None,
            ring: None,
        };
        self.0.lock().unwrap().send(fake).unwrap();
        Ok(())
    }
}

/// A core under test.
pub struct Harness {
    /// The core.
    pub core: Arc<Core>,
    /// What it told the kernel.
    pub told: Arc<Told>,
    /// What it emitted.
    pub events: Arc<Recorder>,
    launched: Mutex<Receiver<FakeDriver>>,
    _dir: tempfile::TempDir,
}

/// A manifest for tests: `name`, starting with ddm, with `extra` TOML lines.
pub fn manifest(name: &str, extra: &str) -> String {
    format!("name = \"{name}\"\nexec = \"fake-{name}\"\nautostart = true\n{extra}")
}

impl Harness {
    /// A core knowing these manifests (TOML texts), with a fake notifier
    /// and launcher, an empty permission store in a temporary directory, and
    /// the plugin manager listening.
    pub fn new(manifests: &[String]) -> Harness {
        Harness::with_timeout(manifests, Duration::from_secs(2))
    }

    /// The same, with the fast path: each incarnation gets a ring, which
    /// its fake driver takes ([`FakeDriver::ring`]).
    pub fn fast(manifests: &[String]) -> Harness {
        Harness::make(manifests, Duration::from_secs(2), true)
    }

    /// The same, with this start timeout.
    pub fn with_timeout(manifests: &[String], start_timeout: Duration) -> Harness {
        Harness::make(manifests, start_timeout, false)
    }

    fn make(manifests: &[String], start_timeout: Duration, fast_path: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let catalog = manifests.iter().map(|m| Manifest::parse(m, "test").unwrap()).collect();
        let (perms, _) = PermStore::open(dir.path().join("permissions.json"));
        let fixed_spin = Some(Duration::from_millis(200));
        let config =
            Config { driver_dir: dir.path().to_owned(), start_timeout, fast_path, max_spinners: 64, fixed_spin };
        let core = Core::new(catalog, config, Policy::builtin(), perms);
        let told = Arc::new(Told::default());
        core.set_notifier(Box::new(FakeNotify(told.clone())));
        let (tx, rx) = channel();
        core.set_launcher(Arc::new(FakeLauncher(Mutex::new(tx))));
        let events = Arc::new(Recorder::default());
        core.listen(events.clone());
        core.listen(Arc::new(crate::plug::PlugManager));
        Harness { core, told, events, launched: Mutex::new(rx), _dir: dir }
    }

    /// Starts instance `name` and returns its fake driver, handshake and
    /// `Start` done.
    pub fn start(&self, name: &str) -> FakeDriver {
        let inst = self.core.instance(name).unwrap();
        self.core.start(&inst).unwrap();
        self.launched()
    }

    /// The next incarnation someone launched (the plugin manager, a test),
    /// handshake, DMA grant (if any) and `Start` done.
    pub fn launched(&self) -> FakeDriver {
        let mut d = self.launched.lock().unwrap().recv_timeout(WAIT).expect("nothing was launched");
        d.chan.handshake(&mut d.buf).unwrap();
        loop {
            let f = d.chan.recv(&mut d.buf).unwrap();
            match f.decode().unwrap() {
                DdmToDriver::Dma(grant) if d.dma.is_none() => {
                    let mut fds = f.fds;
                    assert_eq!(fds.len(), 1, "a DMA grant comes with its memfd");
                    d.dma = Some((grant, fds.remove(0)));
                }
                DdmToDriver::Start { state, .. } => {
                    d.state = state;
                    d.fds = f.fds;
                    break;
                }
                other => panic!("expected Start, got {other:?}"),
            }
        }
        if self.core.config.fast_path {
            let f = d.chan.recv(&mut d.buf).unwrap();
            let DdmToDriver::Ring(spec) = f.decode().unwrap() else { panic!("expected the ring") };
            let [ring, bell]: [OwnedFd; 2] = f.fds.try_into().unwrap();
            d.ring = Some((Arc::new(ddf::ring::Ring::accept(ring, spec).unwrap()), ddf::ring::Doorbell::from_fd(bell)));
        }
        d
    }

    /// Starts `name` with devices `names` (char), ready; returns the driver
    /// and the devices' inodes.
    pub fn running(&self, name: &str, devices: &[&str]) -> (FakeDriver, Vec<Ino>) {
        let mut d = self.start(name);
        for n in devices {
            d.add_device(n, DeviceClass::Char);
        }
        d.ready();
        let inos = devices.iter().map(|n| self.ino(n)).collect();
        (d, inos)
    }

    /// The inode at `path`.
    pub fn ino(&self, path: &str) -> Ino {
        self.core.tree.read().resolve(path).unwrap_or_else(|| panic!("no node {path}")).ino
    }

    /// Whether there is a node at `path`.
    pub fn exists(&self, path: &str) -> bool {
        self.core.tree.read().resolve(path).is_some()
    }

    /// Opens `ino` read-write, as a caller with thread id `pid`.
    pub fn open_as(&self, d: &mut FakeDriver, ino: Ino, pid: u32) -> (Fh, Handle) {
        let (r, a) = fake();
        self.core.open(ino, ddf::proto::OpenFlags::READ_WRITE, r, pid);
        let (id, call, _) = d.expect_call();
        let Call::Open { .. } = call else { panic!("expected an open, got {call:?}") };
        let handle = Handle(100 + id.0);
        d.reply(id, Ok(Answer::Opened { handle }), &[]);
        (a.fh(), handle)
    }

    /// Opens `ino` read-write.
    pub fn open(&self, d: &mut FakeDriver, ino: Ino) -> (Fh, Handle) {
        self.open_as(d, ino, 0)
    }

    /// Reads from `fh` as caller `pid`; returns the caller's side.
    pub fn read(&self, fh: Fh, len: u32, pid: u32) -> Answered {
        let (r, a) = fake();
        let flags = ddf::proto::OpenFlags::default();
        self.core.file_call(
            fh,
            move |handle| Call::Read { handle, offset: 0, len, flags },
            &[],
            Parked::Read(r, len),
            pid,
        );
        a
    }

    /// Writes `data` to `fh`; returns the caller's side.
    pub fn write(&self, fh: Fh, data: &[u8]) -> Answered {
        let (r, a) = fake();
        let flags = ddf::proto::OpenFlags::default();
        let parked = Parked::Write(r, data.len() as u32);
        self.core.file_call(fh, move |handle| Call::Write { handle, offset: 0, flags }, data, parked, 0);
        a
    }

    /// Ends incarnation `d` as a crash (SIGKILL) and moves the instance to
    /// `next`; returns how it ended.
    pub fn die(&self, d: FakeDriver, next: DriverState) -> Ended {
        let (inst, conn) = (d.inst.clone(), d.conn.clone());
        drop(d);
        let exit = Cause::Signal { sig: libc::SIGKILL, core: false };
        self.core.end_incarnation(&inst, &conn, exit, |_, _| (next, ())).0
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.0.lock().unwrap().clone()
    }
}

/// The test's end of one incarnation.
pub struct FakeDriver {
    /// The instance.
    pub inst: Arc<Instance>,
    /// The core's link to it.
    pub conn: Arc<Conn>,
    chan: Channel,
    buf: RecvBuf,
    next_device: u32,
    /// The state its `Start` carried.
    pub state: Vec<StateEntry>,
    /// The descriptors that came with it.
    pub fds: Vec<OwnedFd>,
    /// The DMA grant that came before it, with its memfd.
    pub dma: Option<(DmaGrant, OwnedFd)>,
    /// Its ring and doorbell (with the fast path).
    pub ring: Option<(Arc<ddf::ring::Ring>, ddf::ring::Doorbell)>,
}

impl FakeDriver {
    /// Its socket, for another thread (the same socket, a second descriptor).
    pub fn socket(&self) -> Channel {
        Channel::from_fd(self.chan.as_fd().try_clone_to_owned().unwrap()).unwrap()
    }

    /// Receives the next message from the core.
    pub fn recv(&mut self) -> (DdmToDriver, Vec<u8>) {
        let f = self.chan.recv(&mut self.buf).expect("the core sent nothing");
        (f.decode().unwrap(), f.payload.to_vec())
    }

    /// Receives the next message and checks it is a call.
    pub fn expect_call(&mut self) -> (RequestId, Call, Vec<u8>) {
        match self.recv() {
            (DdmToDriver::Call { id, call }, payload) => (id, call, payload),
            (other, _) => panic!("expected a call, got {other:?}"),
        }
    }

    /// Whether nothing comes from the core within `d`.
    pub fn quiet(&mut self, d: Duration) -> bool {
        setsockopt(&self.chan.as_fd(), sockopt::ReceiveTimeout, &TimeVal::new(0, d.as_micros() as _)).unwrap();
        let got = self.chan.recv(&mut self.buf).is_err();
        setsockopt(&self.chan.as_fd(), sockopt::ReceiveTimeout, &TimeVal::new(WAIT.as_secs() as _, 0)).unwrap();
        got
    }

    /// Sends a message.
    pub fn send(&self, msg: &DriverToDdm, payload: &[u8]) {
        self.send_fds(msg, payload, &[]);
    }

    /// Sends a message with descriptors.
    pub fn send_fds(&self, msg: &DriverToDdm, payload: &[u8], fds: &[BorrowedFd<'_>]) {
        self.chan.send(msg, payload, fds).unwrap();
    }

    /// Sends raw bytes as a frame.
    pub fn send_raw(&self, bytes: &[u8]) {
        self.chan.send_raw(bytes, &[], false).unwrap();
    }

    /// Answers request `id`.
    pub fn reply(&self, id: RequestId, result: Result<Answer, Errno>, payload: &[u8]) {
        self.send(&DriverToDdm::Reply { id, result }, payload);
    }

    /// Answers request `id` with a descriptor.
    pub fn reply_fd(&self, id: RequestId, result: Result<Answer, Errno>, fd: &OwnedFd) {
        self.send_fds(&DriverToDdm::Reply { id, result }, &[], &[fd.as_fd()]);
    }

    /// Registers a device where the driver is attached.
    pub fn add_device(&mut self, name: &str, class: DeviceClass) -> DeviceId {
        self.add(DeviceSpec::new(DeviceId(0), name, class, if class == DeviceClass::Block { 4096 } else { 0 }))
    }

    /// Registers a device described in full (its number is filled in).
    pub fn add(&mut self, mut spec: DeviceSpec) -> DeviceId {
        let id = DeviceId(self.next_device);
        self.next_device += 1;
        spec.device = id;
        self.send(&DriverToDdm::AddDevice(spec), &[]);
        id
    }

    /// Registers a bus.
    pub fn add_bus(&self, bus: BusId, name: &str, kind: &str) {
        self.send(&DriverToDdm::AddBus { bus, name: name.into(), kind: kind.into(), parent: None }, &[]);
    }

    /// Says ready and waits until the core has taken it in.
    pub fn ready(&self) {
        self.send(&DriverToDdm::Ready, &[]);
        assert_eq!(self.inst.wait_ready(WAIT), DriverState::Running);
    }

    /// Waits until the core has handled everything sent so far (a ping
    /// would need the watchdog; a harmless message the core answers is
    /// none, so this waits on the link's reader by a counter message).
    pub fn sync(&self) {
        let n = self.inst.counters.lock().get("sync").copied().unwrap_or(0) + 1;
        self.send(&DriverToDdm::Counters(vec![("sync".into(), n)]), &[]);
        wait_until(|| self.inst.counters.lock().get("sync") == Some(&n));
    }

    /// State saved with the DDM under `key`, as the next `Start` carries it.
    pub fn save_state(&self, key: &str, bytes: &[u8]) {
        self.send(&DriverToDdm::SaveState { key: key.into() }, bytes);
    }
}

/// Waits until `f` holds, at most [`WAIT`]; panics if it never does.
pub fn wait_until(mut f: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting");
        std::thread::sleep(Duration::from_millis(2));
    }
}
