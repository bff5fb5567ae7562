//! Helpers for ddf's end-to-end tests and test tools: a real `ddm` on a
//! temporary mount.
//!
//! [`DdmProcess`] is the launcher both kinds share. Its builder runs the
//! `ddm` binary of a given directory on a mount point in a temporary
//! directory, with its own control socket, manifests written next to it and
//! its stderr in a log file, and waits until the mount is up and the nodes
//! asked for exist. It never panics: a failed start is a [`LaunchError`]
//! that says what failed, with the tail of ddm's log when ddm ran. Dropping
//! a [`DdmProcess`] (also when its owner unwinds) stops ddm with SIGTERM,
//! kills it if it does not go in 20 s, and detaches the mount if it is still
//! there. Until then it is listed for [`take_launched`], so that a tool's
//! signal handler can do the same before it exits.
//!
//! [`Ddm::start`] is the tests' panicking front end on it: the binaries are
//! taken from the cargo target directory the test runs from; `cargo build
//! --workspace` must have built them (the README's test command does). No
//! test leaves a mount behind.
//!
//! The tools (`ddf-bench`, `ddf-chaos`) find their binaries with
//! [`tool_bin_dir`]: next to the running program, or where `--bin-dir` says.

#![allow(clippy::unwrap_used)]

pub mod clients;

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

pub mod dma;

/// Locks a mutex, also after a panic of another holder (the tools' data is
/// counters and lists, still good after a panic).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether this process runs as root (the end-to-end tests mount FUSE file
/// systems and switch users).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Ends a test that needs root with one line, instead of failing, when it
/// runs as another user (`cargo test` as a normal user runs the unit tests).
#[macro_export]
macro_rules! needs_root {
    () => {
        if !$crate::is_root() {
            eprintln!("skipped: {} needs root (FUSE mounts, other users)", module_path!());
            return;
        }
    };
}

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    assert!(dir.join("ddm").exists(), "no ddm binary in {}: run `cargo build --workspace` first", dir.display());
    dir
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The root of the source tree.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Whether `path` is a mount point now (per /proc/mounts).
pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = path.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(want.as_ref()))
}

/// Polls `f` until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child with a deadline; kills it if the deadline passes.
/// Returns `None` when it had to be killed.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// The launcher.

/// How long [`DdmProcess::stop`] gives ddm after SIGTERM before it kills it.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a [`DdmProcess`] could not be started, or its binaries not found.
#[derive(Debug)]
pub enum LaunchError {
    /// The running program's directory (where the binaries are by default)
    /// is unknown.
    CurrentExe(std::io::Error),
    /// A binary the run needs is not in the binary directory.
    MissingBin {
        /// Where it was looked for.
        dir: PathBuf,
        /// Its file name.
        name: String,
    },
    /// The temporary directory could not be created.
    TempDir(std::io::Error),
    /// A manifest file could not be written.
    Manifest(PathBuf, std::io::Error),
    /// ddm's log file could not be created.
    Log(PathBuf, std::io::Error),
    /// The ddm binary could not be started.
    Spawn(PathBuf, std::io::Error),
    /// ddm exited before it was up.
    Exited {
        /// Its exit status, when it could be read.
        status: Option<ExitStatus>,
        /// The last lines of its log.
        log_tail: String,
    },
    /// ddm ran, but the mount or an awaited node was not there in time.
    NotUp {
        /// The mount point.
        mnt: PathBuf,
        /// Whether the mount was up (then a node was missing).
        mounted: bool,
        /// The nodes waited for, relative to the mount.
        wait_for: Vec<String>,
        /// How long it waited.
        timeout: Duration,
        /// The last lines of its log.
        log_tail: String,
    },
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::CurrentExe(_) => write!(f, "cannot find this program's directory; pass --bin-dir"),
            LaunchError::MissingBin { dir, name } => write!(
                f,
                "no {name} in {}: build the workspace first (`cargo build --workspace --release`) or pass --bin-dir",
                dir.display()
            ),
            LaunchError::TempDir(_) => write!(f, "cannot create a temporary directory"),
            LaunchError::Manifest(p, _) => write!(f, "cannot write the manifest {}", p.display()),
            LaunchError::Log(p, _) => write!(f, "cannot create ddm's log {}", p.display()),
            LaunchError::Spawn(p, _) => write!(f, "cannot start {}", p.display()),
            LaunchError::Exited { status, log_tail } => {
                match status {
                    Some(s) => write!(f, "ddm exited at start ({s})")?,
                    None => write!(f, "ddm exited at start")?,
                }
                write_log_tail(f, log_tail)
            }
            LaunchError::NotUp { mnt, mounted: false, timeout, log_tail, .. } => {
                write!(f, "ddm did not mount {} in {} s", mnt.display(), timeout.as_secs())?;
                write_log_tail(f, log_tail)
            }
            LaunchError::NotUp { mnt, mounted: true, wait_for, timeout, log_tail } => {
                write!(
                    f,
                    "ddm mounted {}, but not all of {} were there after {} s",
                    mnt.display(),
                    wait_for.join(", "),
                    timeout.as_secs()
                )?;
                write_log_tail(f, log_tail)
            }
        }
    }
}

