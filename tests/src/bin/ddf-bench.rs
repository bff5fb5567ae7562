//! `ddf-bench`: the benchmark of issue 7, behind `scripts/bench`.
//!
//! One run prints one table (on stdout; progress goes to stderr). It starts
//! its own `ddm` on a temporary mount (the built-in drivers, plus one
//! `ddf-testdrv` instance per scaling client) and mounts, inside its own
//! process, a minimal FUSE file system: the *FUSE floor*.
//!
//! **1. The paper's experiment** (Grim & Blythe, Tables 1 and 2): N cycles of
//! open, read (1 byte), write (1 byte), close, every call timed on its own
//! with `Instant` (CLOCK_MONOTONIC through the vDSO), after N/10 untimed
//! cycles (at least 50) of warm-up. The timed cycles are made in 10 rounds
//! that visit the targets in turn (N/10 cycles each), so that a change of
//! the machine's load during the run weighs on every target alike. Mean,
//! p50, p99 and a histogram per operation, for
//! - (a) the kernel's `/dev/null`;
//! - (b) the FUSE floor's `null`: a fuser file system whose open, read,
//!   write, flush and release answer at once, mounted with what ddm uses
//!   where it can matter (the same mount options, `SessionACL::All`, the
//!   same number of worker threads with `clone_fd`, the same `max_write`,
//!   `max_readahead`, init capabilities, attribute TTL and open flags:
//!   direct I/O, non-seekable stream) — FUSE with no driver hop;
//! - (c) `/ddf/null`: FUSE, ddm, and the `ddf-null` driver process;
//! - (d) the direct libDriver client path: a `ddf::driver::Client` got from
//!   `ddf::ddm::Ddm::connect_device` (connection made once, not timed); its
//!   open, read, write and close are each one call to the driver process,
//!   with no FUSE and no DDM in the path;
//! - (e) the IPC floor: a 1-byte request and a 1-byte reply over a
//!   `SOCK_SEQPACKET` socketpair to a second process (a copy of this program
//!   in a hidden helper mode); every "operation" is one such round trip.
//!
//! **2. Ratios**: (c)/(b), the price of the driver process on top of FUSE
//! (the paper's figure is 1.068; the target is 2.0), and (d)/(e),
//! per operation and overall. "Overall" is the mean of the four operations'
//! means of one target divided by the same for the other (so each operation
//! weighs what it costs).
//!
//! **3. Throughput**: sequential 1 MiB `pwrite`s on a read-write open, then
//! `pread`s on a read-only one (offsets wrap around the device; ddm serves
//! read-only opens of ram0 by FUSE passthrough to the driver's memfd), on a
//! file in a private tmpfs read directly, on the FUSE floor's `data` file
//! (direct I/O, served with `pread`/`pwrite` on that same tmpfs file), and
//! on `/ddf/ram0`. Each file is filled once, untimed, before the first
//! timed pass.
//!
//! **4. Scaling**: 1, 2, 4, 8 client threads, each writing 1 byte at a time
//! to its own device: `/ddf/benchK` (one `ddf-testdrv` process each, whose
//! writes are answered at once) and the floor's `sK`, for a fixed time;
//! total operations per second.
//!
//! **Placement.** On a small virtual machine, where a thread wakes up matters
//! more than anything else (DESIGN.md: a wake-up across CPUs costs 40-60 us,
//! on the same CPU 5-10 us). Sections 1 and 3 run under each placement
//! asked for: `unpinned` (nothing pinned), `same` (everything on the client
//! CPU) and `split` (the measuring thread on the client CPU, every server on
//! the other one). "Everything" is: the measuring thread, the FUSE floor's
//! worker threads (`fuser-*`), the socketpair echo process, every thread of
//! ddm and every thread of every driver process (pids from ddm's status),
//! set with `sched_setaffinity` per thread. Section 4 runs unpinned.
//!
//! Every number of one table comes from one run: compare ratios, never
//! absolute times from different runs.
//!
//! Needs root (it mounts). Exit status 0 when the run completed, 1 when a
//! measurement failed, 2 when it could not be set up. Ctrl-C or SIGTERM
//! (exit status 130) and the `--timeout` watchdog (1) stop ddm and detach
//! every mount the run made.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, ValueEnum};
use ddf_tests::{is_mounted, lock, wait_timeout, wait_until, DdmProcess, LaunchError};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr,
    Request, WriteFlags,
};
use nix::sched::CpuSet;
use nix::sys::signal::{self, SigSet, Signal};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::unistd::Pid;

/// FUSE worker threads, for ddm (`--threads`) and for the floor alike.
const FUSE_THREADS: u16 = 4;
/// Attribute and entry TTL of the floor: ddm's (`ddm-fs/src/fs.rs`, `TTL`).
const TTL: Duration = Duration::from_secs(1);
/// Largest read or write the floor asks the kernel for: ddm's
/// (`ddf::ipc::PAYLOAD_MAX`).
const MAX_IO: u32 = ddf::ipc::PAYLOAD_MAX as u32;
/// One transfer of the throughput section.
const MIB: usize = 1 << 20;
/// Size of the tmpfs file the throughput section uses when ram0's size
/// cannot be read (it is ram0's size otherwise).
const DEFAULT_CAPACITY: u64 = 64 * MIB as u64;
/// Rounds of section 1 (each visits every target in turn).
const ROUNDS: usize = 10;
/// Histogram bucket upper bounds, in nanoseconds (the last bucket is open).
const BUCKETS_NS: [u64; 12] = [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000];
/// Their labels, in microseconds.
const BUCKET_LABELS: [&str; 13] =
    ["<.25", "<.5", "<1", "<2", "<4", "<8", "<16", "<32", "<64", "<128", "<256", "<512", "more"];

/// Benchmark of ddf: the paper's open/read/write/close experiment against
/// /dev/null, an in-process FUSE floor, /ddf/null, the direct client path and
/// a socketpair; throughput on /ddf/ram0; scaling. Prints one table.
#[derive(Debug, Parser)]
#[command(
    name = "ddf-bench",
    version,
    long_about = None,
    after_help = "Needs root (it mounts its own ddm and a FUSE file system on temporary \
directories). scripts/bench builds the workspace (release) and runs this with the same \
arguments. The //! comment of tests/src/bin/ddf-bench.rs and docs/benchmark.md say how \
every number is taken. Exit status: 0 done, 1 a measurement failed, 2 set-up failed."
)]
struct Args {
    /// A quick run for CI: 500 calls, 16 MiB transfers, up to 4 clients for
    /// 0.3 s each (explicit options win).
    #[arg(long)]
    short: bool,

    /// Timed calls of each operation [default: 5000; --short: 500].
    #[arg(long, value_name = "N")]
    calls: Option<usize>,

    /// MiB moved by each throughput pass (one write pass, one read pass)
    /// [default: 256; --short: 16].
    #[arg(long, value_name = "MIB")]
    mib: Option<u64>,

    /// Most concurrent clients in the scaling section; runs 1, 2, 4, ... up
    /// to it [default: 8; --short: 4].
    #[arg(long, value_name = "K")]
    max_clients: Option<usize>,

    /// Seconds each scaling point runs [default: 2; --short: 0.3].
    #[arg(long, value_name = "SECS")]
    scaling_secs: Option<f64>,

    /// Reads and writes of the random 4 KiB section, each [default: 20000;
    /// --short: 1000].
    #[arg(long, value_name = "N")]
    random_ops: Option<usize>,

    /// Seconds the idle section watches [default: 10; --short: 1].
    #[arg(long, value_name = "SECS")]
    idle_secs: Option<f64>,

    /// Placements to measure sections 1 and 3 under, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "unpinned,same,split")]
    placements: Vec<PlacementKind>,

    /// The client CPU and the server CPU of the pinned placements [default:
    /// the first two CPUs this program may use].
    #[arg(long, value_name = "A,B", value_delimiter = ',', num_args = 1)]
    cpus: Vec<usize>,

    /// Directory holding ddm and the drivers [default: the directory of this program].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,

    /// Keep ddm's log in this file [default: a temporary file, removed at the end].
    #[arg(long, value_name = "FILE")]
    ddm_log: Option<PathBuf>,

    /// Give up (stop ddm, detach the mounts, exit 1) after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    timeout: u64,

    /// Helper mode: answer 1-byte requests on this socket descriptor (the
    /// other end of the IPC floor).
    #[arg(long, value_name = "FD", hide = true)]
    ipc_echo: Option<RawFd>,
}

