//! `ddf-chaos`: the chaos run of issue 5, behind `scripts/chaos`.
//!
//! It starts its own `ddm` on a temporary mount (the built-in `null` driver
//! serving `null` and `zero`, plus the test driver `ddf-testdrv` as `stall`,
//! a device whose reads park until the reader is signalled or the driver
//! dies), puts load on it, breaks its drivers again and again, and prints one
//! table.
//!
//! **Load.** K client threads. Every fourth one reads `stall` (at least one
//! when K >= 2): its read parks, and must end with EIO when the stall driver
//! dies (the client then opens the device again) or with EINTR when the run
//! signals the thread (every 1-5 s, which exercises the DDM's interrupt
//! path). The others are data clients: they alternate between reading 4 KiB
//! from `zero` (checked to be zeros) and writing 4 KiB to `null`, as fast as
//! they can. A quarter of the files they open are kept for 10-200 more
//! operations, so handles opened before a restart of `null` are used after
//! it (its manifest says `handles_survive_restart`).
//!
//! **Faults.** M rounds, spread evenly over the duration. Round i breaks
//! `null` (even i) or `stall` (odd i) with the next fault of `--faults`, in
//! turn: `kill` is a SIGKILL of the pid the DDM's status shows; the others
//! are the DDM's fault injection (`ddmctl inject`: panic, abort, segv, hang,
//! garbage, exit, and the fast path's ring-garbage, ring-stray,
//! ring-overlong, ring-death, which break the driver's next answer in its
//! ring slot, or in its socket frame when that answer takes the socket),
//! sent through libDDM like `ddmctl` does. A round starts only once its
//! victim is running.
//!
//! **Measures.**
//! - restart latency: from the fault to the DDM's status showing the victim
//!   running under a new pid (status polled every 2 ms through libDDM). It
//!   includes the heartbeat's detection for `hang` and the restart policy's
//!   backoff (first restart at once, then 100 ms doubling), so the table
//!   also shows the restarts that had no backoff (a driver's first death in
//!   60 s since its last fresh start) and no heartbeat wait (not `hang`):
//!   the cost of the mechanism itself.
//! - in-flight failure latency (stall rounds only: null requests do not
//!   park): right before the fault a fresh reader is parked on `stall`
//!   (confirmed by its thread's wchan, `request_wait_answer`); the latency
//!   is from the fault to its read returning EIO.
//! - after every round: ddm's process exists and `ls MNT` answers in 5 s.
//!
//! **Hangs.** Every client operation runs under a watchdog thread that never
//! waits on a client. A non-parking operation (open, a read of zero, a write)
//! taking more than 10 s, or a parked stall read still blocked 10 s after its
//! driver was broken or its thread signalled, counts the client as hung. At
//! the end clients get 10 s to stop; any that does not is reported hung and
//! is not joined. Control calls to the DDM and `ls` run in helper threads
//! with deadlines too.
//!
//! **Quarantine.** The default policy quarantines a driver at its 5th death
//! within 60 s. With the defaults (20 rounds in 120 s) each driver dies every
//! 12 s, so every 5th death of a driver quarantines it; the run sees `failed`,
//! calls `ddmctl restart` (through libDDM) and counts both. That round's time
//! to recover is not a restart-latency sample. Rounds more than 7.5 s apart
//! (say `--kills 14 --duration 120`) stay clear of quarantine.
//!
//! Exit status: 0 when no client hung, ddm stayed up and every broken driver
//! came back; 1 otherwise (the table says which); 2 when the run could not be
//! set up. Needs root (FUSE mount). Ctrl-C ends the run early with a table;
//! a second Ctrl-C stops ddm and leaves at once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ddf::ddm::{Ddm as DdmLink, DdmError};
use ddf::proto::{DriverState, DriverStatus, Fault};
use ddf_tests::{is_mounted, lock, wait_until, DdmProcess, LaunchError, Stopped};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

/// An operation slower than this hangs its client.
const HANG: Duration = Duration::from_secs(10);
/// How long a broken driver may take to run again before the round fails
/// (covers heartbeat detection and the longest backoff).
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for one control call to the DDM.
const CTL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for `ls MNT`.
const LS_TIMEOUT: Duration = Duration::from_secs(5);
/// Status polling period while a driver restarts.
const POLL: Duration = Duration::from_millis(2);
/// The default policy's crash-loop window (deaths in it count towards
/// quarantine, and the 2nd and later ones wait for backoff).
const WINDOW: Duration = Duration::from_secs(60);
/// Bytes per read or write.
const IO_SIZE: usize = 4096;

const STALL_MANIFEST: &str = "name = \"stall\"\nexec = \"ddf-testdrv\"\nautostart = true\n";

/// Set on the first Ctrl-C (or SIGTERM): end the run early, with a table.
static STOP: AtomicBool = AtomicBool::new(false);

/// Chaos run for ddf: K clients on null, zero and a stalling test device
/// while drivers are killed or broken M times; prints one table.
#[derive(Debug, Parser)]
#[command(
    name = "ddf-chaos",
    version,
    long_about = None,
    after_help = "Needs root (it mounts its own ddm on a temporary directory). \
scripts/chaos builds the workspace (release; --debug for the debug profile) and runs this \
with the same arguments. Exit status: 0 clean, 1 a client hung, ddm died or a driver did \
not come back, 2 set-up failed."
)]
struct Args {
    /// Client threads (every fourth one reads the stall device) [default: 8; --short: 4].
    #[arg(long, value_name = "K")]
    clients: Option<usize>,

    /// Fault rounds, alternating between the null and stall drivers [default: 20; --short: 4].
    #[arg(long, value_name = "M")]
    kills: Option<usize>,

    /// Length of the run in seconds [default: 120; --short: 20].
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,

    /// Faults to use, in turn.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,panic,abort,segv,hang,garbage,exit,ring-garbage,ring-stray,ring-overlong,ring-death"
    )]
    faults: Vec<FaultKind>,

    /// A smoke run: 4 clients, 4 rounds, 20 s (explicit options win).
    #[arg(long)]
    short: bool,

    /// Directory holding ddm, ddf-null and ddf-testdrv [default: the directory of this program].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,

    /// Keep ddm's log in this file [default: a temporary file, removed at the end; its tail is
    /// printed when the run fails]. DDF_CHAOS_DDM_LOG sets ddm's RUST_LOG (default info,fuser=warn).
    #[arg(long, value_name = "FILE")]
    ddm_log: Option<PathBuf>,
}

