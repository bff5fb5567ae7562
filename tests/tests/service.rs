//! ddf at home on a Linux system: ddm under a service manager (sd-notify),
//! its log in the journal, the install step, and the README's two commands
//! for root and for other users. No systemd needs to run: the tests stand
//! in for it with sockets of their own, as the protocols are documented.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ddf_tests::{bin, bin_dir, is_mounted, lock, repo_root, wait_timeout, wait_until, Ddm, DdmProcess};

/// A temporary directory other users (drivers run as `nobody`, the tests'
/// uid 4242) may enter.
fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("ddf-svc-").tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---------------------------------------------------------------------------
// sd-notify.

/// What a stand-in service manager received on its notify socket, and what
/// the test saw of the mount at the moment `READY=1` arrived.
#[derive(Debug, Default)]
struct Notified {
    messages: Vec<String>,
    /// Whether the mount answered (mounted, /zero readable) when READY=1 came.
    mount_answered_at_ready: Option<bool>,
}

impl Notified {
    fn states(&self) -> Vec<&str> {
        self.messages.iter().flat_map(|m| m.lines()).collect()
    }
}

#[test]
fn ddm_tells_the_service_manager_ready_status_watchdog_and_stopping() {
    ddf_tests::needs_root!();
    let dir = open_tempdir();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mnt = dir.path().join("mnt");
    let got = Arc::new(Mutex::new(Notified::default()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = {
        let (got, done, mnt) = (got.clone(), done.clone(), mnt.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == "READY=1") {
                    // At this very moment the mount must answer.
                    let answered =
                        is_mounted(&mnt) && ddf_tests::read_n(&mnt.join("zero"), 4).is_ok_and(|b| b == [0; 4]);
                    lock(&got).mount_answered_at_ready = Some(answered);
                }
                lock(&got).messages.push(msg);
            }
        })
    };
    let mut ddm = DdmProcess::builder(&bin_dir())
        .in_dir(dir.path())
        .state_dir(&dir.path().join("state"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .wait_for("zero")
        .start()
        .unwrap_or_else(|e| panic!("{}", ddf::error_chain(&e)));

    assert!(wait_until(Duration::from_secs(20), || lock(&got).states().contains(&"READY=1")), "no READY=1");
    assert_eq!(lock(&got).mount_answered_at_ready, Some(true), "READY=1 came before the mount answered");
    {
        let g = lock(&got);
        let ready = g.messages.iter().find(|m| m.lines().any(|l| l == "READY=1")).unwrap();
        let status = ready.lines().find_map(|l| l.strip_prefix("STATUS=")).unwrap_or_else(|| panic!("{ready:?}"));
        assert!(status.starts_with(&format!("serving {}: ", mnt.display())), "{status}");
        assert!(status.contains("5 drivers running") && status.contains("0 quarantined"), "{status}");
    }
    // WATCHDOG=1 every half WATCHDOG_USEC.
    assert!(
        wait_until(Duration::from_secs(20), || lock(&got).states().iter().filter(|s| **s == "WATCHDOG=1").count() >= 3),
        "no WATCHDOG=1 pings: {:?}",
        lock(&got).messages
    );
    // STATUS= follows the drivers: a killed driver shows, then recovers.
    let out = Command::new(bin("ddmctl"))
        .arg("--socket")
        .arg(ddm.socket())
        .args(["inject", "null", "segv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        wait_until(Duration::from_secs(20), || lock(&got).states().iter().any(|s| s.contains("1 restarting"))),
        "no STATUS= with the restart: {:?}",
        lock(&got).messages
    );
    assert!(wait_until(Duration::from_secs(20), || {
        lock(&got)
            .states()
            .iter()
            .rev()
            .find(|s| s.starts_with("STATUS="))
            .is_some_and(|s| s.contains("5 drivers running"))
    }));
    // STOPPING=1 on the way out.
    ddm.stop();
    assert!(wait_until(Duration::from_secs(10), || lock(&got).states().contains(&"STOPPING=1")), "no STOPPING=1");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    listener.join().unwrap();
    let g = lock(&got);
    let states = g.states();
    let at = |s: &str| states.iter().position(|x| *x == s).unwrap();
    assert!(at("READY=1") < at("STOPPING=1"), "{states:?}");
}

// ---------------------------------------------------------------------------
// The journal.

/// Splits one datagram of the journal's native protocol into its fields:
/// `KEY=value\n`, or `KEY\n` + 64-bit little-endian length + bytes + `\n`.
fn journal_fields(mut d: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !d.is_empty() {
        let eq = d.iter().position(|b| *b == b'=');
        let nl = d.iter().position(|b| *b == b'\n').unwrap_or(d.len());
        match eq {
            Some(eq) if eq < nl => {
                out.push((String::from_utf8_lossy(&d[..eq]).into(), String::from_utf8_lossy(&d[eq + 1..nl]).into()));
                d = &d[(nl + 1).min(d.len())..];
            }
            _ => {
                let key = String::from_utf8_lossy(&d[..nl]).into_owned();
                let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let val = &d[nl + 9..nl + 9 + len];
                out.push((key, String::from_utf8_lossy(val).into()));
                d = &d[(nl + 9 + len + 1).min(d.len())..];
            }
        }
    }
    out
}

/// One journal entry: its fields, several values per name possible.
type Entry = Vec<(String, String)>;

fn field<'a>(e: &'a Entry, k: &str) -> Vec<&'a str> {
    e.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect()
}