/// Where the threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlacementKind {
    /// No affinity set: the scheduler decides.
    Unpinned,
    /// Client and every server thread on the client CPU.
    Same,
    /// The client on the client CPU, every server thread on the server CPU.
    Split,
}

impl PlacementKind {
    fn title(self) -> &'static str {
        match self {
            PlacementKind::Unpinned => "unpinned",
            PlacementKind::Same => "same CPU",
            PlacementKind::Split => "split",
        }
    }
}

/// Why the run failed.
#[derive(Debug)]
enum BenchError {
    /// Not root.
    NotRoot,
    /// The options do not make a run.
    Usage(String),
    /// ddm could not be found or started.
    Launch(LaunchError),
    /// Something needed before measuring failed.
    Setup(String, std::io::Error),
    /// ddm died during the run.
    NotUp(String),
    /// The control socket of ddm failed.
    Control(String),
    /// Setting a CPU affinity failed.
    Pin(String, nix::Error),
    /// A measured call failed.
    Call { target: &'static str, op: &'static str, source: std::io::Error },
}

impl BenchError {
    /// Whether the run got as far as measuring (exit status 1, else 2).
    fn measuring(&self) -> bool {
        match self {
            BenchError::Call { .. } | BenchError::Pin(..) => true,
            BenchError::NotRoot
            | BenchError::Usage(_)
            | BenchError::Launch(_)
            | BenchError::Setup(..)
            | BenchError::NotUp(_)
            | BenchError::Control(_) => false,
        }
    }
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::NotRoot => write!(f, "needs root to mount ddm and the FUSE floor; run it with sudo"),
            BenchError::Usage(why) => write!(f, "{why}"),
            BenchError::Launch(e) => write!(f, "{}", ddf::error_chain(e)),
            BenchError::Setup(what, e) => write!(f, "{what}: {e}"),
            BenchError::NotUp(why) => write!(f, "ddm: {why}"),
            BenchError::Control(why) => write!(f, "ddm's control socket: {why}"),
            BenchError::Pin(what, e) => write!(f, "cannot pin {what}: {e}"),
            BenchError::Call { target, op, source } => write!(f, "{op} on {target} failed: {source}"),
        }
    }
}

fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |e| BenchError::Setup(what, e)
}

// ---------------------------------------------------------------------------
// The run's size.

/// The run's size, after `--short` and the defaults.
#[derive(Debug, Clone)]
struct Plan {
    calls: usize,
    warmup: usize,
    mib: u64,
    /// Operations of each kind in the random 4 KiB section.
    random_ops: usize,
    /// How long the idle section watches.
    idle: Duration,
    /// Bus sizes of the tree section.
    tree_sizes: Vec<usize>,
    clients: Vec<usize>,
    scaling: Duration,
    placements: Vec<PlacementKind>,
    client_cpu: usize,
    server_cpu: usize,
}

impl Plan {
    fn from_args(a: &Args, allowed: &[usize]) -> Result<Plan, BenchError> {
        let (calls, mib, max_clients, secs) = if a.short { (500, 16, 4, 0.3) } else { (5000, 256, 8, 2.0) };
        let calls = a.calls.unwrap_or(calls);
        let mib = a.mib.unwrap_or(mib);
        let max_clients = a.max_clients.unwrap_or(max_clients);
        let secs = a.scaling_secs.unwrap_or(secs);
        if calls == 0 {
            return Err(BenchError::Usage("--calls must be at least 1".into()));
        }
        if mib == 0 {
            return Err(BenchError::Usage("--mib must be at least 1".into()));
        }
        if max_clients == 0 || max_clients > 64 {
            return Err(BenchError::Usage("--max-clients must be between 1 and 64".into()));
        }
        if !(secs > 0.0 && secs <= 600.0) {
            return Err(BenchError::Usage("--scaling-secs must be more than 0 and at most 600".into()));
        }
        let mut clients = Vec::new();
        let mut k = 1;
        while k < max_clients {
            clients.push(k);
            k *= 2;
        }
        clients.push(max_clients);
        let (client_cpu, server_cpu) = match a.cpus.as_slice() {
            [] => (allowed.first().copied().unwrap_or(0), allowed.get(1).or(allowed.first()).copied().unwrap_or(0)),
            [a, b] => (*a, *b),
            _ => return Err(BenchError::Usage("--cpus takes two CPU numbers: --cpus A,B".into())),
        };
        let pinned = a.placements.iter().any(|p| *p != PlacementKind::Unpinned);
        for cpu in [client_cpu, server_cpu] {
            if pinned && !allowed.contains(&cpu) {
                return Err(BenchError::Usage(format!(
                    "CPU {cpu} is not one this program may run on (it may use {allowed:?}); pass --cpus A,B"
                )));
            }
        }
        let mut placements = a.placements.clone();
        if client_cpu == server_cpu && placements.contains(&PlacementKind::Split) {
            eprintln!("ddf-bench: one CPU only: no split placement");
            placements.retain(|p| *p != PlacementKind::Split);
        }
        if placements.is_empty() {
            return Err(BenchError::Usage("--placements needs at least one placement".into()));
        }
        let (random_ops, idle, tree_sizes) =
            if a.short { (1000, 1.0, vec![100, 400]) } else { (20_000, 10.0, vec![1000, 4096, 100_000]) };
        Ok(Plan {
            calls,
            warmup: (calls / 10).max(50),
            mib,
            random_ops: a.random_ops.unwrap_or(random_ops),
            idle: Duration::from_secs_f64(a.idle_secs.unwrap_or(idle)),
            tree_sizes,
            clients,
            scaling: Duration::from_secs_f64(secs),
            placements,
            client_cpu,
            server_cpu,
        })
    }

    fn max_clients(&self) -> usize {
        self.clients.last().copied().unwrap_or(1)
    }
}

// ---------------------------------------------------------------------------
// Clean-up that must happen also on Ctrl-C and on the watchdog.

/// What to undo if the run ends abruptly.
#[derive(Debug, Default)]
struct Cleanup {
    echo_pid: Option<i32>,
    /// Mounts to detach, last made first.
    mounts: Vec<PathBuf>,
    /// The temporary directory to remove after.
    dir: Option<PathBuf>,
}

static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup { echo_pid: None, mounts: Vec::new(), dir: None });

/// Set when the run is being stopped from outside (a signal, the watchdog):
/// the main thread's calls then fail, and it must leave the exit to the
/// thread that cleans up.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Stops ddm and the echo helper, detaches every mount, removes the temp dir.
fn emergency_cleanup() {
    STOPPING.store(true, Ordering::SeqCst);
    let c = std::mem::take(&mut *lock(&CLEANUP));
    if let Some(pid) = c.echo_pid {
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    // ddm (started by DdmProcess, which lists it until it has cleaned up).
    let ddms = ddf_tests::take_launched();
    for pid in ddms.iter().filter_map(|l| l.pid) {
        let pid = Pid::from_raw(pid as i32);
        let _ = signal::kill(pid, Signal::SIGTERM);
        wait_until(Duration::from_secs(5), || zombie(pid));
        let _ = signal::kill(pid, Signal::SIGKILL);
    }
    for m in c.mounts.iter().rev().chain(ddms.iter().map(|l| &l.mnt)) {
        if is_mounted(m) {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    if let Some(d) = c.dir {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Whether `pid` is gone or a zombie (exited, not reaped yet).
fn zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

fn register_mount(p: &Path) {
    lock(&CLEANUP).mounts.push(p.to_owned());
}

fn unregister_mount(p: &Path) {
    lock(&CLEANUP).mounts.retain(|m| m != p);
}

/// Waits for SIGINT/SIGTERM/SIGHUP (blocked in every thread) and cleans up.
fn spawn_signal_thread(signals: SigSet) -> Result<(), BenchError> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                eprintln!("ddf-bench: {sig:?}: stopping ddm and detaching the mounts");
                emergency_cleanup();
                std::process::exit(130);
            }
        })
        .map(|_| ())
        .map_err(setup("cannot start the signal thread"))
}

fn spawn_watchdog(limit: Duration) -> Result<(), BenchError> {
    thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            thread::sleep(limit);
            eprintln!(
                "ddf-bench: no result after {} s (--timeout): stopping ddm and detaching the mounts",
                limit.as_secs()
            );
            emergency_cleanup();
            std::process::exit(1);
        })
        .map(|_| ())
        .map_err(setup("cannot start the watchdog thread"))
}