fn write_log_tail(f: &mut std::fmt::Formatter<'_>, tail: &str) -> std::fmt::Result {
    if tail.is_empty() {
        write!(f, "; its log is empty")
    } else {
        write!(f, "; its log:\n{tail}")
    }
}

impl std::error::Error for LaunchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LaunchError::CurrentExe(e)
            | LaunchError::TempDir(e)
            | LaunchError::Manifest(_, e)
            | LaunchError::Log(_, e)
            | LaunchError::Spawn(_, e) => Some(e),
            LaunchError::MissingBin { .. } | LaunchError::Exited { .. } | LaunchError::NotUp { .. } => None,
        }
    }
}

/// The directory holding a tool's binaries: `dir` when given (its
/// `--bin-dir`), else the directory of the running program. Every one of
/// `names` must be a file there.
pub fn tool_bin_dir(dir: Option<&Path>, names: &[&str]) -> Result<PathBuf, LaunchError> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()
            .map_err(LaunchError::CurrentExe)?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    match names.iter().find(|n| !dir.join(n).is_file()) {
        Some(name) => Err(LaunchError::MissingBin { dir, name: (*name).to_owned() }),
        None => Ok(dir),
    }
}

/// A ddm a [`DdmProcess`] started and has not cleaned up after yet.
#[derive(Debug, Clone)]
pub struct Launched {
    /// Its process id, until the process is reaped.
    pub pid: Option<u32>,
    /// Its mount point, until it is detached.
    pub mnt: PathBuf,
}

/// Every [`Launched`] of this program.
static LAUNCHED: Mutex<Vec<Launched>> = Mutex::new(Vec::new());

fn launched() -> MutexGuard<'static, Vec<Launched>> {
    lock(&LAUNCHED)
}

/// Takes the list of the ddm processes this program started that are not
/// stopped, or whose mounts are not detached, yet: for a signal handler that
/// must stop them and detach their mounts before it exits. (Taking it makes
/// a second handler find nothing to do.)
pub fn take_launched() -> Vec<Launched> {
    std::mem::take(&mut *launched())
}

/// One command-line argument of ddm after the fixed ones, in order.
#[derive(Debug)]
enum DdmArg {
    Plain(OsString),
    /// `--manifest FILE`, with FILE written in the run directory first.
    Manifest {
        file: String,
        text: String,
    },
}

/// How to start a [`DdmProcess`]: `ddm MNT --socket SOCK [--state-dir DIR]`
/// followed by the arguments and manifests added, in the order added.
#[derive(Debug)]
pub struct DdmProcessBuilder {
    bin_dir: PathBuf,
    dir: Option<PathBuf>,
    temp_prefix: String,
    state_dir: Option<PathBuf>,
    args: Vec<DdmArg>,
    env: Vec<(OsString, OsString)>,
    log: Option<PathBuf>,
    own_process_group: bool,
    wait_for: Vec<String>,
    timeout: Duration,
    log_tail_lines: usize,
}

impl DdmProcessBuilder {
    /// Runs ddm in `dir` (mount point `dir/mnt`, socket `dir/control.sock`,
    /// log `dir/ddm.log`), which the caller owns. By default it gets a fresh
    /// temporary directory of its own, removed on drop.
    pub fn in_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// The name prefix of its own temporary directory [default: `ddf-ddm-`].
    pub fn temp_prefix(mut self, prefix: &str) -> Self {
        self.temp_prefix = prefix.to_owned();
        self
    }