/// An env_logger line: `[2026-01-02T03:04:05Z INFO  ddm_fs::spawn] ...`.
fn is_text_log_line(l: &str) -> bool {
    let Some(rest) = l.strip_prefix('[') else { return false };
    let Some((head, _)) = rest.split_once("] ") else { return false };
    let mut w = head.split_whitespace();
    let (Some(time), Some(level), Some(target)) = (w.next(), w.next(), w.next()) else { return false };
    time.len() == "2026-01-02T03:04:05Z".len()
        && time.ends_with('Z')
        && ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level)
        && target.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[test]
fn under_systemd_ddm_logs_to_the_journal_with_priorities_and_fields() {
    ddf_tests::needs_root!();
    let dir = open_tempdir();
    let journal = dir.path().join("journal.sock");
    let sock = UnixDatagram::bind(&journal).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let entries: Arc<Mutex<Vec<Entry>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = {
        let (entries, done) = (entries.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    if n > 0 {
                        lock(&entries).push(journal_fields(&buf[..n]));
                    }
                }
            }
        })
    };
    // systemd gives a service's standard error to the journal and says so
    // in JOURNAL_STREAM (device:inode of that stream).
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let st = stderr.metadata().unwrap();
    let mnt = dir.path().join("mnt");
    let socket = dir.path().join("control.sock");
    // The journal's socket has a fixed path: in a mount namespace of ddm's
    // own, a fresh /run holds a link from it to the test's socket.
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && ln -s \"$1\" /run/systemd/journal/socket \
             && shift && exec \"$@\"",
        )
        .arg("sh")
        .arg(&journal)
        .arg(bin("ddm"))
        .arg(&mnt)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--log-level", "debug,fuser=warn"])
        .env("JOURNAL_STREAM", format!("{}:{}", st.dev(), st.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let pid = child.id();
    let ddmctl = |args: &[&str]| Command::new(bin("ddmctl")).arg("--socket").arg(&socket).args(args).output().unwrap();
    let up = wait_until(Duration::from_secs(30), || {
        ddmctl(&["status"]).status.success()
            && lock(&entries).iter().any(|e| field(e, "MESSAGE").iter().any(|m| m.starts_with("mounted ")))
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(
            up,
            "ddm did not come up logging to the stand-in journal; stderr:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap()
        );
        // A crash: an error line about one driver and its devices.
        assert!(ddmctl(&["inject", "null", "segv"]).status.success());
        // A signalled reader of a parked read: a debug line about one request.
        let out = Command::new("nsenter")
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .args(["timeout", "1", "cat"])
            .arg(mnt.join("keyboard0"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(124), "{}", String::from_utf8_lossy(&out.stderr));
        let find =
            |pred: &dyn Fn(&Entry) -> bool| wait_until(Duration::from_secs(20), || lock(&entries).iter().any(pred));
        assert!(
            find(&|e| field(e, "MESSAGE").iter().any(|m| m.contains("died"))
                && field(e, "DRIVER") == ["null"]
                && field(e, "DEVICE") == ["/null", "/zero"]
                && field(e, "PRIORITY") == ["3"]),
            "no error entry with DRIVER=null DEVICE=/null DEVICE=/zero"
        );
        assert!(
            find(&|e| field(e, "DRIVER") == ["keyboard"]
                && field(e, "REQUEST").first().is_some_and(|r| r.parse::<u64>().is_ok())
                && field(e, "PRIORITY") == ["6"]),
            "no debug entry with DRIVER=keyboard and REQUEST="
        );
        let all = lock(&entries);
        assert!(all.iter().all(|e| field(e, "SYSLOG_IDENTIFIER") == ["ddm"]), "an entry without SYSLOG_IDENTIFIER=ddm");
        assert!(all.iter().any(|e| field(e, "PRIORITY") == ["5"]), "no info (notice) entries");
        assert!(all.iter().any(|e| field(e, "PRIORITY") == ["4"]), "no warning entries (the injected fault)");
        // A line about nothing in particular has no such fields.
        let mounted = all.iter().find(|e| field(e, "MESSAGE").iter().any(|m| m.starts_with("mounted "))).unwrap();
        assert!(field(mounted, "DRIVER").is_empty() && field(mounted, "DEVICE").is_empty(), "{mounted:?}");
        // Nothing of ddm's own log went to standard error as text (its
        // drivers' lines do: the journal takes them from the stream).
        let text = std::fs::read_to_string(&stderr_path).unwrap();
        let ours = |l: &&str| is_text_log_line(l) && l.contains(" ddm_fs::");
        assert!(!text.lines().any(|l| ours(&l)), "ddm logged text to the journal stream:\n{text}");
    }));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGTERM);
    if wait_timeout(&mut child, Duration::from_secs(20)).is_none() {
        eprintln!("ddm did not stop on SIGTERM; killed");
    }
    // Its mount lived in its own namespace, gone with it.
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    listener.join().unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn on_standard_error_the_log_is_text_and_log_level_picks_what() {
    ddf_tests::needs_root!();
    // JOURNAL_STREAM naming another stream: not the journal.
    let ddm = Ddm::builder().env("JOURNAL_STREAM", "1:1").wait_for("zero").start();
    let log = ddm.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('[')).collect();
    assert!(lines.len() > 5, "{log}");
    for l in &lines {
        assert!(is_text_log_line(l), "not env_logger's format: {l}");
    }
    assert!(lines.iter().any(|l| l.contains(" INFO  ddm_fs::spawn] driver null: started pid")), "{log}");
    drop(ddm);
    // --log-level wins over RUST_LOG.
    let ddm = Ddm::builder()
        .env("RUST_LOG", "error")
        .args(&["--log-level", "warn,ddm_fs::spawn=debug"])
        .wait_for("zero")
        .start();
    let log = ddm.log();
    assert!(log.contains("ddm_fs::spawn] driver null: started pid"), "{log}");
    assert!(!log.contains(" INFO  ddm_fs::core"), "--log-level warn let info through:\n{log}");
    drop(ddm);
    // A bad level is a usage error that says what is wrong.
    let out = Command::new(bin("ddm")).args(["--log-level", "loud", "/nonexistent/mnt"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"loud\"") && err.contains("not a level"), "{err}");
}