// ---------------------------------------------------------------------------
// Entry.

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(fd) = args.ipc_echo {
        return ipc_echo(fd);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if STOPPING.load(Ordering::SeqCst) => {
            // The signal thread or the watchdog is cleaning up and exits.
            loop {
                thread::sleep(Duration::from_secs(1));
            }
        }
        Err(e) => {
            eprintln!("ddf-bench: {e}");
            if e.measuring() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

fn run(args: &Args) -> Result<(), BenchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    let initial = nix::sched::sched_getaffinity(Pid::from_raw(0))
        .map_err(|e| BenchError::Pin("(reading this program's CPU affinity)".into(), e))?;
    let allowed: Vec<usize> = (0..CpuSet::count()).filter(|&c| initial.is_set(c).unwrap_or(false)).collect();
    let plan = Plan::from_args(args, &allowed)?;

    // Every thread started from here on inherits the mask; the signals
    // arrive only in the signal thread. (Children get a clean mask.)
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().map_err(|e| BenchError::Setup("cannot block signals".into(), e.into()))?;
    spawn_signal_thread(signals)?;
    spawn_watchdog(Duration::from_secs(args.timeout))?;

    let bins = ddf_tests::tool_bin_dir(args.bin_dir.as_deref(), &["ddm", "ddf-null", "ddf-ramdisk", "ddf-testdrv"])
        .map_err(BenchError::Launch)?;

    let dir = tempfile::Builder::new()
        .prefix("ddf-bench-")
        .tempdir()
        .map_err(setup("cannot create a temporary directory"))?;
    lock(&CLEANUP).dir = Some(dir.path().to_owned());

    eprintln!("ddf-bench: starting ddm and the FUSE floor");
    let mut ddm = start_ddm(&bins, dir.path(), plan.max_clients(), args.ddm_log.as_deref())?;
    let capacity = std::fs::metadata(ddm.path("ram0")).map(|m| m.len()).unwrap_or(DEFAULT_CAPACITY).max(MIB as u64)
        / MIB as u64
        * MIB as u64;
    let tmpfs = TmpfsMount::mount(&dir.path().join("tmpfs"), 2 * capacity + 16 * MIB as u64)?;
    let tmpfs_file = tmpfs.path.join("data");
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmpfs_file)
        .map_err(setup(format!("cannot create {}", tmpfs_file.display())))?;
    backing.set_len(capacity).map_err(setup(format!("cannot size {}", tmpfs_file.display())))?;
    let floor = FloorMount::mount(&dir.path().join("floor"), backing, capacity, plan.max_clients())?;
    let echo = EchoProc::spawn()?;
    let mut direct = DirectPath::connect(&ddm);
    if let Err(why) = &direct {
        eprintln!("ddf-bench: (d) direct client path: {why}");
    }

    let machine = Machine::describe(&ddm);
    let mut sections = Vec::new();
    for &placement in &plan.placements {
        let pinned = Pinning::apply(placement, &plan, &initial, &ddm, &echo)?;
        eprintln!("ddf-bench: {}: latency", placement.title());
        let lat = {
            let mut dev_null = FileSubject::new("/dev/null");
            let mut floor_null = FileSubject::new(floor.path.join("null"));
            let mut ddf_null = FileSubject::new(ddm.path("null"));
            let mut ipc = IpcSubject { sock: &echo.sock };
            let mut fixed = [
                Timed::new("(a) /dev/null", &mut dev_null, plan.calls),
                Timed::new("(b) FUSE floor", &mut floor_null, plan.calls),
                Timed::new("(c) /ddf/null", &mut ddf_null, plan.calls),
                Timed::new("(e) socketpair", &mut ipc, plan.calls),
            ];
            let mut d = direct.as_mut().ok().map(|d| Timed::new("(d) direct client", d, plan.calls));
            measure(&mut fixed, d.as_mut(), &plan)?;
            let [dev_null, floor, ddf, ipc] = fixed.map(Timed::stats);
            Latency { dev_null, floor, ddf, direct: d.map(Timed::stats), ipc }
        };
        eprintln!("ddf-bench: {}: throughput", placement.title());
        let thr = Throughput {
            tmpfs: transfer("tmpfs file", &tmpfs_file, capacity, plan.mib)?,
            floor: transfer("tmpfs via FUSE floor", &floor.path.join("data"), capacity, plan.mib)?,
            ram0: transfer("/ddf/ram0", &ddm.path("ram0"), capacity, plan.mib)?,
            rand_floor: random_io("tmpfs via FUSE floor", &floor.path.join("data"), capacity, plan.random_ops)?,
            rand_ram0: random_io("/ddf/ram0", &ddm.path("ram0"), capacity, plan.random_ops)?,
        };
        sections.push(Section { placement, pinned, lat, thr });
    }
    Pinning::apply(PlacementKind::Unpinned, &plan, &initial, &ddm, &echo)?;
    eprintln!("ddf-bench: scaling");
    let mut scaling = Vec::new();
    for &k in &plan.clients {
        let ddf_ops = scale("/ddf/benchK", k, plan.scaling, |i| ddm.path(&format!("bench{i}")))?;
        let floor_ops = scale("floor sK", k, plan.scaling, |i| floor.path.join(format!("s{i}")))?;
        scaling.push((k, ddf_ops, floor_ops));
    }

    eprintln!("ddf-bench: idle cost");
    let idle = idle_cost(&ddm, &floor, plan.idle)?;
    eprintln!("ddf-bench: the tree");
    let tree = tree_scale(&ddm, &plan.tree_sizes)?;

    if !ddm.alive() {
        return Err(BenchError::NotUp(format!("it exited during the run; its log:\n{}", ddm.log_tail(30))));
    }
    let extra = Extra { idle, tree };
    let table = render(&machine, &plan, &sections, &scaling, &extra, direct.as_ref().err(), capacity);
    print!("{table}");
    let _ = std::io::stdout().flush();

    drop(direct);
    drop(echo);
    drop(floor);
    drop(tmpfs);
    drop(ddm);
    lock(&CLEANUP).dir = None;
    Ok(())
}

// ---------------------------------------------------------------------------
// ddm.

/// Starts ddm on `dir/mnt`, with one test driver per scaling client: its
/// device `benchK` takes every write at once. Dropping it (also on a panic)
/// stops ddm and detaches the mount; the signal thread and the watchdog find
/// it with `ddf_tests::take_launched`.
fn start_ddm(bins: &Path, dir: &Path, clients: usize, log: Option<&Path>) -> Result<DdmProcess, BenchError> {
    let mut b = DdmProcess::builder(bins)
        .in_dir(dir)
        .state_dir(&dir.join("state"))
        .args(["--threads".to_owned(), FUSE_THREADS.to_string()])
        .env("RUST_LOG", std::env::var("DDF_BENCH_DDM_LOG").unwrap_or_else(|_| "warn".into()))
        // A Ctrl-C meant for the run does not reach ddm; the signal thread stops it.
        .own_process_group()
        .wait_for("null")
        .wait_for("ram0")
        .timeout(Duration::from_secs(60));
    for i in 0..clients {
        let text =
            format!("name = \"bench{i}\"\nexec = \"ddf-testdrv\"\nautostart = true\n[params]\nname = \"bench{i}\"\n");
        b = b.manifest(&format!("bench{i}.toml"), &text).wait_for(&format!("bench{i}"));
    }
    if let Some(log) = log {
        b = b.log_file(log);
    }
    b.start().map_err(BenchError::Launch)
}

/// The driver processes: (instance name, pid).
fn drivers(ddm: &DdmProcess) -> Result<Vec<(String, u32)>, BenchError> {
    let mut link = ddf::ddm::Ddm::connect(ddm.socket()).map_err(|e| BenchError::Control(ddf::error_chain(&e)))?;
    let status = link.status().map_err(|e| BenchError::Control(ddf::error_chain(&e)))?;
    Ok(status.into_iter().filter_map(|d| d.pid.map(|p| (d.name, p))).collect())
}

// ---------------------------------------------------------------------------
// A private tmpfs.

