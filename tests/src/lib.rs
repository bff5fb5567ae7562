//! Helpers for ddf's end-to-end tests: a real `ddm` on a temporary mount.
//!
//! [`Ddm::start`] runs the built `ddm` binary on a fresh temporary directory
//! with its own control socket and waits until the mount is up. Dropping the
//! [`Ddm`] (also when a test fails and unwinds) stops it with SIGTERM, kills
//! it if it does not go, and detaches the mount if it is still there: no test
//! leaves a mount behind.
//!
//! The binaries are taken from the cargo target directory the test runs
//! from; `cargo build --workspace` must have built them (the README's test
//! command does).

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A running `ddm` on a temporary mount point.
#[derive(Debug)]
pub struct Ddm {
    child: Option<Child>,
    /// The mount point.
    pub mnt: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// The temporary directory holding both (and any files a test adds).
    pub dir: tempfile::TempDir,
    /// Where its permission state is kept.
    pub state: PathBuf,
    log: PathBuf,
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
        let mnt = dir.path().join("mnt");
        let socket = dir.path().join("control.sock");
        let log = dir.path().join("ddm.log");
        let state = self.state_dir.clone().unwrap_or_else(|| dir.path().join("state"));
        let mut cmd = Command::new(bin("ddm"));
        cmd.arg(&mnt).arg("--socket").arg(&socket).arg("--state-dir").arg(&state);
        for (i, m) in self.manifests.iter().enumerate() {
            let p = dir.path().join(format!("manifest-{i}.toml"));
            std::fs::write(&p, m).unwrap();
            cmd.arg("--manifest").arg(p);
        }
        cmd.args(&self.args);
        cmd.env("RUST_LOG", std::env::var("DDF_TEST_LOG").unwrap_or_else(|_| "info,fuser=warn".into()));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let mut ddm = Ddm { child: Some(child), mnt, socket, dir, state, log };
        let up = wait_until(Duration::from_secs(30), || {
            if let Some(c) = ddm.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return true;
                }
            }
            is_mounted(&ddm.mnt) && self.wait_for.iter().all(|r| ddm.mnt.join(r).exists())
        });
        let exited = ddm.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if !up || exited.is_some() {
            panic!("ddm did not come up (exit: {exited:?}); its log:\n{}", ddm.log());
        }
        ddm
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
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What ddm logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_timeout(&mut child, Duration::from_secs(20))
    }

    /// Kills ddm with SIGKILL (leaving the mount dead), and waits for it.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Ddm {
    fn drop(&mut self) {
        self.stop();
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
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