// ---------------------------------------------------------------------------
// The install step.

/// What `scripts/install` puts below the prefix, without the C library.
fn installed_files(prefix: &str) -> BTreeSet<String> {
    let mut want: BTreeSet<String> = [
        "sbin/ddm",
        "bin/ddmctl",
        "libexec/ddf/ddf-null",
        "libexec/ddf/ddf-keyboard",
        "libexec/ddf/ddf-ramdisk",
        "libexec/ddf/ddf-pci",
        "libexec/ddf/ddf-vbus",
        "lib/systemd/system/ddm.service",
        "share/bash-completion/completions/ddmctl",
        "share/zsh/site-functions/_ddmctl",
        "share/fish/vendor_completions.d/ddmctl.fish",
        "share/ddf/installed-files",
    ]
    .iter()
    .map(|f| format!("{prefix}/{f}"))
    .collect();
    for page in std::fs::read_dir(repo_root().join("man")).unwrap() {
        let name = page.unwrap().file_name().into_string().unwrap();
        let section = name.rsplit('.').next().unwrap().to_owned();
        want.insert(format!("{prefix}/share/man/man{section}/{name}"));
    }
    if repo_root().join("libddf-c").is_dir() {
        let cargo = std::fs::read_to_string(repo_root().join("libddf-c/Cargo.toml")).unwrap();
        let version = cargo.lines().find_map(|l| l.strip_prefix("version = \"")).unwrap().trim_end_matches('"');
        let real = format!("lib/libddf.so.{version}");
        for f in [real.as_str(), "lib/libddf.so.0", "lib/libddf.so", "include/ddf.h", "lib/pkgconfig/ddf.pc"] {
            want.insert(format!("{prefix}/{f}"));
        }
    }
    want
}