/// A tmpfs mounted on a directory of ours, detached on drop.
#[derive(Debug)]
struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    fn mount(path: &Path, size: u64) -> Result<TmpfsMount, BenchError> {
        std::fs::create_dir_all(path).map_err(setup(format!("cannot create {}", path.display())))?;
        let opts = format!("size={size},mode=0700");
        nix::mount::mount(
            Some("ddf-bench"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| BenchError::Setup(format!("cannot mount a tmpfs on {}", path.display()), e.into()))?;
        register_mount(path);
        Ok(TmpfsMount { path: path.to_owned() })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if nix::mount::umount2(&self.path, nix::mount::MntFlags::empty()).is_err() {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
        unregister_mount(&self.path);
    }
}

// ---------------------------------------------------------------------------
// (b) The FUSE floor.

const ROOT_INO: u64 = 1;
const NULL_INO: u64 = 2;
const DATA_INO: u64 = 3;
/// `s0` is this inode, `s1` the next, ...
const SCALE_INO: u64 = 16;

/// The floor: `null` (reads end of file, writes take everything, like
/// `/ddf/null`), `data` (a block-like file served with pread/pwrite on a
/// tmpfs file) and `s0`, `s1`, ... (like `null`, one per scaling client).
#[derive(Debug)]
struct Floor {
    data: File,
    capacity: u64,
    scale_files: u64,
    born: SystemTime,
}

impl Floor {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size) = match ino {
            ROOT_INO => (FileType::Directory, 0o755, 0),
            NULL_INO => (FileType::RegularFile, 0o666, 0),
            DATA_INO => (FileType::RegularFile, 0o660, self.capacity),
            i if (SCALE_INO..SCALE_INO + self.scale_files).contains(&i) => (FileType::RegularFile, 0o666, 0),
            _ => return None,
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.born,
            mtime: self.born,
            ctime: self.born,
            crtime: self.born,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn ino_of(&self, name: &str) -> Option<u64> {
        match name {
            "null" => Some(NULL_INO),
            "data" => Some(DATA_INO),
            _ => name
                .strip_prefix('s')
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n < self.scale_files && name == format!("s{n}"))
                .map(|n| SCALE_INO + n),
        }
    }
}

impl Filesystem for Floor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // What ddm asks for (ddm-fs/src/fs.rs, init).
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        if config.add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH).is_ok() {
            let _ = config.set_max_stack_depth(1);
        }
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_POSIX_ACL);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (parent.0 == ROOT_INO)
            .then(|| name.to_str().and_then(|n| self.ino_of(n)))
            .flatten()
            .and_then(|ino| self.attr(ino));
        match found {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if ino.0 != ROOT_INO {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let mut entries = vec![
            (ROOT_INO, FileType::Directory, ".".to_owned()),
            (ROOT_INO, FileType::Directory, "..".to_owned()),
            (NULL_INO, FileType::RegularFile, "null".to_owned()),
            (DATA_INO, FileType::RegularFile, "data".to_owned()),
        ];
        for i in 0..self.scale_files {
            entries.push((SCALE_INO + i, FileType::RegularFile, format!("s{i}")));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // The open flags ddm gives a character device and a block device
        // (ddm-fs/src/core.rs, open_flags).
        match ino.0 {
            ROOT_INO => reply.error(Errno::EISDIR),
            DATA_INO => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            i if self.attr(i).is_some() => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE | FopenFlags::FOPEN_STREAM,
            ),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 != DATA_INO {
            reply.data(&[]);
            return;
        }
        let len = (size.min(MAX_IO) as u64).min(self.capacity.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; len];
        match self.data.read_at(&mut buf, offset) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino.0 != DATA_INO {
            reply.written(data.len() as u32);
            return;
        }
        if offset >= self.capacity {
            reply.error(Errno::ENOSPC);
            return;
        }
        let len = (data.len() as u64).min(self.capacity - offset) as usize;
        match self.data.write_at(&data[..len], offset) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        // ddm answers the first flush with ENOSYS, so that the kernel stops
        // sending one at every close; so does the floor.
        reply.error(Errno::ENOSYS);
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::NO_XATTR);
    }
}

