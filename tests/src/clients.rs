//! Real clients of device files, for the end-to-end tests: a process that
//! reads a device file while its output is collected ([`Reader`]), what the
//! kernel says of a process (its open files, its state), signals, and
//! one-call helpers for a test's own descriptors and for `ddmctl`.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{wait_until, Ddm};

/// Long enough for a loaded machine; the tests assert that things end,
/// not how fast.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Whether process `pid` has `path` open.
pub fn has_open(pid: u32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

/// The one-letter state of process `pid` (`R`, `S`, `D`, ...).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits for `child` without killing it; `None` if it is still running
/// at the deadline.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to our child `child`.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid, which is not yet reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// A process reading a device file, its stdout collected by a thread.
/// Dropping it kills the process (and leaves it, rather than hang, if it
/// does not die: the Ddm's drop then tears the mount down under it).
#[derive(Debug)]
pub struct Reader {
    /// The process.
    pub child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    collector: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts `cmd` (stdout and stderr piped) and waits until its process
    /// has `path` open.
    pub fn start(mut cmd: Command, path: &Path) -> Reader {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let collector = Some(collect(stdout, Arc::clone(&out)));
        let mut r = Reader { child, out, collector };
        let pid = r.child.id();
        let opened = wait_until(DEADLINE, || has_open(pid, path));
        if !opened {
            let status = r.child.try_wait();
            panic!("reader {pid} did not open {} (status {status:?})", path.display());
        }
        r
    }

    /// `cat PATH`.
    pub fn cat(path: &Path) -> Reader {
        let mut cmd = Command::new("cat");
        cmd.arg(path);
        Reader::start(cmd, path)
    }

    /// Everything it printed so far.
    pub fn output(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }

    /// What it printed so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// Waits until the output has at least `len` bytes; returns it.
    pub fn wait_output(&self, len: usize) -> Vec<u8> {
        wait_until(DEADLINE, || self.out.lock().unwrap().len() >= len);
        self.output()
    }

    /// Waits until the output contains `text`.
    pub fn wait_line(&self, text: &str) -> bool {
        wait_until(DEADLINE, || String::from_utf8_lossy(&self.output()).contains(text))
    }

    /// Sends `sig` and waits for the process to end; returns its status
    /// and everything it printed. Panics if it does not end.
    pub fn stop(mut self, sig: i32) -> (ExitStatus, Vec<u8>) {
        signal(&self.child, sig);
        let status = wait_deadline(&mut self.child, DEADLINE).unwrap_or_else(|| {
            panic!(
                "reader {} still running {DEADLINE:?} after signal {sig} (state {:?})",
                self.child.id(),
                proc_state(self.child.id())
            )
        });
        if let Some(t) = self.collector.take() {
            t.join().unwrap();
        }
        (status, self.output())
    }

    /// Its standard error, once it has ended (read to the end).
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = wait_deadline(&mut self.child, DEADLINE);
        }
    }
}

fn collect(mut stdout: ChildStdout, out: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

/// Waits until the reader has printed `marker` and then sleeps in a
/// system call (it prints nothing else before it blocks).
pub fn wait_blocked(r: &Reader, marker: &str) {
    assert!(r.wait_line(marker), "no {marker:?}: {:?}", String::from_utf8_lossy(&r.output()));
    let pid = r.child.id();
    assert!(wait_until(DEADLINE, || proc_state(pid) == Some('S')), "reader not asleep");
    // Let it settle in the wait (not just between two calls).
    std::thread::sleep(Duration::from_millis(200));
}

/// `ddmctl type ARGS...`; panics if it fails.
pub fn type_keys(ddm: &Ddm, args: &[&str]) {
    let mut all = vec!["type"];
    all.extend_from_slice(args);
    ddm.ddmctl_ok(&all);
}

/// Opens a device for reading without blocking reads.
pub fn open_nonblocking(path: &Path) -> File {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).unwrap()
}

/// One `read(2)` of at most `len` bytes.
pub fn read_once(f: &mut File, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads every event record waiting on a non-blocking handle of an evdev
/// node.
pub fn drain(f: &mut File) -> Vec<ddf::input::InputEvent> {
    let mut all = Vec::new();
    loop {
        match read_once(f, 64 * ddf::input::EVENT_SIZE) {
            Ok(b) if b.is_empty() => break,
            Ok(b) => all.extend(ddf::input::InputEvent::parse_records(&b).unwrap()),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    all
}

/// An ioctl whose argument is a pointer to `arg`; returns ioctl(2)'s value.
pub fn ioctl<T>(f: &File, cmd: u32, arg: &mut T) -> std::io::Result<i32> {
    // SAFETY: `arg` is a live, exclusively borrowed T, and every request
    // used with this encodes at most size_of::<T>() as its argument size,
    // so the kernel reads or writes only inside it.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), cmd as libc::c_ulong, arg as *mut T) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The counters `ddmctl status --json` shows for `driver`.
pub fn counters(ddm: &Ddm, driver: &str) -> Vec<(String, u64)> {
    let json = ddm.ddmctl_ok(&["status", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&json).unwrap();
    let d = all
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == driver)
        .unwrap_or_else(|| panic!("no driver {driver} in {json}"));
    serde_json::from_value(d["counters"].clone()).unwrap_or_else(|e| panic!("counters of {driver} in {json}: {e}"))
}

/// Counter `name` of `driver`, if it reported one.
pub fn counter(ddm: &Ddm, driver: &str, name: &str) -> Option<u64> {
    counters(ddm, driver).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// A private tmux server (its own socket in `dir`), killed on drop, also
/// when the test fails.
#[derive(Debug)]
pub struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    /// Starts `command` in a 120x30 session `kbd`.
    pub fn start(dir: &Path, command: &str) -> Tmux {
        let t = Tmux { socket: dir.join("tmux.sock") };
        let out = t.cmd(&["new-session", "-d", "-s", "kbd", "-x", "120", "-y", "30", command]);
        assert!(out.status.success(), "tmux: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    /// Runs a tmux command on this server.
    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-S").arg(&self.socket).args(args).env("TERM", "xterm").output().unwrap()
    }

    /// What the pane shows.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "kbd"]).stdout).into_owned()
    }

    /// The command running in the pane.
    pub fn current_command(&self) -> String {
        let out = self.cmd(&["list-panes", "-t", "kbd", "-F", "#{pane_current_command}"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}