/// Runs `scripts/install` with `args` (binaries from the tests' build).
fn install(args: &[&str]) {
    let out =
        Command::new(repo_root().join("scripts/install")).args(args).arg("--bin-dir").arg(bin_dir()).output().unwrap();
    assert!(out.status.success(), "scripts/install {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn install_puts_every_file_in_place_and_the_installed_ddm_serves_zero() {
    ddf_tests::needs_root!();
    let dir = open_tempdir();
    let root = dir.path().join("usr");
    let prefix = root.to_str().unwrap();
    install(&["--prefix", prefix]);
    let want = installed_files(prefix);
    // Every file, and the list of them.
    for f in &want {
        assert!(Path::new(f).exists(), "{f} was not installed");
    }
    let list = std::fs::read_to_string(root.join("share/ddf/installed-files")).unwrap();
    let listed: BTreeSet<String> = list.lines().map(str::to_owned).collect();
    assert_eq!(listed, want);
    for exe in ["sbin/ddm", "bin/ddmctl", "libexec/ddf/ddf-null"] {
        assert_eq!(std::fs::metadata(root.join(exe)).unwrap().mode() & 0o777, 0o755, "{exe}");
    }
    // The unit names the installed ddm and is a notify service.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/ddm.service")).unwrap();
    assert!(unit.contains(&format!("ExecStart={prefix}/sbin/ddm /ddf")), "{unit}");
    for line in ["Type=notify", "WatchdogSec=", "RuntimeDirectory=ddf", "StateDirectory=ddf", "Restart=on-failure"] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "the unit has no {line}");
    }
    for forbidden in ["PrivateTmp=", "ProtectSystem=", "ProtectHome=", "PrivateDevices=", "PrivateMounts="] {
        assert!(!unit.lines().any(|l| l.starts_with(forbidden)), "the unit sets {forbidden}");
    }
    let bash = std::fs::read_to_string(root.join("share/bash-completion/completions/ddmctl")).unwrap();
    assert!(bash.contains("monitor"), "the installed bash completions are not ddmctl's");

    // The installed ddm finds its drivers in libexec/ddf and serves /zero.
    let ddm = DdmProcess::builder(&root.join("sbin"))
        .state_dir(&dir.path().join("state"))
        .wait_for("zero")
        .start()
        .unwrap_or_else(|e| panic!("{}", ddf::error_chain(&e)));
    assert_eq!(ddf_tests::read_n(&ddm.path("zero"), 8).unwrap(), [0; 8]);
    let status = Command::new(root.join("bin/ddmctl"))
        .arg("--socket")
        .arg(ddm.socket())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(status.status.success());
    let all: Vec<serde_json::Value> = serde_json::from_slice(&status.stdout).unwrap();
    let null = all.iter().find(|d| d["name"] == "null").unwrap();
    assert_eq!(null["state"], "running");
    let exec = PathBuf::from(null["exec"].as_str().unwrap());
    assert_eq!(exec, std::fs::canonicalize(root.join("libexec/ddf")).unwrap().join("ddf-null"));
    drop(ddm);

    // scripts/uninstall removes every file it listed.
    let out = Command::new(repo_root().join("scripts/uninstall")).args(["--prefix", prefix]).output().unwrap();
    assert!(out.status.success(), "scripts/uninstall: {}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<&String> = want.iter().filter(|f| Path::new(f).exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn install_with_destdir_stages_the_files_and_names_the_prefix_alone() {
    ddf_tests::needs_root!();
    let dir = open_tempdir();
    let stage = dir.path().join("stage");
    let prefix = "/opt/ddf-test";
    install(&["--prefix", prefix, &format!("DESTDIR={}", stage.display())]);
    assert!(!Path::new(prefix).exists(), "DESTDIR was not used");
    let want = installed_files(prefix);
    for f in &want {
        assert!(stage.join(f.trim_start_matches('/')).exists(), "{f} was not staged");
    }
    let root = stage.join(prefix.trim_start_matches('/'));
    let list = std::fs::read_to_string(root.join("share/ddf/installed-files")).unwrap();
    assert_eq!(list.lines().map(str::to_owned).collect::<BTreeSet<_>>(), want);
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/ddm.service")).unwrap();
    assert!(unit.contains(&format!("ExecStart={prefix}/sbin/ddm /ddf")), "{unit}");
    assert!(!unit.contains(stage.to_str().unwrap()), "DESTDIR leaked into the unit");
    let out = Command::new(repo_root().join("scripts/uninstall"))
        .args(["--prefix", prefix])
        .arg(format!("DESTDIR={}", stage.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/uninstall: {}", String::from_utf8_lossy(&out.stderr));
    assert!(want.iter().all(|f| !stage.join(f.trim_start_matches('/')).exists()), "uninstall left files behind");
}

// ---------------------------------------------------------------------------
// The README's two commands.

/// A directory of stand-ins: `cargo` (records its arguments in
/// `cargo.log`) and `sudo`, whose body is given.
fn stand_ins(dir: &Path, sudo: &str) -> PathBuf {
    let d = dir.join("bin");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    script(&d.join("cargo"), &format!("echo \"$*\" >> {}/cargo.log", dir.display()));
    script(&d.join("sudo"), sudo);
    d
}

fn path_with(dir: &Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

#[test]
fn scripts_run_as_root_runs_ddm_without_sudo() {
    ddf_tests::needs_root!();
    let dir = open_tempdir();
    let bins = stand_ins(dir.path(), "echo 'sudo must not be used as root' >&2; exit 99");
    // The release ddm, as cargo (a stand-in here) would have built it.
    let target = dir.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::os::unix::fs::symlink(bin("ddm"), target.join("release/ddm")).unwrap();
    let out = Command::new(repo_root().join("scripts/run"))
        .arg("--help")
        .env("PATH", path_with(&bins))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/run --help: {}", String::from_utf8_lossy(&out.stderr));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: ddm") && help.contains("--log-level"), "{help}");
    let cargo = std::fs::read_to_string(dir.path().join("cargo.log")).unwrap();
    assert_eq!(cargo.trim(), "build --workspace --release --locked");
}

#[test]
fn scripts_test_as_root_runs_every_step_without_sudo() {
    ddf_tests::needs_root!();
    let dir = open_tempdir();
    let bins = stand_ins(dir.path(), "echo 'sudo must not be used as root' >&2; exit 99");
    // The fuzz targets, as `cargo fuzz build` (a stand-in here) would have
    // built them: each says it ran, as libFuzzer does.
    let host = Command::new("rustc").arg("-vV").output().unwrap();
    let host = String::from_utf8(host.stdout).unwrap();
    let host = host.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().to_owned();
    let fuzz_bins = dir.path().join("fuzz-target").join(&host).join("release");
    std::fs::create_dir_all(&fuzz_bins).unwrap();
    let list = Command::new(repo_root().join("scripts/fuzz")).arg("--list").output().unwrap();
    let targets: Vec<String> = String::from_utf8(list.stdout).unwrap().lines().map(str::to_owned).collect();
    assert!(targets.len() > 10, "{targets:?}");
    for t in &targets {
        script(&fuzz_bins.join(t), "echo 'stat::number_of_executed_units: 7'");
    }
    let out = Command::new(repo_root().join("scripts/test"))
        .env("PATH", path_with(&bins))
        .env("DDF_TEST_THREADS", "3")
        .env("DDF_FUZZ_TARGET_DIR", dir.path().join("fuzz-target"))
        .env("DDF_FUZZ_WORK", dir.path().join("fuzz-work"))
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/test: {}", String::from_utf8_lossy(&out.stderr));
    let cargo = std::fs::read_to_string(dir.path().join("cargo.log")).unwrap();
    let steps: Vec<&str> = cargo.lines().collect();
    // Formatting and lints first, then the build, then the tests, each
    // test run with the threads asked for.
    assert_eq!(
        steps.get(..4).unwrap_or_default(),
        [
            "fmt --all -- --check",
            "clippy --workspace --all-targets --locked -- -D warnings",
            "build --workspace --locked --lib --bins --examples",
            "test --workspace --locked -- --test-threads=3",
        ],
        "{steps:?}"
    );
    assert!(steps.iter().filter(|s| s.starts_with("test ")).all(|s| s.ends_with("--test-threads=3")), "{steps:?}");
    // Then the fuzz smoke run: every target built and run.
    assert!(steps.iter().any(|s| s.starts_with("+nightly fuzz build --release")), "{steps:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("fuzz: {} passed, 0 failed", targets.len())), "{said}");
}

#[test]
fn for_another_user_scripts_run_and_test_run_themselves_again_with_sudo() {
    ddf_tests::needs_root!();
    let dir = open_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = dir.path().join("sudo.log");
    let bins = stand_ins(dir.path(), &format!("printf '%s\\n' \"$@\" > {}", log.display()));
    // By its path: the PATH given is the script's, not ours.
    let setpriv = Command::new("sh").args(["-c", "command -v setpriv"]).output().unwrap();
    let setpriv = String::from_utf8(setpriv.stdout).unwrap().trim().to_owned();
    let as_user = |script: &str, path: &str, env: &[(&str, &str)]| {
        let mut cmd = Command::new(&setpriv);
        cmd.args(["--reuid=4242", "--regid=4242", "--clear-groups"]).arg(repo_root().join("scripts").join(script));
        cmd.env_clear().env("PATH", path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let run = repo_root().join("scripts/run");
    let out = as_user("run", &path_with(&bins), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs root; running it again with sudo"), "{out:?}");
    let args = std::fs::read_to_string(&log).unwrap();
    assert_eq!(args.lines().collect::<Vec<_>>(), ["--", "env", run.to_str().unwrap()]);

    // The arguments, and the test variables sudo would drop, go along.
    let out = as_user("test", &path_with(&bins), &[("DDF_TEST_THREADS", "2")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let test = repo_root().join("scripts/test");
    let args = std::fs::read_to_string(&log).unwrap();
    assert_eq!(args.lines().collect::<Vec<_>>(), ["--", "env", "DDF_TEST_THREADS=2", test.to_str().unwrap()]);
    let out = Command::new("setpriv")
        .args(["--reuid=4242", "--regid=4242", "--clear-groups"])
        .arg(&run)
        .args(["/tmp/elsewhere", "--socket", "/tmp/x.sock"])
        .env("PATH", path_with(&bins))
        .output()
        .unwrap();
    assert!(out.status.success());
    let args = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        ["--", "env", run.to_str().unwrap(), "/tmp/elsewhere", "--socket", "/tmp/x.sock"]
    );

    // Without sudo: a clear message, and nothing run.
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bash = Command::new("sh").args(["-c", "command -v bash"]).output().unwrap();
    std::os::unix::fs::symlink(String::from_utf8(bash.stdout).unwrap().trim(), bare.join("bash")).unwrap();
    for name in ["run", "test"] {
        let out = as_user(name, bare.to_str().unwrap(), &[]);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("needs root, and there is no sudo here: run it as root"), "{name}: {err}");
    }
}