/// The floor, mounted; unmounted on drop.
#[derive(Debug)]
struct FloorMount {
    path: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl FloorMount {
    fn mount(path: &Path, data: File, capacity: u64, scale_files: usize) -> Result<FloorMount, BenchError> {
        std::fs::create_dir_all(path).map_err(setup(format!("cannot create {}", path.display())))?;
        let fs = Floor { data, capacity, scale_files: scale_files as u64, born: SystemTime::now() };
        // ddm's mount (ddm-fs/src/main.rs).
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("ddf-bench-floor".into()),
            fuser::MountOption::Subtype("ddf-bench-floor".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoSuid,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoExec,
        ];
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(usize::from(FUSE_THREADS));
        config.clone_fd = true;
        let session = fuser::Session::new(fs, path, &config)
            .map_err(setup(format!("cannot mount the FUSE floor on {}", path.display())))?;
        register_mount(path);
        let session = session.spawn().map_err(setup("cannot start the FUSE floor's threads"))?;
        let floor = FloorMount { path: path.to_owned(), session: Some(session) };
        let null = path.join("null");
        if !wait_until(Duration::from_secs(10), || null.exists()) {
            return Err(BenchError::Setup(
                format!("the FUSE floor on {} does not answer", path.display()),
                std::io::ErrorKind::TimedOut.into(),
            ));
        }
        Ok(floor)
    }
}

impl Drop for FloorMount {
    fn drop(&mut self) {
        // Dropping the session unmounts; its worker threads end when the
        // kernel closes the connection. They are not joined: a stuck one
        // must not stick the run.
        drop(self.session.take());
        if is_mounted(&self.path) {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
        unregister_mount(&self.path);
    }
}

// ---------------------------------------------------------------------------
// (e) The IPC floor.

/// The echo process at the other end of a socketpair.
#[derive(Debug)]
struct EchoProc {
    child: Option<Child>,
    sock: OwnedFd,
}

impl EchoProc {
    fn spawn() -> Result<EchoProc, BenchError> {
        let (ours, theirs) = socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| BenchError::Setup("socketpair".into(), e.into()))?;
        // The child's end is inherited: clear its close-on-exec flag for the
        // spawn, and drop it right after.
        nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
            .map_err(|e| BenchError::Setup("fcntl(F_SETFD) on the socketpair".into(), e.into()))?;
        let exe = std::env::current_exe().map_err(setup("cannot find this program to start the echo helper"))?;
        let child = Command::new(&exe)
            .arg("--ipc-echo")
            .arg(theirs.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .spawn()
            .map_err(setup(format!("cannot start {} --ipc-echo", exe.display())))?;
        drop(theirs);
        lock(&CLEANUP).echo_pid = Some(child.id() as i32);
        Ok(EchoProc { child: Some(child), sock: ours })
    }

    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

impl Drop for EchoProc {
    fn drop(&mut self) {
        // The helper reads end of file and exits.
        let _ = socket::shutdown(self.sock.as_raw_fd(), socket::Shutdown::Both);
        if let Some(mut c) = self.child.take() {
            wait_timeout(&mut c, Duration::from_secs(5));
        }
        lock(&CLEANUP).echo_pid = None;
    }
}

/// Helper mode: echo 1-byte datagrams on `fd` until the other end goes.
fn ipc_echo(fd: RawFd) -> ExitCode {
    let mut buf = [0u8; 16];
    loop {
        match socket::recv(fd, &mut buf, MsgFlags::empty()) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(n) => {
                if let Err(e) = socket::send(fd, &buf[..n], MsgFlags::empty()) {
                    eprintln!("ddf-bench --ipc-echo: send: {e}");
                    return ExitCode::from(1);
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                eprintln!("ddf-bench --ipc-echo: recv on descriptor {fd}: {e}");
                return ExitCode::from(1);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pinning.

/// The threads of a process (its tids), from /proc.
fn tasks(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|it| it.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn pin_tid(tid: i32, set: &CpuSet, what: &str) -> Result<(), BenchError> {
    match nix::sched::sched_setaffinity(Pid::from_raw(tid), set) {
        // A thread that ended meanwhile.
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(e) => Err(BenchError::Pin(format!("{what} (thread {tid})"), e)),
    }
}

fn pin_process(pid: i32, set: &CpuSet, what: &str) -> Result<usize, BenchError> {
    let tids = tasks(pid);
    for &t in &tids {
        pin_tid(t, set, what)?;
    }
    Ok(tids.len())
}

fn one_cpu(cpu: usize) -> Result<CpuSet, BenchError> {
    let mut s = CpuSet::new();
    s.set(cpu).map_err(|e| BenchError::Pin(format!("CPU {cpu}"), e))?;
    Ok(s)
}

/// What a placement pinned where, for the table.
#[derive(Debug, Clone)]
struct Pinning {
    text: String,
}

impl Pinning {
    /// Sets the affinity of every thread that takes part.
    fn apply(
        kind: PlacementKind,
        plan: &Plan,
        initial: &CpuSet,
        ddm: &DdmProcess,
        echo: &EchoProc,
    ) -> Result<Pinning, BenchError> {
        let (client, server) = match kind {
            PlacementKind::Unpinned => (*initial, *initial),
            PlacementKind::Same => (one_cpu(plan.client_cpu)?, one_cpu(plan.client_cpu)?),
            PlacementKind::Split => (one_cpu(plan.client_cpu)?, one_cpu(plan.server_cpu)?),
        };
        // The floor's workers are the fuser-* threads of this process.
        let me = std::process::id() as i32;
        let mut floor_threads = 0;
        for tid in tasks(me) {
            let comm = std::fs::read_to_string(format!("/proc/{me}/task/{tid}/comm")).unwrap_or_default();
            if comm.starts_with("fuser-") {
                pin_tid(tid, &server, "a FUSE floor thread")?;
                floor_threads += 1;
            }
        }
        nix::sched::sched_setaffinity(Pid::from_raw(0), &client)
            .map_err(|e| BenchError::Pin("the measuring thread".into(), e))?;
        if let Some(pid) = echo.pid() {
            pin_process(pid, &server, "the echo helper")?;
        }
        let mut ddm_threads = 0;
        if let Some(pid) = ddm.pid() {
            ddm_threads = pin_process(pid as i32, &server, "ddm")?;
        }
        let drivers = drivers(ddm)?;
        let mut driver_threads = 0;
        for (name, pid) in &drivers {
            driver_threads += pin_process(*pid as i32, &server, &format!("driver {name}"))?;
        }
        let servers = format!(
            "the FUSE floor's {floor_threads} threads, the echo helper, ddm's {ddm_threads} threads, \
the {driver_threads} threads of its {} driver processes",
            drivers.len()
        );
        let text = match kind {
            PlacementKind::Unpinned => "nothing pinned".to_owned(),
            PlacementKind::Same => format!("all on CPU {}: the measuring thread, {servers}", plan.client_cpu),
            PlacementKind::Split => {
                format!("the measuring thread on CPU {}; {servers} on CPU {}", plan.client_cpu, plan.server_cpu)
            }
        };
        Ok(Pinning { text })
    }
}

// ---------------------------------------------------------------------------
// Section 1: the paper's experiment.

/// The four operations, in the order a cycle makes them.
const OPS: [&str; 4] = ["open", "read", "write", "close"];

/// Something the four operations can be timed on.
trait Subject {
    fn open(&mut self) -> std::io::Result<()>;
    fn read(&mut self) -> std::io::Result<()>;
    fn write(&mut self) -> std::io::Result<()>;
    fn close(&mut self) -> std::io::Result<()>;
}

fn not_open() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "not open")
}

/// A file, opened read-write each cycle.
#[derive(Debug)]
struct FileSubject {
    path: PathBuf,
    file: Option<File>,
}

impl FileSubject {
    fn new(path: impl Into<PathBuf>) -> FileSubject {
        FileSubject { path: path.into(), file: None }
    }
}

impl Subject for FileSubject {
    fn open(&mut self) -> std::io::Result<()> {
        self.file = Some(OpenOptions::new().read(true).write(true).open(&self.path)?);
        Ok(())
    }

    fn read(&mut self) -> std::io::Result<()> {
        let mut b = [0u8; 1];
        self.file.as_mut().ok_or_else(not_open)?.read(&mut b).map(|_| ())
    }

    fn write(&mut self) -> std::io::Result<()> {
        match self.file.as_mut().ok_or_else(not_open)?.write(b"x")? {
            1 => Ok(()),
            n => Err(std::io::Error::other(format!("wrote {n} bytes of 1"))),
        }
    }

    fn close(&mut self) -> std::io::Result<()> {
        // std's drop ignores close errors: close by hand to see them.
        let fd: OwnedFd = self.file.take().ok_or_else(not_open)?.into();
        nix::unistd::close(fd).map_err(std::io::Error::from)
    }
}

/// One round trip to the echo helper per operation.
#[derive(Debug)]
struct IpcSubject<'a> {
    sock: &'a OwnedFd,
}

impl IpcSubject<'_> {
    fn round_trip(&mut self) -> std::io::Result<()> {
        let fd = self.sock.as_raw_fd();
        socket::send(fd, b"x", MsgFlags::empty())?;
        let mut b = [0u8; 1];
        match socket::recv(fd, &mut b, MsgFlags::empty())? {
            1 => Ok(()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the echo helper went away")),
        }
    }
}

impl Subject for IpcSubject<'_> {
    fn open(&mut self) -> std::io::Result<()> {
        self.round_trip()
    }
    fn read(&mut self) -> std::io::Result<()> {
        self.round_trip()
    }
    fn write(&mut self) -> std::io::Result<()> {
        self.round_trip()
    }
    fn close(&mut self) -> std::io::Result<()> {
        self.round_trip()
    }
}

/// (d): libDriver's client proxy on `null`, straight to the driver process.
#[derive(Debug)]
struct DirectPath {
    client: ddf::driver::Client,
    handle: Option<ddf::proto::Handle>,
    /// The file opened on the mount as proof of access.
    _proof: File,
}

impl DirectPath {
    /// Opens `null` on the mount (the permission check) and asks ddm for a
    /// direct link to its driver. Not timed.
    fn connect(ddm: &DdmProcess) -> Result<DirectPath, String> {
        let path = ddm.path("null");
        let proof = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut link = ddf::ddm::Ddm::connect(ddm.socket()).map_err(|e| ddf::error_chain(&e))?;
        let client = link.connect_device(&proof).map_err(|e| ddf::error_chain(&e))?;
        Ok(DirectPath { client, handle: None, _proof: proof })
    }
}

fn client_err(e: ddf::driver::ClientError) -> std::io::Error {
    match e {
        ddf::driver::ClientError::Errno(n) => std::io::Error::from_raw_os_error(n.0),
        other => std::io::Error::other(ddf::error_chain(&other)),
    }
}

impl Subject for DirectPath {
    fn open(&mut self) -> std::io::Result<()> {
        self.handle = Some(self.client.open(ddf::proto::OpenFlags::READ_WRITE).map_err(client_err)?);
        Ok(())
    }

    fn read(&mut self) -> std::io::Result<()> {
        let h = self.handle.ok_or_else(not_open)?;
        let mut b = [0u8; 1];
        self.client.read(h, 0, &mut b).map(|_| ()).map_err(client_err)
    }

    fn write(&mut self) -> std::io::Result<()> {
        let h = self.handle.ok_or_else(not_open)?;
        match self.client.write(h, 0, b"x").map_err(client_err)? {
            1 => Ok(()),
            n => Err(std::io::Error::other(format!("wrote {n} bytes of 1"))),
        }
    }

    fn close(&mut self) -> std::io::Result<()> {
        let h = self.handle.take().ok_or_else(not_open)?;
        self.client.close(h).map_err(client_err)
    }
}

/// Latency samples of one operation, summed up (times in nanoseconds).
#[derive(Debug, Clone, Default)]
struct Stats {
    mean: f64,
    p50: u64,
    p99: u64,
    hist: [u32; 13],
    n: usize,
}

impl Stats {
    fn of(mut ns: Vec<u64>) -> Stats {
        ns.sort_unstable();
        let n = ns.len();
        if n == 0 {
            return Stats::default();
        }
        let mut hist = [0u32; 13];
        for &v in &ns {
            let b = BUCKETS_NS.iter().position(|&edge| v < edge).unwrap_or(BUCKETS_NS.len());
            hist[b] += 1;
        }
        Stats {
            mean: ns.iter().sum::<u64>() as f64 / n as f64,
            p50: ns[n / 2],
            p99: ns[(n * 99 / 100).min(n - 1)],
            hist,
            n,
        }
    }
}

/// The cycles of one target: stats per operation.
type OpStats = [Stats; 4];

/// One target of section 1 and its samples (ns) per operation.
struct Timed<'a> {
    name: &'static str,
    subject: &'a mut dyn Subject,
    samples: [Vec<u64>; 4],
}

impl<'a> Timed<'a> {
    fn new(name: &'static str, subject: &'a mut dyn Subject, calls: usize) -> Timed<'a> {
        Timed { name, subject, samples: std::array::from_fn(|_| Vec::with_capacity(calls)) }
    }

    /// `n` cycles of open, read, write, close; kept when `keep`.
    fn cycles(&mut self, n: usize, keep: bool) -> Result<(), BenchError> {
        let target = self.name;
        let fail = |op: &'static str| move |source| BenchError::Call { target, op, source };
        let s = &mut *self.subject;
        for _ in 0..n {
            let t0 = Instant::now();
            s.open().map_err(fail("open"))?;
            let t1 = Instant::now();
            s.read().map_err(fail("read"))?;
            let t2 = Instant::now();
            s.write().map_err(fail("write"))?;
            let t3 = Instant::now();
            s.close().map_err(fail("close"))?;
            let t4 = Instant::now();
            if keep {
                for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)].into_iter().enumerate() {
                    self.samples[k].push((b - a).as_nanos() as u64);
                }
            }
        }
        Ok(())
    }