/// How a round breaks its victim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum FaultKind {
    /// SIGKILL of the driver's pid.
    Kill,
    /// `ddmctl inject DRIVER panic`.
    Panic,
    /// `ddmctl inject DRIVER abort`.
    Abort,
    /// `ddmctl inject DRIVER segv`.
    Segv,
    /// `ddmctl inject DRIVER hang` (found by the heartbeat).
    Hang,
    /// `ddmctl inject DRIVER garbage` (an undecodable frame).
    Garbage,
    /// `ddmctl inject DRIVER exit` (a clean exit nobody asked for).
    Exit,
    /// `ddmctl inject DRIVER ring-garbage` (garbage in a ring slot).
    RingGarbage,
    /// `ddmctl inject DRIVER ring-stray` (a ring answer to a request never made).
    RingStray,
    /// `ddmctl inject DRIVER ring-overlong` (a length beyond the slot).
    RingOverlong,
    /// `ddmctl inject DRIVER ring-death` (dies in the middle of an answer).
    RingDeath,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Panic => "panic",
            FaultKind::Abort => "abort",
            FaultKind::Segv => "segv",
            FaultKind::Hang => "hang",
            FaultKind::Garbage => "garbage",
            FaultKind::Exit => "exit",
            FaultKind::RingGarbage => "ring-garbage",
            FaultKind::RingStray => "ring-stray",
            FaultKind::RingOverlong => "ring-overlong",
            FaultKind::RingDeath => "ring-death",
        }
    }

    /// The injected fault, or `None` for a kill from outside.
    fn injected(self) -> Option<Fault> {
        match self {
            FaultKind::Kill => None,
            FaultKind::Panic => Some(Fault::Panic),
            FaultKind::Abort => Some(Fault::Abort),
            FaultKind::Segv => Some(Fault::Segv),
            FaultKind::Hang => Some(Fault::Hang),
            FaultKind::Garbage => Some(Fault::Garbage),
            FaultKind::Exit => Some(Fault::Exit(0)),
            FaultKind::RingGarbage => Some(Fault::RingGarbage),
            FaultKind::RingStray => Some(Fault::RingStray),
            FaultKind::RingOverlong => Some(Fault::RingOverlong),
            FaultKind::RingDeath => Some(Fault::RingDeath),
        }
    }
}

/// The drivers a round may break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Victim {
    Null,
    Stall,
}

impl Victim {
    fn name(self) -> &'static str {
        match self {
            Victim::Null => "null",
            Victim::Stall => "stall",
        }
    }
}

/// Why the run could not be set up.
#[derive(Debug)]
enum SetupError {
    NotRoot,
    Plan(String),
    Launch(LaunchError),
    NotUp(String),
    Signals(nix::Error),
    Drivers(String),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::NotRoot => write!(f, "needs root to mount ddm's FUSE file system; run it with sudo"),
            SetupError::Plan(why) => write!(f, "{why}"),
            SetupError::Launch(e) => write!(f, "{}", ddf::error_chain(e)),
            SetupError::NotUp(why) => write!(f, "ddm did not come up: {why}"),
            SetupError::Signals(e) => write!(f, "cannot set up signal handling: {e}"),
            SetupError::Drivers(why) => write!(f, "drivers not ready at start: {why}"),
        }
    }
}

/// The run's size, after `--short` and the defaults.
#[derive(Debug, Clone)]
struct Plan {
    clients: usize,
    kills: usize,
    duration: Duration,
    faults: Vec<FaultKind>,
}

impl Plan {
    fn from_args(a: &Args) -> Result<Plan, SetupError> {
        let (k, m, d) = if a.short { (4, 4, 20) } else { (8, 20, 120) };
        let plan = Plan {
            clients: a.clients.unwrap_or(k),
            kills: a.kills.unwrap_or(m),
            duration: Duration::from_secs(a.duration.unwrap_or(d)),
            faults: a.faults.clone(),
        };
        if plan.clients == 0 {
            return Err(SetupError::Plan("--clients must be at least 1".into()));
        }
        if plan.duration.is_zero() {
            return Err(SetupError::Plan("--duration must be at least 1 second".into()));
        }
        if plan.faults.is_empty() {
            return Err(SetupError::Plan("--faults needs at least one fault".into()));
        }
        Ok(plan)
    }