    /// Passes `--state-dir DIR` [default: none, ddm's own default].
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_owned());
        self
    }

    /// Adds command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(|a| DdmArg::Plain(a.into())));
        self
    }

    /// Adds `--manifest FILE`, FILE being `file` in the run directory with
    /// the manifest (TOML text) `text`.
    pub fn manifest(mut self, file: &str, text: &str) -> Self {
        self.args.push(DdmArg::Manifest { file: file.to_owned(), text: text.to_owned() });
        self
    }

    /// Sets an environment variable for ddm.
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Writes ddm's stderr to `path` [default: `ddm.log` in the run directory].
    pub fn log_file(mut self, path: &Path) -> Self {
        self.log = Some(path.to_owned());
        self
    }

    /// Starts ddm in a process group of its own, so that a Ctrl-C meant for
    /// the caller does not reach it (the caller stops it).
    pub fn own_process_group(mut self) -> Self {
        self.own_process_group = true;
        self
    }

    /// Waits at start until this path (below the mount) exists.
    pub fn wait_for(mut self, rel: &str) -> Self {
        self.wait_for.push(rel.to_owned());
        self
    }

    /// How long to wait for the mount and the nodes [default: 30 s].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many of the log's last lines a [`LaunchError`] carries [default: 30].
    pub fn log_tail_lines(mut self, lines: usize) -> Self {
        self.log_tail_lines = lines;
        self
    }

    /// Starts ddm and waits until the mount is up and the awaited nodes
    /// exist. On an error ddm is stopped and its mount detached.
    pub fn start(self) -> Result<DdmProcess, LaunchError> {
        let (dir, own_dir) = match self.dir.clone() {
            Some(d) => (d, None),
            None => {
                let t = tempfile::Builder::new().prefix(&self.temp_prefix).tempdir().map_err(LaunchError::TempDir)?;
                (t.path().to_owned(), Some(t))
            }
        };
        let mnt = dir.join("mnt");
        let socket = dir.join("control.sock");
        let log = self.log.clone().unwrap_or_else(|| dir.join("ddm.log"));
        let exe = self.bin_dir.join("ddm");
        let mut cmd = Command::new(&exe);
        cmd.arg(&mnt).arg("--socket").arg(&socket);
        if let Some(state) = &self.state_dir {
            cmd.arg("--state-dir").arg(state);
        }
        for a in &self.args {
            match a {
                DdmArg::Plain(s) => cmd.arg(s),
                DdmArg::Manifest { file, text } => {
                    let p = dir.join(file);
                    std::fs::write(&p, text).map_err(|e| LaunchError::Manifest(p.clone(), e))?;
                    cmd.arg("--manifest").arg(p)
                }
            };
        }
        let log_file = File::create(&log).map_err(|e| LaunchError::Log(log.clone(), e))?;
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file);
        if self.own_process_group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|e| LaunchError::Spawn(exe, e))?;
        launched().push(Launched { pid: Some(child.id()), mnt: mnt.clone() });
        let mut ddm = DdmProcess { child: Some(child), mnt, socket, log, _own_dir: own_dir };
        let up = wait_until(self.timeout, || {
            !ddm.alive() || (is_mounted(&ddm.mnt) && self.wait_for.iter().all(|n| ddm.mnt.join(n).exists()))
        });
        if !ddm.alive() {
            let status = ddm.exit_status();
            return Err(LaunchError::Exited { status, log_tail: ddm.log_tail(self.log_tail_lines) });
        }
        if !up {
            return Err(LaunchError::NotUp {
                mounted: is_mounted(&ddm.mnt),
                mnt: ddm.mnt.clone(),
                wait_for: self.wait_for,
                timeout: self.timeout,
                log_tail: ddm.log_tail(self.log_tail_lines),
            });
        }
        Ok(ddm)
    }
}

/// How [`DdmProcess::stop`] ended ddm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It had exited already, with this status.
    Before(ExitStatus),
    /// It exited on SIGTERM, with this status.
    Exited(ExitStatus),
    /// It did not exit in 20 s and was killed.
    Killed,
}

/// A running ddm on a mount point of its own. Dropping it stops ddm (see
/// [`DdmProcess::stop`]) and detaches the mount if it is still there.
#[derive(Debug)]
pub struct DdmProcess {
    child: Option<Child>,
    mnt: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// The temporary directory it made for itself, removed after the drop.
    _own_dir: Option<tempfile::TempDir>,
}

impl DdmProcess {
    /// A builder running the `ddm` of `bin_dir`, with the defaults.
    pub fn builder(bin_dir: &Path) -> DdmProcessBuilder {
        DdmProcessBuilder {
            bin_dir: bin_dir.to_owned(),
            dir: None,
            temp_prefix: "ddf-ddm-".into(),
            state_dir: None,
            args: Vec::new(),
            env: Vec::new(),
            log: None,
            own_process_group: false,
            wait_for: Vec::new(),
            timeout: Duration::from_secs(30),
            log_tail_lines: 30,
        }
    }

    /// The mount point.
    pub fn mnt(&self) -> &Path {
        &self.mnt
    }

    /// A path below the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// ddm's process id, until it is stopped or killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether ddm's process still runs.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How ddm ended, if it did (and was not stopped or killed by us).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// What ddm logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops ddm: SIGTERM, then SIGKILL if it has not exited 20 s later.
    /// `None` when it was stopped or killed before.
    pub fn stop(&mut self) -> Option<Stopped> {
        let mut child = self.child.take()?;
        let stopped = match child.try_wait() {
            Ok(Some(s)) => Stopped::Before(s),
            Ok(None) | Err(_) => {
                let _ = signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
                wait_timeout(&mut child, STOP_TIMEOUT).map_or(Stopped::Killed, Stopped::Exited)
            }
        };
        self.forget_pid();
        Some(stopped)
    }