    fn stats(self) -> OpStats {
        self.samples.map(Stats::of)
    }
}

/// Section 1 for every target: `plan.warmup` untimed cycles each, then
/// `plan.calls` timed cycles each, made in [`ROUNDS`] rounds that visit the
/// targets in turn, so that a change in the machine's load during the run
/// (other processes, frequency) touches every target alike.
fn measure(targets: &mut [Timed<'_>], mut extra: Option<&mut Timed<'_>>, plan: &Plan) -> Result<(), BenchError> {
    for t in targets.iter_mut() {
        t.cycles(plan.warmup, false)?;
    }
    if let Some(t) = extra.as_deref_mut() {
        t.cycles(plan.warmup, false)?;
    }
    for r in 0..ROUNDS {
        let n = plan.calls / ROUNDS + usize::from(r < plan.calls % ROUNDS);
        for t in targets.iter_mut() {
            t.cycles(n, true)?;
        }
        if let Some(t) = extra.as_deref_mut() {
            t.cycles(n, true)?;
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Latency {
    dev_null: OpStats,
    floor: OpStats,
    ddf: OpStats,
    direct: Option<OpStats>,
    ipc: OpStats,
}

/// Mean of the four operations' means, in ns.
fn overall(s: &OpStats) -> f64 {
    s.iter().map(|x| x.mean).sum::<f64>() / 4.0
}

// ---------------------------------------------------------------------------
// Section 3: throughput.

/// MiB/s of one write pass and one read pass.
#[derive(Debug, Clone, Copy)]
struct Rate {
    write: f64,
    read: f64,
}

#[derive(Debug)]
struct Throughput {
    tmpfs: Rate,
    floor: Rate,
    ram0: Rate,
    rand_floor: RandIo,
    rand_ram0: RandIo,
}

/// Random 4 KiB I/O at queue depth 1: operations per second and p99, in ns.
#[derive(Debug, Clone, Copy)]
struct RandIo {
    read_ops: f64,
    read_p99: u64,
    write_ops: f64,
    write_p99: u64,
}

/// `n` writes, then `n` reads, of 4 KiB each at random 4 KiB-aligned
/// offsets below `capacity`, one at a time, on a read-write open (for ram0
/// that open goes through the driver, not passthrough).
fn random_io(target: &'static str, path: &Path, capacity: u64, n: usize) -> Result<RandIo, BenchError> {
    let fail = |op: &'static str| move |source| BenchError::Call { target, op, source };
    let f = OpenOptions::new().read(true).write(true).open(path).map_err(fail("open"))?;
    let blocks = (capacity / 4096).max(1);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % blocks) * 4096
    };
    let mut buf = vec![0x5au8; 4096];
    let mut pass = |write: bool, buf: &mut Vec<u8>| -> Result<(f64, u64), BenchError> {
        let mut times = Vec::with_capacity(n);
        let all = Instant::now();
        for _ in 0..n {
            let at = next();
            let t = Instant::now();
            if write {
                f.write_all_at(buf, at).map_err(fail("pwrite 4 KiB"))?;
            } else {
                f.read_exact_at(buf, at).map_err(fail("pread 4 KiB"))?;
            }
            times.push(t.elapsed().as_nanos() as u64);
        }
        let ops = n as f64 / all.elapsed().as_secs_f64();
        times.sort_unstable();
        Ok((ops, times[(times.len() * 99 / 100).min(times.len() - 1)]))
    };
    let (write_ops, write_p99) = pass(true, &mut buf)?;
    let (read_ops, read_p99) = pass(false, &mut buf)?;
    Ok(RandIo { read_ops, read_p99, write_ops, write_p99 })
}

/// Fills `path` once (untimed), then times `mib` MiB of sequential 1 MiB
/// writes (on a read-write open) and then reads (on a read-only open),
/// wrapping around at `capacity`.
fn transfer(target: &'static str, path: &Path, capacity: u64, mib: u64) -> Result<Rate, BenchError> {
    let fail = |op: &'static str| move |source| BenchError::Call { target, op, source };
    let f = OpenOptions::new().read(true).write(true).open(path).map_err(fail("open"))?;
    let mut buf = vec![0u8; MIB];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 7 + 1) as u8;
    }
    let chunks = capacity / MIB as u64;
    let offset = |i: u64| (i % chunks) * MIB as u64;
    for i in 0..chunks {
        f.write_all_at(&buf, offset(i)).map_err(fail("fill (pwrite)"))?;
    }
    let t = Instant::now();
    for i in 0..mib {
        f.write_all_at(&buf, offset(i)).map_err(fail("pwrite"))?;
    }
    let write = mib as f64 / t.elapsed().as_secs_f64();
    // Reads on a read-only open, as a reader (dd, cp) would make them: for
    // ram0 that is the open ddm serves by FUSE passthrough.
    drop(f);
    let f = File::open(path).map_err(fail("open read-only"))?;
    buf.fill(0);
    let t = Instant::now();
    for i in 0..mib {
        let mut got = 0;
        while got < MIB {
            let at = offset(i) + got as u64;
            let n = f.read_at(&mut buf[got..], at).map_err(fail("pread"))?;
            if n == 0 {
                return Err(BenchError::Call {
                    target,
                    op: "pread",
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("end of file at {at} of a {capacity}-byte file"),
                    ),
                });
            }
            got += n;
        }
    }
    let read = mib as f64 / t.elapsed().as_secs_f64();
    if buf[1] != 8 || buf[MIB - 1] != ((MIB - 1) * 7 + 1) as u8 {
        return Err(BenchError::Call {
            target,
            op: "pread",
            source: std::io::Error::other("read back other bytes than were written"),
        });
    }
    Ok(Rate { write, read })
}

// ---------------------------------------------------------------------------
// Section 4: scaling.