    /// Stall clients: every fourth, at least one when there are two or more.
    fn stall_clients(&self) -> usize {
        match self.clients {
            0 | 1 => 0,
            k => (k / 4).max(1),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ddf-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EIO => "EIO",
        libc::EAGAIN => "EAGAIN",
        libc::ENXIO => "ENXIO",
        libc::ENODEV => "ENODEV",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::ENOTCONN => "ENOTCONN",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOSYS => "ENOSYS",
        libc::EBUSY => "EBUSY",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::EHOSTDOWN => "EHOSTDOWN",
        0 => "no errno",
        _ => return format!("errno {e}"),
    };
    name.to_owned()
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// A small xorshift generator: the run needs variety, not quality.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng((t ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

// ---------------------------------------------------------------------------
// ddm: our own instance on a temporary mount.

/// Starts ddm with `stall` beside the built-in drivers. Dropping it (also on
/// a panic) stops ddm and detaches the mount; the signal thread finds it with
/// `ddf_tests::take_launched`.
fn start_ddm(bins: &Path, log: Option<&Path>) -> Result<DdmProcess, SetupError> {
    let mut b = DdmProcess::builder(bins)
        .temp_prefix("ddf-chaos-")
        .manifest("stall.toml", STALL_MANIFEST)
        .env("RUST_LOG", std::env::var("DDF_CHAOS_DDM_LOG").unwrap_or_else(|_| "info,fuser=warn".into()))
        // A Ctrl-C meant for the run does not stop ddm.
        .own_process_group()
        .wait_for("null")
        .wait_for("zero")
        .wait_for("stall")
        .timeout(Duration::from_secs(30));
    if let Some(log) = log {
        b = b.log_file(log);
    }
    b.start().map_err(SetupError::Launch)
}

/// Why ddm is gone, as far as its exit status and its log tell.
fn death(ddm: &mut DdmProcess) -> String {
    let how = ddm.exit_status().map_or_else(|| "gone".into(), |s| s.to_string());
    let log = ddm.log();
    // ddm logs "SIGTERM: stopping drivers ..." when a signal stops it;
    // the run itself sends none before the end.
    match ["SIGTERM", "SIGINT", "SIGHUP"].into_iter().find(|s| log.contains(&format!("{s}: stopping"))) {
        Some(sig) => format!(
            "ddm's process ended ({how}) after a {sig} from outside the run (its log says so); \
             is another program stopping ddm processes?"
        ),
        None => format!("ddm's process ended ({how})"),
    }
}

/// `ls MNT` with a deadline: the names, or why not.
fn ls(mnt: &Path) -> Result<Vec<String>, String> {
    let (tx, rx) = mpsc::channel();
    let dir = mnt.to_path_buf();
    thread::Builder::new()
        .name("ls".into())
        .spawn(move || {
            let r = std::fs::read_dir(&dir).and_then(|it| {
                it.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect::<Result<Vec<_>, _>>()
            });
            let _ = tx.send(r);
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    match rx.recv_timeout(LS_TIMEOUT) {
        Ok(Ok(names)) => Ok(names),
        Ok(Err(e)) => Err(format!("ls {} failed: {e}", mnt.display())),
        Err(_) => Err(format!("ls {} did not answer in {} s", mnt.display(), LS_TIMEOUT.as_secs())),
    }
}

// ---------------------------------------------------------------------------
// Control calls, in a worker thread so that a stuck DDM cannot stick the run.

enum CtlReq {
    Status,
    Inject(&'static str, Fault),
    Restart(&'static str),
}

enum CtlAns {
    Status(Vec<DriverStatus>),
    Done,
}

type CtlJob = (CtlReq, mpsc::Sender<Result<CtlAns, String>>);

/// libDDM on ddm's control socket, behind a deadline.
#[derive(Debug)]
struct Ctl {
    tx: mpsc::Sender<CtlJob>,
    /// Set when a call missed its deadline: the worker is stuck.
    stuck: AtomicBool,
}

impl Ctl {
    fn spawn(socket: PathBuf) -> Result<Ctl, SetupError> {
        let (tx, rx) = mpsc::channel::<CtlJob>();
        thread::Builder::new()
            .name("ctl".into())
            .spawn(move || {
                let mut link: Option<DdmLink> = None;
                for (req, reply) in rx {
                    let res = Ctl::serve(&socket, &mut link, req);
                    let _ = reply.send(res);
                }
            })
            .map_err(|e| SetupError::NotUp(format!("cannot start the control thread: {e}")))?;
        Ok(Ctl { tx, stuck: AtomicBool::new(false) })
    }

    fn serve(socket: &Path, link: &mut Option<DdmLink>, req: CtlReq) -> Result<CtlAns, String> {
        if link.is_none() {
            *link = Some(DdmLink::connect(socket).map_err(|e| ddf::error_chain(&e))?);
        }
        let Some(l) = link.as_mut() else {
            return Err("not connected".into());
        };
        let res = match req {
            CtlReq::Status => l.status().map(CtlAns::Status),
            CtlReq::Inject(d, f) => l.inject(d, f).map(|_| CtlAns::Done),
            CtlReq::Restart(d) => l.restart(d).map(|_| CtlAns::Done),
        };
        match res {
            Ok(a) => Ok(a),
            Err(e) => {
                // A refusal leaves the link usable; anything else, reconnect.
                if !matches!(e, DdmError::Refused(_)) {
                    *link = None;
                }
                Err(ddf::error_chain(&e))
            }
        }
    }

    fn call(&self, req: CtlReq) -> Result<CtlAns, String> {
        if self.stuck.load(Ordering::SeqCst) {
            return Err("the control socket stopped answering earlier".into());
        }
        let (tx, rx) = mpsc::channel();
        self.tx.send((req, tx)).map_err(|_| "the control thread is gone".to_owned())?;
        match rx.recv_timeout(CTL_TIMEOUT) {
            Ok(r) => r,
            Err(_) => {
                self.stuck.store(true, Ordering::SeqCst);
                Err(format!("ddm's control socket did not answer in {} s", CTL_TIMEOUT.as_secs()))
            }
        }
    }

    fn status(&self) -> Result<Vec<DriverStatus>, String> {
        match self.call(CtlReq::Status)? {
            CtlAns::Status(s) => Ok(s),
            CtlAns::Done => Err("unexpected answer to status".into()),
        }
    }

    fn driver(&self, name: &str) -> Result<DriverStatus, String> {
        self.status()?.into_iter().find(|d| d.name == name).ok_or_else(|| format!("status does not list driver {name}"))
    }

    fn inject(&self, driver: &'static str, f: Fault) -> Result<(), String> {
        self.call(CtlReq::Inject(driver, f)).map(|_| ())
    }

    fn restart(&self, driver: &'static str) -> Result<(), String> {
        self.call(CtlReq::Restart(driver)).map(|_| ())
    }
}

// ---------------------------------------------------------------------------
// Clients and the watchdog.

/// What a client is doing now.
#[derive(Debug)]
struct Op {
    what: &'static str,
    started: Instant,
    /// A stall read: may block until its driver dies or it is signalled.
    parks: bool,
    /// When the watchdog should signal it (stall reads).
    interrupt_at: Option<Instant>,
    /// When it was first signalled, and last.
    poked: Option<Instant>,
    last_poke: Option<Instant>,
}

/// One client, as the watchdog sees it.
#[derive(Debug)]
struct Slot {
    name: String,
    /// The client's pthread, for `pthread_kill`; valid while `op` is `Some`.
    thread: AtomicU64,
    op: Mutex<Option<Op>>,
    hung: Mutex<Option<String>>,
    finished: AtomicBool,
}

impl Slot {
    fn new(name: String) -> Slot {
        Slot {
            name,
            thread: AtomicU64::new(0),
            op: Mutex::new(None),
            hung: Mutex::new(None),
            finished: AtomicBool::new(false),
        }
    }
}

/// Counters every thread adds to.
#[derive(Debug, Default)]
struct Stats {
    /// Successful opens, reads and writes.
    ok: AtomicU64,
    /// Failed operations by (operation, errno).
    errors: Mutex<BTreeMap<(&'static str, i32), u64>>,
    /// Zero reads that were short or not zeros; stall reads that returned data.
    bad_data: AtomicU64,
    /// Parked stall reads ended with EIO (their driver died).
    stall_eio: AtomicU64,
    /// Parked stall reads ended with EINTR (the run signalled them).
    stall_eintr: AtomicU64,
    /// Kept null/zero files used after a restart of null: worked, failed.
    kept_ok: AtomicU64,
    kept_failed: AtomicU64,
    /// Kept files that failed because null was quarantined meanwhile (a
    /// quarantine ends every handle, by design).
    kept_lost: AtomicU64,
    /// The slowest non-parking operation.
    longest: Mutex<(Duration, &'static str)>,
}

impl Stats {
    fn error(&self, what: &'static str, errno: i32) {
        *lock(&self.errors).entry((what, errno)).or_insert(0) += 1;
    }
}

/// State shared by the clients, the watchdog and the main loop.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    stats: Stats,
    /// When the stall driver was last broken (stall reads must end by then + HANG).
    stall_fault_at: Mutex<Option<Instant>>,
    /// Incarnations of null seen running so far (for the kept-files count).
    null_gen: AtomicU64,
    /// Files kept from before this incarnation of null were ended by a quarantine.
    null_lost_gen: AtomicU64,
    slots: Vec<Arc<Slot>>,
    zero: PathBuf,
    null: PathBuf,
    stall: PathBuf,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || STOP.load(Ordering::Relaxed)
    }
}

/// Runs `f` as operation `what` of `slot`, under the watchdog.
fn timed<T>(sh: &Shared, slot: &Slot, what: &'static str, interrupt_at: Option<Instant>, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    *lock(&slot.op) =
        Some(Op { what, started, parks: interrupt_at.is_some(), interrupt_at, poked: None, last_poke: None });
    let r = f();
    *lock(&slot.op) = None;
    if interrupt_at.is_none() {
        let took = started.elapsed();
        let mut l = lock(&sh.stats.longest);
        if took > l.0 {
            *l = (took, what);
        }
    }
    r
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// Installs a do-nothing SIGUSR1 handler (without SA_RESTART): the watchdog
/// signals parked stall readers with it, and their read returns EINTR.
fn install_sigusr1() -> Result<(), SetupError> {
    let act = SigAction::new(SigHandler::Handler(on_sigusr1), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler does nothing, so it is async-signal-safe, and no
    // other code of this program uses SIGUSR1.
    unsafe { signal::sigaction(Signal::SIGUSR1, &act) }.map_err(SetupError::Signals)?;
    Ok(())
}

/// Signals the client's thread with SIGUSR1. Call with `slot.op` locked and
/// `Some`: the thread is then alive (it clears `op` before it ends).
fn poke(slot: &Slot) {
    let t = slot.thread.load(Ordering::SeqCst) as libc::pthread_t;
    if t != 0 {
        // SAFETY: `t` is the pthread_self() of a thread that has not ended
        // (see above); SIGUSR1 has a handler.
        unsafe { libc::pthread_kill(t, libc::SIGUSR1) };
    }
}

/// The watchdog: every 50 ms, looks at every client's current operation.
fn watchdog(sh: Arc<Shared>, done: Arc<AtomicBool>) {
    while !done.load(Ordering::SeqCst) {
        let now = Instant::now();
        let fault = *lock(&sh.stall_fault_at);
        let stopping = sh.stopping();
        for slot in &sh.slots {
            let mut g = lock(&slot.op);
            let Some(op) = g.as_mut() else { continue };
            let hung_for = if op.parks {
                let due = stopping || op.interrupt_at.is_some_and(|t| now >= t);
                // Again every 500 ms: a signal that lands just before the
                // read starts is consumed by the handler and parks nothing.
                if due && op.last_poke.is_none_or(|t| now - t >= Duration::from_millis(500)) {
                    poke(slot);
                    op.poked.get_or_insert(now);
                    op.last_poke = Some(now);
                }
                // It must end within HANG of the first event that should end it.
                [op.poked, fault.filter(|f| *f >= op.started)]
                    .into_iter()
                    .flatten()
                    .min()
                    .map(|ev| now.saturating_duration_since(ev))
            } else {
                Some(now - op.started)
            };
            if hung_for.is_some_and(|d| d > HANG) {
                let mut h = lock(&slot.hung);
                if h.is_none() {
                    let msg = format!("{} stuck more than {} s in {}", slot.name, HANG.as_secs(), op.what);
                    eprintln!("ddf-chaos: HUNG: {msg}");
                    *h = Some(msg);
                }
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A file a data client keeps across operations.
#[derive(Debug)]
struct Kept {
    file: File,
    /// `null_gen` when it was opened or last used.
    gen: u64,
    uses_left: u32,
}

/// A data client: zero reads and null writes, alternating.
fn data_client(sh: Arc<Shared>, slot: Arc<Slot>, id: usize) {
    let mut rng = Rng::new(id as u64 + 1);
    let mut kept: [Option<Kept>; 2] = [None, None];
    let mut buf = vec![0u8; IO_SIZE];
    let mut n = id;
    while !sh.stopping() {
        n += 1;
        let zero = n % 2 == 0;
        let (path, open_what, io_what) =
            if zero { (&sh.zero, "open zero", "read zero") } else { (&sh.null, "open null", "write null") };
        let idx = usize::from(!zero);
        let (file, gen, uses_left, was_kept) = match kept[idx].take() {
            Some(k) => (k.file, k.gen, k.uses_left, true),
            None => {
                let gen = sh.null_gen.load(Ordering::SeqCst);
                let r = timed(&sh, &slot, open_what, None, || {
                    if zero {
                        File::open(path)
                    } else {
                        OpenOptions::new().write(true).open(path)
                    }
                });
                match r {
                    Ok(f) => {
                        sh.stats.ok.fetch_add(1, Ordering::Relaxed);
                        (f, gen, 0, false)
                    }
                    Err(e) => {
                        sh.stats.error(open_what, errno_of(&e));
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
            }
        };
        let mut file = file;
        // Compared before the operation: one that was in flight when null
        // died may fail with EIO, that is no lost handle.
        let gen_before = sh.null_gen.load(Ordering::SeqCst);
        let lost = gen < sh.null_lost_gen.load(Ordering::SeqCst);
        let r = timed(&sh, &slot, io_what, None, || {
            if zero {
                buf.fill(0xAA);
                file.read(&mut buf)
            } else {
                file.write(&buf)
            }
        });
        let across_restart = was_kept && gen < gen_before;
        match r {
            Ok(k) => {
                if k != IO_SIZE || (zero && buf.iter().any(|b| *b != 0)) {
                    sh.stats.bad_data.fetch_add(1, Ordering::Relaxed);
                } else {
                    sh.stats.ok.fetch_add(1, Ordering::Relaxed);
                }
                if across_restart {
                    sh.stats.kept_ok.fetch_add(1, Ordering::Relaxed);
                }
                let uses_left = if was_kept {
                    uses_left.saturating_sub(1)
                } else if rng.range(0, 4) == 0 {
                    rng.range(10, 200) as u32
                } else {
                    0
                };
                if uses_left > 0 {
                    kept[idx] = Some(Kept { file, gen: gen_before, uses_left });
                }
            }
            Err(e) => {
                if across_restart && lost {
                    sh.stats.kept_lost.fetch_add(1, Ordering::Relaxed);
                } else if across_restart {
                    sh.stats.kept_failed.fetch_add(1, Ordering::Relaxed);
                }
                sh.stats.error(io_what, errno_of(&e));
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A stall client: parks reads on `stall`, re-opens after its driver dies.
fn stall_client(sh: Arc<Shared>, slot: Arc<Slot>, id: usize) {
    let mut rng = Rng::new(1000 + id as u64);
    let mut buf = vec![0u8; IO_SIZE];
    'open: while !sh.stopping() {
        let r = timed(&sh, &slot, "open stall", None, || OpenOptions::new().read(true).write(true).open(&sh.stall));
        let mut file = match r {
            Ok(f) => {
                sh.stats.ok.fetch_add(1, Ordering::Relaxed);
                f
            }
            Err(e) => {
                sh.stats.error("open stall", errno_of(&e));
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        match timed(&sh, &slot, "write stall", None, || file.write(&buf)) {
            Ok(_) => {
                sh.stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                sh.stats.error("write stall", errno_of(&e));
                thread::sleep(Duration::from_millis(20));
                continue 'open;
            }
        }
        while !sh.stopping() {
            let at = Instant::now() + Duration::from_millis(rng.range(1000, 5000));
            match timed(&sh, &slot, "read stall", Some(at), || file.read(&mut buf)) {
                Ok(_) => {
                    // A stall read never returns data.
                    sh.stats.bad_data.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => match errno_of(&e) {
                    libc::EINTR => {
                        sh.stats.stall_eintr.fetch_add(1, Ordering::Relaxed);
                    }
                    libc::EIO => {
                        sh.stats.stall_eio.fetch_add(1, Ordering::Relaxed);
                        sh.stats.error("read stall", libc::EIO);
                        continue 'open;
                    }
                    other => {
                        sh.stats.error("read stall", other);
                        thread::sleep(Duration::from_millis(20));
                        continue 'open;
                    }
                },
            }
        }
    }
}

/// Starts client `id` on its own thread.
fn spawn_client(sh: &Arc<Shared>, slot: &Arc<Slot>, id: usize, stall: bool) -> Result<thread::JoinHandle<()>, String> {
    let (sh, slot) = (sh.clone(), slot.clone());
    thread::Builder::new()
        .name(slot.name.clone())
        .spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            let me = unsafe { libc::pthread_self() };
            slot.thread.store(me as u64, Ordering::SeqCst);
            if stall {
                stall_client(sh, slot.clone(), id);
            } else {
                data_client(sh, slot.clone(), id);
            }
            slot.finished.store(true, Ordering::SeqCst);
        })
        .map_err(|e| format!("cannot start client {id}: {e}"))
}

// ---------------------------------------------------------------------------
// The in-flight probe: one parked stall read per stall round.

enum ProbeMsg {
    /// About to read, on this thread (its tid and pthread).
    Reading(i32, libc::pthread_t),
    /// Could not open the device.
    OpenFailed(String),
    /// The read returned, at this time.
    Done(Instant, std::io::Result<usize>),
}

/// A parked reader on `stall`, ready for the fault. Its thread stays alive
/// until the `Probe` is dropped, so `thread` stays valid for `pthread_kill`.
struct Probe {
    rx: mpsc::Receiver<ProbeMsg>,
    thread: libc::pthread_t,
    /// Whether its wchan showed it waiting for the FUSE answer.
    confirmed: bool,
    /// Dropped with the probe: lets its thread end.
    _hold: mpsc::Sender<()>,
}

impl Probe {
    /// Signals the reader (its read should end with EINTR).
    fn interrupt(&self) {
        // SAFETY: the probe thread does not end before `_hold` is dropped,
        // which happens only with `self`; SIGUSR1 has a handler.
        unsafe { libc::pthread_kill(self.thread, libc::SIGUSR1) };
    }
}

/// Starts a reader on `stall` and waits until it is parked.
fn start_probe(stall: &Path) -> Result<Probe, String> {
    let (tx, rx) = mpsc::channel();
    let (hold, held) = mpsc::channel::<()>();
    let path = stall.to_path_buf();
    thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            // Whatever happens, stay until the Probe is dropped.
            let _wait = Defer(move || {
                let _ = held.recv();
            });
            let end = Instant::now() + HANG;
            let mut file = loop {
                match File::open(&path) {
                    Ok(f) => break f,
                    Err(e) if Instant::now() < end => {
                        let _ = e;
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        let _ = tx.send(ProbeMsg::OpenFailed(e.to_string()));
                        return;
                    }
                }
            };
            // SAFETY: pthread_self has no preconditions.
            let me = unsafe { libc::pthread_self() };
            let _ = tx.send(ProbeMsg::Reading(nix::unistd::gettid().as_raw(), me));
            let mut buf = vec![0u8; IO_SIZE];
            let r = file.read(&mut buf);
            let _ = tx.send(ProbeMsg::Done(Instant::now(), r));
        })
        .map_err(|e| format!("cannot start the probe reader: {e}"))?;
    let (tid, thread) = match rx.recv_timeout(HANG + Duration::from_secs(1)) {
        Ok(ProbeMsg::Reading(tid, thread)) => (tid, thread),
        Ok(ProbeMsg::OpenFailed(e)) => return Err(format!("probe cannot open {}: {e}", stall.display())),
        Ok(ProbeMsg::Done(..)) => return Err("probe read returned before it was parked".into()),
        Err(_) => return Err(format!("probe could not open {} in {} s", stall.display(), HANG.as_secs())),
    };
    let wchan = format!("/proc/self/task/{tid}/wchan");
    let confirmed = wait_until(Duration::from_secs(2), || {
        std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("request_wait_answer") || w.contains("fuse"))
    });
    if !confirmed {
        // No wchan to go by: give the read time to reach the driver.
        thread::sleep(Duration::from_millis(200));
    }
    Ok(Probe { rx, thread, confirmed, _hold: hold })
}

/// Runs a closure when dropped.
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

// ---------------------------------------------------------------------------
// Rounds.

/// What one fault round saw.
#[derive(Debug, Default)]
struct Round {
    /// Fault to running under a new pid, when the supervisor did it alone.
    restart: Option<Duration>,
    /// The victim's first death in the default crash-loop window (60 s)
    /// since its last fresh start: the policy restarts it without backoff.
    first: bool,
    /// Fault to the parked probe's EIO.
    in_flight: Option<Duration>,
    /// The driver was quarantined and `ddmctl restart` brought it back.
    quarantined: bool,
    ctl_restarts: u32,
    /// Time from `ddmctl restart` to running.
    ctl_restart: Option<Duration>,
    /// The probe did not return within HANG of the fault.
    probe_hung: bool,
    /// Things that went wrong, for the report.
    problems: Vec<String>,
}

/// Waits until `name` runs under a pid other than `old`; restarts it
/// through the control socket if it is quarantined. Gives up when the old
/// pid still runs [`HANG`] after the fault, or nothing runs after
/// [`RESTART_TIMEOUT`].
fn recover(ctl: &Ctl, name: &'static str, old: Option<u32>, t0: Instant, round: &mut Round) -> Result<(), String> {
    let deadline = t0 + RESTART_TIMEOUT;
    let mut restart_at: Option<Instant> = None;
    loop {
        let st = ctl.driver(name)?;
        let now = Instant::now();
        if st.state == DriverState::Running && st.pid.is_some() && st.pid != old {
            match restart_at {
                None => round.restart = Some(now - t0),
                Some(r) => round.ctl_restart = Some(now - r),
            }
            return Ok(());
        }
        if st.state == DriverState::Failed && restart_at.is_none() {
            round.quarantined = true;
            ctl.restart(name).map_err(|e| format!("ddmctl restart {name}: {e}"))?;
            round.ctl_restarts += 1;
            restart_at = Some(Instant::now());
        }
        if st.state == DriverState::Running && st.pid == old && now - t0 > HANG {
            // Even a hang is found by the heartbeat well before this.
            return Err(format!(
                "the fault did not take: driver {name} still runs as pid {} {} s later",
                st.pid.unwrap_or(0),
                HANG.as_secs()
            ));
        }
        if now > deadline {
            return Err(format!(
                "driver {name} not running again {} s after the fault (state {}, pid {:?})",
                RESTART_TIMEOUT.as_secs(),
                st.state.as_str(),
                st.pid
            ));
        }
        thread::sleep(POLL);
    }
}

/// Makes sure `name` runs before a round; returns its pid.
fn ensure_running(ctl: &Ctl, name: &'static str, round: &mut Round) -> Result<u32, String> {
    let t0 = Instant::now();
    let mut restarted = false;
    loop {
        let st = ctl.driver(name)?;
        if st.state == DriverState::Running {
            if let Some(pid) = st.pid {
                return Ok(pid);
            }
        }
        if st.state == DriverState::Failed && !restarted {
            round.quarantined = true;
            ctl.restart(name).map_err(|e| format!("ddmctl restart {name}: {e}"))?;
            round.ctl_restarts += 1;
            restarted = true;
        }
        if t0.elapsed() > RESTART_TIMEOUT {
            return Err(format!("driver {name} not running before its round (state {})", st.state.as_str()));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One fault round: break `victim` with `fault`, measure, check.
fn round(ctl: &Ctl, sh: &Shared, victim: Victim, fault: FaultKind) -> Round {
    let mut r = Round::default();
    let name = victim.name();
    let pid = match ensure_running(ctl, name, &mut r) {
        Ok(p) => p,
        Err(e) => {
            r.problems.push(e);
            return r;
        }
    };
    let probe = if victim == Victim::Stall {
        match start_probe(&sh.stall) {
            Ok(p) => Some(p),
            Err(e) => {
                r.problems.push(e);
                None
            }
        }
    } else {
        None
    };
    let t0 = Instant::now();
    let applied = match fault.injected() {
        None => {
            signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL).map_err(|e| format!("kill -9 {pid} ({name}): {e}"))
        }
        Some(f) => ctl.inject(name, f).map_err(|e| format!("inject {} into {name}: {e}", fault.name())),
    };
    if let Err(e) = applied {
        r.problems.push(e);
        return r;
    }
    if victim == Victim::Stall {
        *lock(&sh.stall_fault_at) = Some(t0);
    }
    let came_back = match recover(ctl, name, Some(pid), t0, &mut r) {
        Ok(()) => true,
        Err(e) => {
            r.problems.push(e);
            false
        }
    };
    if came_back && victim == Victim::Null {
        let gen = sh.null_gen.fetch_add(1, Ordering::SeqCst) + 1;
        if r.quarantined {
            sh.null_lost_gen.store(gen, Ordering::SeqCst);
        }
    }
    if let Some(p) = probe {
        probe_result(&p, sh, fault, t0, came_back, &mut r);
    }
    r
}

/// Collects the parked probe read's outcome. If the driver died it must
/// end with EIO within [`HANG`] of the fault. If the driver was not replaced
/// (the fault did not take), a parked read is no hang: it is signalled, and
/// must then end within [`HANG`].
fn probe_result(p: &Probe, sh: &Shared, fault: FaultKind, t0: Instant, came_back: bool, r: &mut Round) {
    let mut deadline = t0 + HANG;
    let mut signalled = false;
    loop {
        if !came_back && !signalled {
            // Give a late death its chance first, briefly.
            match p.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(m) => return probe_done(m, sh, t0, r),
                Err(_) => {
                    p.interrupt();
                    signalled = true;
                    deadline = Instant::now() + HANG;
                    continue;
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match p.rx.recv_timeout(left) {
            Ok(m) => return probe_done(m, sh, t0, r),
            Err(_) => {
                r.probe_hung = true;
                r.problems.push(format!(
                    "parked read on stall still blocked {} s after {} (wchan confirmed: {})",
                    HANG.as_secs(),
                    if signalled { "its thread was signalled" } else { fault.name() },
                    p.confirmed
                ));
                return;
            }
        }
    }
}

fn probe_done(m: ProbeMsg, sh: &Shared, t0: Instant, r: &mut Round) {
    match m {
        ProbeMsg::Done(at, Err(e)) if errno_of(&e) == libc::EIO => {
            r.in_flight = Some(at.saturating_duration_since(t0));
        }
        ProbeMsg::Done(_, Err(e)) if errno_of(&e) == libc::EINTR => {
            // We signalled it: the driver never died; recover() said so.
        }
        ProbeMsg::Done(_, res) => {
            let (errno, got) = match res {
                Ok(n) => (0, format!("{n} bytes")),
                Err(e) => (errno_of(&e), errno_name(errno_of(&e))),
            };
            sh.stats.error("probe read stall", errno);
            r.problems.push(format!("parked read on stall ended with {got}, not EIO"));
        }
        ProbeMsg::Reading(..) | ProbeMsg::OpenFailed(_) => r.problems.push("probe: unexpected message".into()),
    }
}

// ---------------------------------------------------------------------------
// The run.

/// Blocks SIGINT, SIGTERM and SIGHUP in every thread and waits for them in
/// one: the first ends the run early, the second stops ddm and exits.
fn signal_thread() -> Result<(), SetupError> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().map_err(SetupError::Signals)?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            while let Ok(sig) = set.wait() {
                seen += 1;
                if seen == 1 {
                    eprintln!("ddf-chaos: {sig:?}: ending the run early (again to abort)");
                    STOP.store(true, Ordering::SeqCst);
                    continue;
                }
                let ddms = ddf_tests::take_launched();
                for pid in ddms.iter().filter_map(|l| l.pid) {
                    let pid = Pid::from_raw(pid as i32);
                    let _ = signal::kill(pid, Signal::SIGTERM);
                    thread::sleep(Duration::from_secs(2));
                    // Whatever did not stop on SIGTERM does on SIGKILL (as
                    // the benchmark does); no-op for a ddm already gone.
                    let _ = signal::kill(pid, Signal::SIGKILL);
                }
                for m in ddms.iter().map(|l| &l.mnt) {
                    if is_mounted(m) {
                        let _ = Command::new("umount").arg("-l").arg(m).status();
                    }
                }
                std::process::exit(130);
            }
        })
        .map_err(|e| SetupError::NotUp(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// Sleeps until `t`, or less if the run is stopping.
fn sleep_until(t: Instant, sh: &Shared) {
    while !sh.stopping() {
        let now = Instant::now();
        if now >= t {
            return;
        }
        thread::sleep((t - now).min(Duration::from_millis(100)));
    }
}

/// Whether ddm is alive: its process runs and `ls` answers.
fn check_alive(ddm: &mut DdmProcess) -> Result<(), String> {
    if !ddm.alive() {
        return Err(death(ddm));
    }
    let names = ls(ddm.mnt())?;
    for n in ["null", "zero", "stall"] {
        if !names.iter().any(|x| x == n) {
            return Err(format!("ls {} no longer lists {n} ({names:?})", ddm.mnt().display()));
        }
    }
    Ok(())
}

fn run(args: &Args) -> Result<bool, SetupError> {
    let plan = Plan::from_args(args)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(SetupError::NotRoot);
    }
    let bins = ddf_tests::tool_bin_dir(args.bin_dir.as_deref(), &["ddm", "ddf-null", "ddf-testdrv"])
        .map_err(SetupError::Launch)?;
    install_sigusr1()?;
    signal_thread()?;
    let mut ddm = start_ddm(&bins, args.ddm_log.as_deref())?;
    let ctl = Ctl::spawn(ddm.socket().to_owned())?;
    let initial = ctl.status().map_err(SetupError::Drivers)?;
    for name in ["null", "stall"] {
        match initial.iter().find(|d| d.name == name) {
            Some(d) if d.state == DriverState::Running => {}
            Some(d) => return Err(SetupError::Drivers(format!("{name} is {}", d.state.as_str()))),
            None => return Err(SetupError::Drivers(format!("no driver {name} in status"))),
        }
    }
    let restarts_at = |st: &[DriverStatus], n: &str| st.iter().find(|d| d.name == n).map_or(0, |d| d.restarts);

    let n_stall = plan.stall_clients();
    let slots: Vec<Arc<Slot>> = (0..plan.clients)
        .map(|i| {
            let kind =
                if i % 4 == 3 || (n_stall > 0 && plan.clients < 4 && i == plan.clients - 1) { "stall" } else { "data" };
            Arc::new(Slot::new(format!("client {i} ({kind})")))
        })
        .collect();
    let sh = Arc::new(Shared {
        stop: AtomicBool::new(false),
        stats: Stats::default(),
        stall_fault_at: Mutex::new(None),
        null_gen: AtomicU64::new(0),
        null_lost_gen: AtomicU64::new(0),
        slots: slots.clone(),
        zero: ddm.path("zero"),
        null: ddm.path("null"),
        stall: ddm.path("stall"),
    });
    let watch_done = Arc::new(AtomicBool::new(false));
    {
        let (s, d) = (sh.clone(), watch_done.clone());
        thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || watchdog(s, d))
            .map_err(|e| SetupError::NotUp(format!("cannot start the watchdog: {e}")))?;
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let stall = slot.name.ends_with("(stall)");
        handles.push(spawn_client(&sh, slot, i, stall).map_err(SetupError::NotUp)?);
    }
    eprintln!(
        "ddf-chaos: ddm pid {} on {}; {} clients ({} on stall), {} rounds over {} s",
        ddm.pid().unwrap_or(0),
        ddm.mnt().display(),
        plan.clients,
        n_stall,
        plan.kills,
        plan.duration.as_secs()
    );

    // The rounds, spread evenly: round i at (i + 1/2) * duration / M.
    let mut rounds: Vec<(Victim, FaultKind, Round)> = Vec::new();
    let mut ddm_problem: Option<String> = None;
    // Deaths the run caused, per victim, for telling restarts without backoff.
    let mut deaths: BTreeMap<Victim, Vec<Instant>> = BTreeMap::new();
    for i in 0..plan.kills {
        let at = start + plan.duration.mul_f64((i as f64 + 0.5) / plan.kills as f64);
        sleep_until(at, &sh);
        if sh.stopping() {
            break;
        }
        let victim = if i % 2 == 0 { Victim::Null } else { Victim::Stall };
        let fault = plan.faults[i % plan.faults.len()];
        let began = start.elapsed();
        let now = Instant::now();
        let history = deaths.entry(victim).or_default();
        history.retain(|t| now - *t < WINDOW);
        let first = history.is_empty();
        let mut r = round(&ctl, &sh, victim, fault);
        r.first = first;
        if r.quarantined {
            // `ddmctl restart` is a fresh start: the window starts over.
            history.clear();
        } else if r.restart.is_some() {
            history.push(now);
        }
        let fmt = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} ms", ms(d)));
        eprintln!(
            "ddf-chaos: round {:>2} at {:>5.1} s: {:<5} {:<7} restart {:>10}  in-flight EIO {:>10}{}{}",
            i + 1,
            began.as_secs_f64(),
            victim.name(),
            fault.name(),
            fmt(r.restart),
            fmt(r.in_flight),
            if r.quarantined {
                format!("  quarantined, ddmctl restart -> running in {}", fmt(r.ctl_restart))
            } else {
                String::new()
            },
            if r.problems.is_empty() { String::new() } else { format!("  PROBLEM: {}", r.problems.join("; ")) }
        );
        rounds.push((victim, fault, r));
        if let Err(e) = check_alive(&mut ddm) {
            eprintln!("ddf-chaos: DDM: {e}");
            ddm_problem = Some(e);
            break;
        }
    }
    if ddm_problem.is_none() {
        // The rest of the duration: load only, ddm checked every second.
        while !sh.stopping() && start.elapsed() < plan.duration {
            sleep_until((Instant::now() + Duration::from_secs(1)).min(start + plan.duration), &sh);
            if !ddm.alive() {
                ddm_problem = Some(death(&mut ddm));
                break;
            }
        }
    }
    let elapsed = start.elapsed();

    // Stop the clients: parked stall readers are signalled by the watchdog.
    sh.stop.store(true, Ordering::SeqCst);
    let stop_deadline = Instant::now() + HANG + Duration::from_secs(1);
    while Instant::now() < stop_deadline && !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(20));
    }
    for slot in &slots {
        if !slot.finished.load(Ordering::SeqCst) {
            let mut h = lock(&slot.hung);
            if h.is_none() {
                let what = lock(&slot.op).as_ref().map_or("-", |o| o.what);
                *h = Some(format!("{} did not stop at the end (in {what})", slot.name));
            }
        }
    }
    for h in handles {
        if h.is_finished() {
            let _ = h.join();
        }
    }
    watch_done.store(true, Ordering::SeqCst);

    // Last checks, then stop ddm.
    if ddm_problem.is_none() {
        if let Err(e) = check_alive(&mut ddm) {
            ddm_problem = Some(e);
        } else if ctl.stuck.load(Ordering::SeqCst) {
            ddm_problem = Some("its control socket stopped answering".into());
        }
    }
    let final_status = ctl.status().ok();
    let ddm_log_tail = ddm.log_tail(40);
    // Some(true) when it exited cleanly on SIGTERM in time.
    let clean_stop = ddm.stop().map(|s| matches!(s, Stopped::Exited(st) if st.success()));
    drop(ddm);

    // The table.
    let s = &sh.stats;
    let errors = lock(&s.errors).clone();
    let eio_total: u64 = errors.iter().filter(|((_, e), _)| *e == libc::EIO).map(|(_, n)| n).sum();
    let eio_nz: u64 = errors
        .iter()
        .filter(|((w, e), _)| *e == libc::EIO && (w.contains("zero") || w.contains("null")))
        .map(|(_, n)| n)
        .sum();
    // errno -> (count, the operations that saw it)
    let mut other: BTreeMap<String, (u64, Vec<&str>)> = BTreeMap::new();
    for ((what, e), n) in &errors {
        if *e != libc::EIO {
            let o = other.entry(errno_name(*e)).or_default();
            o.0 += n;
            o.1.push(what);
        }
    }
    let bad = s.bad_data.load(Ordering::Relaxed);
    if bad > 0 {
        other.insert("wrong data".into(), (bad, vec!["short read, non-zero byte or data from stall"]));
    }
    let mut hung: Vec<String> = slots.iter().filter_map(|sl| lock(&sl.hung).clone()).collect();
    let probes_hung = rounds.iter().filter(|(_, _, r)| r.probe_hung).count();
    for (i, (v, f, r)) in rounds.iter().enumerate() {
        if r.probe_hung {
            hung.push(format!("probe reader of round {} ({} {})", i + 1, v.name(), f.name()));
        }
    }
    let failed_rounds: Vec<String> = rounds
        .iter()
        .enumerate()
        .filter(|(_, (_, _, r))| r.restart.is_none() && r.ctl_restart.is_none())
        .map(|(i, (v, f, r))| format!("round {} ({} {}): {}", i + 1, v.name(), f.name(), r.problems.join("; ")))
        .collect();
    let restarts_seen = rounds.iter().filter(|(_, _, r)| r.restart.is_some() || r.ctl_restart.is_some()).count();
    let quarantines = rounds.iter().filter(|(_, _, r)| r.quarantined).count();
    let ctl_restarts: u32 = rounds.iter().map(|(_, _, r)| r.ctl_restarts).sum();
    let status_restarts = final_status.as_ref().map(|st| {
        format!(
            "null +{}, stall +{}",
            restarts_at(st, "null").saturating_sub(restarts_at(&initial, "null")),
            restarts_at(st, "stall").saturating_sub(restarts_at(&initial, "stall"))
        )
    });
    let alive = ddm_problem.is_none();

    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
    row("machine", format!("{} CPUs, Linux {}", nproc(), kernel()));
    row(
        "build",
        format!(
            "{}, {} (a panic that prints a backtrace dies ~100 ms later)",
            if cfg!(debug_assertions) { "debug" } else { "release" },
            std::env::var("RUST_BACKTRACE")
                .map_or_else(|_| "RUST_BACKTRACE unset".to_owned(), |v| format!("RUST_BACKTRACE={v}"))
        ),
    );
    row(
        "clients (K)",
        format!("{} ({} on null/zero, {} parked on stall)", plan.clients, plan.clients - n_stall, n_stall),
    );
    let nulls = rounds.iter().filter(|(v, _, _)| *v == Victim::Null).count();
    row(
        "fault rounds (M)",
        format!(
            "{} of {} (null {}, stall {}; faults {})",
            rounds.len(),
            plan.kills,
            nulls,
            rounds.len() - nulls,
            plan.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
        ),
    );
    row(
        "duration",
        format!(
            "{:.1} s{}",
            elapsed.as_secs_f64(),
            if STOP.load(Ordering::SeqCst) { " (ended early by a signal)" } else { "" }
        ),
    );
    row("requests completed", s.ok.load(Ordering::Relaxed).to_string());
    row("EIO", {
        let parked = s.stall_eio.load(Ordering::Relaxed);
        format!(
            "{eio_total} (parked stall reads ended by a driver death {parked}, null/zero ops {eio_nz}, \
                 other stall ops {})",
            eio_total.saturating_sub(parked + eio_nz)
        )
    });
    row(
        "other errors",
        if other.is_empty() {
            "none".into()
        } else {
            other.iter().map(|(k, (n, ops))| format!("{k} {n} ({})", ops.join(", "))).collect::<Vec<_>>().join(", ")
        },
    );
    row(
        "stall reads ended by signal",
        format!("{} (EINTR, the run signalled them)", s.stall_eintr.load(Ordering::Relaxed)),
    );
    row(
        "kept fds used after restart",
        format!(
            "{} worked, {} failed ({} ended by a quarantine, as designed)",
            s.kept_ok.load(Ordering::Relaxed),
            s.kept_failed.load(Ordering::Relaxed),
            s.kept_lost.load(Ordering::Relaxed)
        ),
    );
    row(
        "clients hung",
        format!(
            "{}{}",
            hung.len(),
            if probes_hung > 0 { format!(" (of which {probes_hung} in-flight probe reads)") } else { String::new() }
        ),
    );
    row(
        "DDM alive",
        match &ddm_problem {
            None => format!(
                "yes{}",
                match clean_stop {
                    Some(true) => " (clean exit on SIGTERM)",
                    _ => " (but no clean exit on SIGTERM)",
                }
            ),
            Some(e) => format!("no: {e}"),
        },
    );
    row(
        "restarts observed",
        format!(
            "{restarts_seen} of {} rounds{}",
            rounds.len(),
            status_restarts.map_or(String::new(), |s| format!(" (status: {s})"))
        ),
    );
    row("quarantines", format!("{quarantines} (restarts via ddmctl: {ctl_restarts})"));
    let lat = |sel: &dyn Fn(&Round) -> Option<Duration>, filter: &dyn Fn(Victim, FaultKind) -> bool| {
        let mut v: Vec<Duration> =
            rounds.iter().filter(|(vi, f, _)| filter(*vi, *f)).filter_map(|(_, _, r)| sel(r)).collect();
        v.sort();
        v
    };
    row("restart latency", pcts(&lat(&|r: &Round| r.restart, &|_, _| true)));
    let no_backoff: Vec<Duration> = {
        let mut v: Vec<Duration> = rounds
            .iter()
            .filter(|(_, f, r)| r.first && *f != FaultKind::Hang)
            .filter_map(|(_, _, r)| r.restart)
            .collect();
        v.sort();
        v
    };
    if !no_backoff.is_empty() {
        row("  no backoff, not hang", pcts(&no_backoff));
    }
    let mut kinds: Vec<FaultKind> = plan.faults.clone();
    kinds.sort();
    kinds.dedup();
    for k in &kinds {
        let v = lat(&|r: &Round| r.restart, &|_, f| f == *k);
        if !v.is_empty() {
            row(&format!("  after {}", k.name()), pcts(&v));
        }
    }
    let ctl_lat = lat(&|r: &Round| r.ctl_restart, &|_, _| true);
    if !ctl_lat.is_empty() {
        row("  ddmctl restart to running", pcts(&ctl_lat));
    }
    row("in-flight failure latency", pcts(&lat(&|r: &Round| r.in_flight, &|_, _| true)));
    for k in &kinds {
        let v = lat(&|r: &Round| r.in_flight, &|_, f| f == *k);
        if !v.is_empty() {
            row(&format!("  after {}", k.name()), pcts(&v));
        }
    }
    {
        let l = lock(&s.longest);
        row("slowest client op", format!("{:.1} ms ({})", ms(l.0), l.1));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("ddf chaos run");
    for (k, v) in &rows {
        println!("  {k:<width$}  {v}");
    }

    let ok = hung.is_empty() && alive && failed_rounds.is_empty();
    if !ok {
        for h in &hung {
            eprintln!("ddf-chaos: hung: {h}");
        }
        for f in &failed_rounds {
            eprintln!("ddf-chaos: driver did not come back: {f}");
        }
        if let Some(e) = &ddm_problem {
            eprintln!("ddf-chaos: DDM: {e}");
        }
        eprintln!("ddf-chaos: the end of ddm's log:\n{ddm_log_tail}");
    }
    Ok(ok)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// "p50 x  p99 y  max z ms (n=N)" over sorted samples (nearest rank).
fn pcts(sorted: &[Duration]) -> String {
    if sorted.is_empty() {
        return "- (no samples)".into();
    }
    let at = |p: f64| {
        let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    };
    format!(
        "p50 {:>7.1}  p99 {:>7.1}  max {:>7.1} ms  (n={})",
        ms(at(50.0)),
        ms(at(99.0)),
        ms(sorted[sorted.len() - 1]),
        sorted.len()
    )
}

fn nproc() -> usize {
    thread::available_parallelism().map_or(0, |n| n.get())
}

fn kernel() -> String {
    // What `uname -r` prints.
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}