    /// Kills ddm with SIGKILL (leaving the mount dead) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.forget_pid();
        }
    }

    /// Its process is reaped: [`take_launched`] no longer lists a pid.
    fn forget_pid(&self) {
        if let Some(l) = launched().iter_mut().find(|l| l.mnt == self.mnt) {
            l.pid = None;
        }
    }
}

impl Drop for DdmProcess {
    fn drop(&mut self) {
        self.stop();
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        launched().retain(|l| l.mnt != self.mnt);
    }
}

// ---------------------------------------------------------------------------
// The tests' ddm.

/// A running `ddm` on a temporary mount point, for a test: it panics when
/// ddm cannot be started.
#[derive(Debug)]
pub struct Ddm {
    /// Declared first: dropped (ddm stopped, mount detached) before `dir`.
    process: DdmProcess,
    /// The mount point.
    pub mnt: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// The temporary directory holding both (and any files a test adds).
    pub dir: tempfile::TempDir,
    /// Where its permission state is kept.
    pub state: PathBuf,
}

/// How to start a [`Ddm`].
#[derive(Debug, Default)]
pub struct DdmBuilder {
    state_dir: Option<PathBuf>,
    args: Vec<String>,
    manifests: Vec<String>,
    env: Vec<(String, String)>,
    wait_for: Vec<String>,
}

impl DdmBuilder {
    /// Adds command-line arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Adds a driver manifest (TOML text), written to a file in the temp dir.
    pub fn manifest(mut self, toml: &str) -> Self {
        self.manifests.push(toml.to_owned());
        self
    }

    /// Sets an environment variable for ddm.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Keeps the permission state in `dir` (to start a second ddm on the
    /// state of a first); by default each ddm has its own fresh one.
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_owned());
        self
    }

    /// Waits at start until this path (below the mount) exists.
    pub fn wait_for(mut self, rel: &str) -> Self {
        self.wait_for.push(rel.into());
        self
    }

    /// Starts ddm and waits until the mount is up (and the awaited nodes exist).
    pub fn start(self) -> Ddm {
        let dir = tempfile::Builder::new().prefix("ddf-test-").tempdir().unwrap();
        let state = self.state_dir.clone().unwrap_or_else(|| dir.path().join("state"));
        let mut b = DdmProcess::builder(&bin_dir()).in_dir(dir.path()).state_dir(&state).log_tail_lines(usize::MAX);
        for (i, m) in self.manifests.iter().enumerate() {
            b = b.manifest(&format!("manifest-{i}.toml"), m);
        }
        b = b.args(&self.args);
        b = b.env("RUST_LOG", std::env::var("DDF_TEST_LOG").unwrap_or_else(|_| "info,fuser=warn".into()));
        for (k, v) in &self.env {
            b = b.env(k, v);
        }
        for r in &self.wait_for {
            b = b.wait_for(r);
        }
        let process = b.start().unwrap_or_else(|e| panic!("{}", ddf::error_chain(&e)));
        let (mnt, socket) = (process.mnt().to_owned(), process.socket().to_owned());
        Ddm { process, mnt, socket, dir, state }
    }
}

impl Ddm {
    /// A builder with the defaults (built-in drivers, temp mount and socket).
    pub fn builder() -> DdmBuilder {
        DdmBuilder::default()
    }

    /// Starts ddm with the defaults.
    pub fn start() -> Ddm {
        Ddm::builder().start()
    }

    /// A path below the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// ddm's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap_or(0)
    }

    /// What ddm logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Runs `ddmctl` against this ddm.
    pub fn ddmctl(&self, args: &[&str]) -> Output {
        Command::new(bin("ddmctl")).arg("--socket").arg(&self.socket).args(args).output().unwrap()
    }

    /// Runs `ddmctl` and returns its stdout, panicking (with its stderr) if it fails.
    pub fn ddmctl_ok(&self, args: &[&str]) -> String {
        let out = self.ddmctl(args);
        assert!(out.status.success(), "ddmctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops ddm with SIGTERM and returns its exit status (None if it had
    /// to be killed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        match self.process.stop()? {
            Stopped::Before(s) | Stopped::Exited(s) => Some(s),
            Stopped::Killed => None,
        }
    }

    /// Kills ddm with SIGKILL (leaving the mount dead), and waits for it.
    pub fn kill_hard(&mut self) {
        self.process.kill();
    }
}

/// Runs a shell command line with `sh -c`, returning its output.
pub fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

/// Reads up to `n` bytes from a file with plain std I/O.
pub fn read_n(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0xAAu8; n];
    let mut got = 0;
    while got < n {
        let k = f.read(&mut buf[got..])?;
        if k == 0 {
            break;
        }
        got += k;
    }
    buf.truncate(got);
    Ok(buf)
}