/// `k` threads, thread i writing 1 byte at a time to `path(i)` for `d`;
/// total operations per second.
fn scale(target: &'static str, k: usize, d: Duration, path: impl Fn(usize) -> PathBuf) -> Result<f64, BenchError> {
    let fail = |op: &'static str| move |source| BenchError::Call { target, op, source };
    let mut files = Vec::with_capacity(k);
    for i in 0..k {
        files.push(OpenOptions::new().write(true).open(path(i)).map_err(fail("open"))?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    // The workers wait for the write lock to go before they start.
    let gate = Arc::new(RwLock::new(()));
    let hold = gate.write().unwrap_or_else(|e| e.into_inner());
    let mut workers = Vec::with_capacity(k);
    let mut spawn_err = None;
    for (i, mut f) in files.into_iter().enumerate() {
        let (halt, count, go) = (stop.clone(), total.clone(), gate.clone());
        let w = thread::Builder::new().name(format!("client-{i}")).spawn(move || -> std::io::Result<()> {
            drop(go.read().unwrap_or_else(|e| e.into_inner()));
            let mut n = 0u64;
            let mut err = None;
            while !halt.load(Ordering::Relaxed) {
                if let Err(e) = f.write(b"x") {
                    err = Some(e);
                    break;
                }
                n += 1;
            }
            count.fetch_add(n, Ordering::Relaxed);
            err.map_or(Ok(()), Err)
        });
        match w {
            Ok(w) => workers.push(w),
            Err(e) => {
                spawn_err = Some(e);
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    let t = Instant::now();
    drop(hold);
    if spawn_err.is_none() {
        thread::sleep(d);
    }
    stop.store(true, Ordering::Relaxed);
    let mut first_err = spawn_err;
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => first_err = first_err.or(Some(std::io::Error::other("a client thread panicked"))),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    if let Some(e) = first_err {
        return Err(BenchError::Call { target, op: "write", source: e });
    }
    Ok(total.load(Ordering::Relaxed) as f64 / secs)
}

// ---------------------------------------------------------------------------
// Section 5: idle cost; section 6: the tree.

/// CPU time of the idle section, in ns.
#[derive(Debug)]
struct Idle {
    ddm: u64,
    drivers: u64,
    driver_count: usize,
    floor: u64,
    secs: f64,
}

/// CPU time so far of every live thread of process `pid`, in ns
/// (`/proc/PID/task/TID/schedstat`), leaving out thread `skip`.
fn cpu_ns(pid: i32, skip: i32) -> u64 {
    tasks(pid)
        .into_iter()
        .filter(|t| *t != skip)
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/task/{t}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// After a burst of calls on both, the CPU time ddm and every driver, and
/// the floor's threads (this process's, but for this thread), use over `d`
/// of doing nothing.
fn idle_cost(ddm: &DdmProcess, floor: &FloorMount, d: Duration) -> Result<Idle, BenchError> {
    let fail = |target: &'static str| move |source| BenchError::Call { target, op: "burst", source };
    let mut null = OpenOptions::new().write(true).open(ddm.path("null")).map_err(fail("/ddf/null"))?;
    let mut fnull = OpenOptions::new().write(true).open(floor.path.join("null")).map_err(fail("floor null"))?;
    for _ in 0..5000 {
        null.write_all(b"x").map_err(fail("/ddf/null"))?;
        fnull.write_all(b"x").map_err(fail("floor null"))?;
    }
    drop((null, fnull));
    let me = std::process::id() as i32;
    // SAFETY: gettid has no preconditions.
    let this = unsafe { libc::gettid() };
    let ddm_pid = ddm.pid().map(|p| p as i32).unwrap_or(0);
    let drivers: Vec<i32> = drivers(ddm)?.into_iter().map(|(_, p)| p as i32).collect();
    let snap = || (cpu_ns(ddm_pid, 0), drivers.iter().map(|p| cpu_ns(*p, 0)).sum::<u64>(), cpu_ns(me, this));
    let before = snap();
    let t = Instant::now();
    thread::sleep(d);
    let after = snap();
    Ok(Idle {
        ddm: after.0.saturating_sub(before.0),
        drivers: after.1.saturating_sub(before.1),
        driver_count: drivers.len(),
        floor: after.2.saturating_sub(before.2),
        secs: t.elapsed().as_secs_f64(),
    })
}

/// `ls -l` of a bus of `devices` devices: microseconds per entry, the
/// first time and again.
#[derive(Debug)]
struct TreeRow {
    devices: usize,
    first: f64,
    again: f64,
    /// ddm's resident memory with the bus full, in KiB.
    rss_kib: Option<u64>,
}

/// The resident memory of process `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Fills the virtual bus with each of `sizes` devices in turn (`add-many`
/// in one write, devices no manifest matches) and times `ls -l` of it.
fn tree_scale(ddm: &DdmProcess, sizes: &[usize]) -> Result<Vec<TreeRow>, BenchError> {
    let ctl = ddm.path("vbus/ctl");
    let dir = ddm.path("vbus");
    let write = |cmd: String| {
        std::fs::write(&ctl, cmd).map_err(|source| BenchError::Call { target: "/ddf/vbus/ctl", op: "write", source })
    };
    let count = || std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let ls = || -> Result<f64, BenchError> {
        let t = Instant::now();
        let out =
            Command::new("ls").arg("-l").arg(&dir).stdout(Stdio::null()).status().map_err(setup("cannot run ls"))?;
        if !out.success() {
            return Err(BenchError::Call {
                target: "/ddf/vbus",
                op: "ls -l",
                source: std::io::Error::other(out.to_string()),
            });
        }
        Ok(t.elapsed().as_secs_f64() * 1e6)
    };
    let mut rows = Vec::new();
    for &n in sizes {
        if count() > 1 {
            write("remove-all\n".into())?;
        }
        write(format!("add-many bench{n}- {n} vendor=beef device=0001\n"))?;
        if !wait_until(Duration::from_secs(60), || count() == n + 1) {
            return Err(BenchError::NotUp(format!(
                "the virtual bus does not show {n} devices (it shows {})",
                count() - 1
            )));
        }
        let first = ls()? / (n + 1) as f64;
        let again = ls()? / (n + 1) as f64;
        let rss_kib = ddm.pid().and_then(rss_kib);
        rows.push(TreeRow { devices: n, first, again, rss_kib });
    }
    write("remove-all\n".into())?;
    Ok(rows)
}

/// Sections 5 and 6.
#[derive(Debug)]
struct Extra {
    idle: Idle,
    tree: Vec<TreeRow>,
}

// ---------------------------------------------------------------------------
// The machine.

#[derive(Debug)]
struct Machine {
    cpu: String,
    nproc: usize,
    kernel: String,
    ddm_version: String,
}

impl Machine {
    fn describe(ddm: &DdmProcess) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let nproc = thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let ddm_version = ddf::ddm::Ddm::connect(ddm.socket())
            .and_then(|mut l| l.info())
            .map(|i| i.version)
            .unwrap_or_else(|_| "?".into());
        Machine { cpu, nproc, kernel, ddm_version }
    }
}

// ---------------------------------------------------------------------------
// The table.

#[derive(Debug)]
struct Section {
    placement: PlacementKind,
    pinned: Pinning,
    lat: Latency,
    thr: Throughput,
}

fn us(ns: f64) -> String {
    let u = ns / 1000.0;
    if u < 10.0 {
        format!("{u:.2}")
    } else if u < 1000.0 {
        format!("{u:.1}")
    } else {
        format!("{u:.0}")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".into()
    }
}

type Pick = fn(&Latency) -> Option<&OpStats>;

/// The rows of sections 1 and 2, in order.
const TARGETS: [(&str, Pick); 5] = [
    ("(a) /dev/null", |l| Some(&l.dev_null)),
    ("(b) FUSE floor", |l| Some(&l.floor)),
    ("(c) /ddf/null", |l| Some(&l.ddf)),
    ("(d) direct client", |l| l.direct.as_ref()),
    ("(e) socketpair RTT", |l| Some(&l.ipc)),
];

fn render(
    m: &Machine,
    plan: &Plan,
    sections: &[Section],
    scaling: &[(usize, f64, f64)],
    extra: &Extra,
    direct_err: Option<&String>,
    capacity: u64,
) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let profile = if cfg!(debug_assertions) { "debug build (numbers not meaningful)" } else { "release build" };
    let _ = writeln!(o, "ddf benchmark (ddf-bench {}, ddm {})", env!("CARGO_PKG_VERSION"), m.ddm_version);
    let _ = writeln!(o, "machine: {}, {} CPUs usable by this run, Linux {}", m.cpu, m.nproc, m.kernel);
    let _ = writeln!(
        o,
        "method:  {profile}; ddm and the FUSE floor with {FUSE_THREADS} FUSE threads each (clone_fd); per target \
{} timed cycles of open, read 1 B, write 1 B, close after {} untimed; each call timed alone (Instant)",
        plan.calls, plan.warmup
    );
    for s in sections {
        let _ = writeln!(o, "placement {}: {}", s.placement.title(), s.pinned.text);
    }
    let _ = writeln!(o, "placement of section 4: unpinned");
    if let Some(why) = direct_err {
        let _ = writeln!(o, "(d) direct client path: n/a ({why})");
    }

    // 1. Latency.
    let _ = writeln!(o);
    let _ = writeln!(o, "1. Latency per call, microseconds: mean / p50 / p99");
    let mut head = format!("{:<26}", "");
    let mut sub = format!("{:<26}", "target             op");
    for s in sections {
        head.push_str(&format!(" | {:^20}", s.placement.title()));
        sub.push_str(&format!(" | {:>6} {:>6} {:>6}", "mean", "p50", "p99"));
    }
    let _ = writeln!(o, "{}", head.trim_end());
    let _ = writeln!(o, "{sub}");
    for (name, pick) in TARGETS {
        for (k, op) in OPS.iter().enumerate() {
            let label = if k == 0 { name } else { "" };
            let mut line = format!("{label:<19} {op:<6}");
            for s in sections {
                match pick(&s.lat) {
                    Some(st) => line.push_str(&format!(
                        " | {:>6} {:>6} {:>6}",
                        us(st[k].mean),
                        us(st[k].p50 as f64),
                        us(st[k].p99 as f64)
                    )),
                    None => line.push_str(&format!(" | {:>6} {:>6} {:>6}", "n/a", "", "")),
                }
            }
            let _ = writeln!(o, "{}", line.trim_end());
        }
    }
    let _ = writeln!(o, "(e) makes one 1-byte request/reply round trip per \"operation\".");

    // Histograms.
    let _ = writeln!(o);
    let _ =
        writeln!(o, "Histograms: % of calls per latency bucket, upper bounds in us ('.' = under 0.5%, blank = none)");
    for s in sections {
        let mut head = format!("{:<26}", s.placement.title());
        for l in BUCKET_LABELS {
            head.push_str(&format!("{l:>5}"));
        }
        let _ = writeln!(o, "{head}");
        for (name, pick) in TARGETS {
            let Some(st) = pick(&s.lat) else {
                continue;
            };
            for (k, op) in OPS.iter().enumerate() {
                let label = if k == 0 { name } else { "" };
                let mut line = format!("{label:<19} {op:<6}");
                for &c in &st[k].hist {
                    let pct = 100.0 * c as f64 / st[k].n.max(1) as f64;
                    let cell = if c == 0 {
                        String::new()
                    } else if pct.round() < 1.0 {
                        ".".into()
                    } else {
                        format!("{:.0}", pct.round())
                    };
                    line.push_str(&format!("{cell:>5}"));
                }
                let _ = writeln!(o, "{}", line.trim_end());
            }
        }
    }

    // 2. Ratios.
    let _ = writeln!(o);
    let _ =
        writeln!(o, "2. Ratios of mean latencies; \"all\" = (mean of the four ops' means) / (the same of the other)");
    let mut head = format!("{:<26}", "");
    for s in sections {
        head.push_str(&format!(" | {:>9}", s.placement.title()));
    }
    head.push_str(" | target");
    let _ = writeln!(o, "{head}");
    let pairs: [(&str, Pick, Pick, &str); 2] = [
        (
            "(c)/(b) driver hop",
            |l| Some(&l.ddf),
            |l| Some(&l.floor),
            "<= 1.10 unpinned, split; <= 1.5 same CPU (paper: 1.068)",
        ),
        ("(d)/(e) direct path", |l| l.direct.as_ref(), |l| Some(&l.ipc), "<= 1.10 unpinned"),
    ];
    for (name, num, den, target) in pairs {
        for k in 0..=OPS.len() {
            let (label, op) = if k == 0 { (name, "all") } else { ("", OPS[k - 1]) };
            let mut line = format!("{label:<19} {op:<6}");
            for s in sections {
                let r = match (num(&s.lat), den(&s.lat)) {
                    (Some(a), Some(b)) if k == 0 => ratio(overall(a), overall(b)),
                    (Some(a), Some(b)) => ratio(a[k - 1].mean, b[k - 1].mean),
                    _ => "n/a".into(),
                };
                line.push_str(&format!(" | {r:>9}"));
            }
            if k == 0 {
                line.push_str(&format!(" | {target}"));
            }
            let _ = writeln!(o, "{}", line.trim_end());
        }
    }

    // 3. Throughput.
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "3. Throughput, MiB/s: sequential 1 MiB pwrite (read-write open), then pread (read-only open), {} MiB \
each, on a {} MiB file filled once first",
        plan.mib,
        capacity / MIB as u64
    );
    let mut head = format!("{:<26}", "");
    let mut sub = format!("{:<26}", "");
    for s in sections {
        head.push_str(&format!(" | {:^15}", s.placement.title()));
        sub.push_str(&format!(" | {:>7} {:>7}", "write", "read"));
    }
    let _ = writeln!(o, "{}", head.trim_end());
    let _ = writeln!(o, "{sub}");
    type PickRate = fn(&Throughput) -> Rate;
    let rows: [(&str, PickRate); 3] =
        [("tmpfs file, direct", |t| t.tmpfs), ("tmpfs via FUSE floor", |t| t.floor), ("/ddf/ram0", |t| t.ram0)];
    for (name, pick) in rows {
        let mut line = format!("{name:<26}");
        for s in sections {
            let r = pick(&s.thr);
            line.push_str(&format!(" | {:>7.0} {:>7.0}", r.write, r.read));
        }
        let _ = writeln!(o, "{line}");
    }
    let mut line = format!("{:<26}", "ram0 / FUSE floor");
    for s in sections {
        line.push_str(&format!(
            " | {:>7} {:>7}",
            ratio(s.thr.ram0.write, s.thr.floor.write),
            ratio(s.thr.ram0.read, s.thr.floor.read)
        ));
    }
    line.push_str(" | target: write >= 0.9 (reads: passthrough)");
    let _ = writeln!(o, "{line}");

    // 3b. Random 4 KiB.
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "3b. Random 4 KiB pwrite, then pread, at queue depth 1 on a read-write open ({} of each): operations/s and p99 (us)",
        plan.random_ops
    );
    let mut head = format!("{:<26}", "");
    let mut sub = format!("{:<26}", "");
    for s in sections {
        head.push_str(&format!(" | {:^27}", s.placement.title()));
        sub.push_str(&format!(" | {:>6} {:>6} {:>6} {:>6}", "write", "p99", "read", "p99"));
    }
    let _ = writeln!(o, "{}", head.trim_end());
    let _ = writeln!(o, "{sub}");
    type PickRand = fn(&Throughput) -> RandIo;
    let rows: [(&str, PickRand); 2] = [("tmpfs via FUSE floor", |t| t.rand_floor), ("/ddf/ram0", |t| t.rand_ram0)];
    for (name, pick) in rows {
        let mut line = format!("{name:<26}");
        for s in sections {
            let r = pick(&s.thr);
            line.push_str(&format!(
                " | {:>6.0} {:>6} {:>6.0} {:>6}",
                r.write_ops,
                us(r.write_p99 as f64),
                r.read_ops,
                us(r.read_p99 as f64)
            ));
        }
        let _ = writeln!(o, "{line}");
    }
    let mut line = format!("{:<26}", "ram0 / FUSE floor");
    for s in sections {
        line.push_str(&format!(
            " | {:>6} {:>6} {:>6} {:>6}",
            ratio(s.thr.rand_ram0.write_ops, s.thr.rand_floor.write_ops),
            "",
            ratio(s.thr.rand_ram0.read_ops, s.thr.rand_floor.read_ops),
            ""
        ));
    }
    line.push_str(" | target >= 0.9");
    let _ = writeln!(o, "{}", line.trim_end());

    // 4. Scaling.
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "4. Scaling: K clients, each writing 1 B at a time to its own device for {:.1} s; total writes/s (unpinned)",
        plan.scaling.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "{:>3} | {:>12} {:>10} | {:>12} {:>10} | {:>9}",
        "K", "/ddf/benchK", "per client", "FUSE floor", "per client", "ddf/floor"
    );
    for &(k, d, f) in scaling {
        let _ = writeln!(
            o,
            "{k:>3} | {d:>12.0} {:>10.0} | {f:>12.0} {:>10.0} | {:>9}",
            d / k as f64,
            f / k as f64,
            ratio(d, f)
        );
    }
    let _ = writeln!(
        o,
        "/ddf/benchK: one ddf-testdrv driver process per device; FUSE floor: file sK of the in-process floor."
    );
    let _ = writeln!(o, "target: ddf/floor >= 0.9 for every K");

    // 5. Idle.
    let i = &extra.idle;
    let pct = |ns: u64| 100.0 * ns as f64 / (i.secs * 1e9);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "5. Idle cost: CPU time over {:.1} s of doing nothing, right after a burst of 5000 writes on each (unpinned)",
        i.secs
    );
    let _ = writeln!(o, "{:<40} | {:>9} | {:>12}", "", "CPU ms", "% of 1 CPU");
    for (name, ns) in [
        ("ddm".to_owned(), i.ddm),
        (format!("its {} driver processes", i.driver_count), i.drivers),
        ("ddm and drivers together".to_owned(), i.ddm + i.drivers),
        ("FUSE floor (its threads)".to_owned(), i.floor),
    ] {
        let _ = writeln!(o, "{name:<40} | {:>9.1} | {:>11.3}%", ns as f64 / 1e6, pct(ns));
    }
    let _ = writeln!(o, "target: ddm and drivers together under 1% of one CPU");

    // 6. The tree.
    let _ = writeln!(o);
    let _ = writeln!(o, "6. The tree: `ls -l` of /ddf/vbus with N devices, microseconds per entry");
    let _ = writeln!(
        o,
        "{:>8} | {:>10} | {:>10} | {:>16} | {:>12}",
        "N", "first", "again", "again / smallest", "ddm RSS MiB"
    );
    let base = extra.tree.first().map_or(0.0, |r| r.again);
    for r in &extra.tree {
        let rss = r.rss_kib.map_or_else(|| "n/a".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
        let _ = writeln!(
            o,
            "{:>8} | {:>10.1} | {:>10.1} | {:>16} | {:>12}",
            r.devices,
            r.first,
            r.again,
            ratio(r.again, base),
            rss
        );
    }
    let _ = writeln!(o, "target: 4096 devices at most 1.2 times the cost per entry of 1000; 100,000 devices held");
    o
}
