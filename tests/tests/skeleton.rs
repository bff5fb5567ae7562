//! The walking skeleton, end to end: a real ddm, a real FUSE mount, real
//! processes and shell tools.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use ddf_tests::{bin, is_mounted, read_n, sh, wait_timeout, wait_until, Ddm};

const STALL_MANIFEST: &str = r#"
name = "stall"
exec = "ddf-testdrv"
autostart = true
"#;

#[test]
fn root_lists_null_and_zero_as_empty_regular_files() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let out = sh(&format!("ls {}", ddm.mnt.display()));
    let names = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = names.lines().collect();
    assert!(names.contains(&"null") && names.contains(&"zero"), "ls shows {names:?}");
    for dev in ["null", "zero"] {
        let m = std::fs::metadata(ddm.path(dev)).unwrap();
        assert!(m.file_type().is_file(), "{dev} is not a regular file");
        assert!(!m.file_type().is_char_device());
        assert_eq!(m.size(), 0, "{dev} size");
        assert_eq!(m.mode() & 0o777, 0o666, "{dev} mode");
    }
    // `stat` the shell tool agrees.
    let out = sh(&format!("stat -c '%F %s' {}", ddm.path("zero").display()));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "regular empty file 0");
}

#[test]
fn zero_reads_zeros_and_null_swallows_writes() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let data = read_n(&ddm.path("zero"), 1 << 20).unwrap();
    assert_eq!(data.len(), 1 << 20);
    assert!(data.iter().all(|b| *b == 0), "zero gave a non-zero byte");

    // null: reads are end of file.
    assert!(std::fs::read(ddm.path("null")).unwrap().is_empty());

    // 100 MiB into null with dd.
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", ddm.path("null").display()))
        .args(["bs=1M", "count=100"])
        .output()
        .unwrap();
    assert!(out.status.success(), "dd failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("104857600 bytes"),
        "dd says: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Shell redirection (O_TRUNC) works on a device file.
    let out = sh(&format!("echo hi > {}", ddm.path("null").display()));
    assert!(out.status.success(), "echo > null: {}", String::from_utf8_lossy(&out.stderr));
    // head | xxd, as the README shows.
    let out = sh(&format!("head -c 16 {} | xxd -p", ddm.path("zero").display()));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "00000000000000000000000000000000");
}

#[test]
fn the_driver_is_its_own_process() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let json = ddm.ddmctl_ok(&["status", "--json"]);
    let pid: u32 = json
        .split("\"name\": \"null\"")
        .nth(1)
        .and_then(|s| s.split("\"pid\": ").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid for null in {json}"));
    assert_ne!(pid, ddm.pid(), "the null driver runs inside ddm");
    assert_ne!(pid, std::process::id());
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.ends_with("ddf-null"), "pid {pid} runs {}", exe.display());
    // Its parent is ddm.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: u32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ppid, ddm.pid());

    let status = ddm.ddmctl_ok(&["status"]);
    let line = status.lines().find(|l| l.starts_with("null")).unwrap();
    assert!(line.contains(&pid.to_string()) && line.contains("running"), "status line: {line}");

    // The tree names driver, pid and state per node.
    let tree = ddm.ddmctl_ok(&["tree"]);
    let zero = tree.lines().find(|l| l.trim_start().starts_with("zero")).unwrap();
    assert!(zero.contains("driver null") && zero.contains(&format!("pid {pid}")) && zero.contains("running"), "{zero}");
}

#[test]
fn a_stuck_driver_holds_up_nothing_else() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(STALL_MANIFEST).wait_for("stall").start();
    // A reader blocks on the stalling device.
    let mut reader =
        Command::new("cat").arg(ddm.path("stall")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Wait until its read is parked in the test driver.
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(format!("/proc/{}/wchan", reader.id()))
                .map(|w| w.contains("fuse") || w.contains("request_wait"))
                .unwrap_or(false)
        }),
        "the reader never blocked in FUSE"
    );
    assert!(reader.try_wait().unwrap().is_none(), "the stalled read returned");

    // Meanwhile zero and ls complete (bounded by a generous deadline so a
    // regression fails instead of hanging the suite).
    let mut zero =
        Command::new("head").args(["-c", "1048576"]).arg(ddm.path("zero")).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(zero.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(wait_timeout(&mut zero, Duration::from_secs(30)).unwrap().success());
    assert_eq!(out.len(), 1 << 20);
    let mut ls = Command::new("ls").arg(&ddm.mnt).stdout(Stdio::piped()).spawn().unwrap();
    assert!(wait_timeout(&mut ls, Duration::from_secs(30)).unwrap().success());
    let status = ddm.ddmctl_ok(&["status"]);
    assert!(status.contains("stall"), "{status}");

    // The stalled reader is still there, and a signal ends it.
    assert!(reader.try_wait().unwrap().is_none());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(reader.id() as i32, libc::SIGTERM) };
    let st = wait_timeout(&mut reader, Duration::from_secs(20));
    assert!(st.is_some(), "a signalled reader stayed stuck in the driver");
}

#[test]
fn bad_mountpoints_are_refused_with_a_clear_error() {
    ddf_tests::needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let run = |mnt: &std::path::Path| {
        Command::new(bin("ddm"))
            .arg(mnt)
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .unwrap()
    };
    // A file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = run(&file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is not a directory"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("ddm:")).count(), 1, "{err}");
    // A directory with something in it.
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), b"x").unwrap();
    let out = run(&full);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    // A dead FUSE mount: ddm killed with SIGKILL leaves one behind.
    let mut ddm = Ddm::start();
    ddm.kill_hard();
    assert!(is_mounted(&ddm.mnt));
    // The kernel may answer from its attribute cache for up to the TTL.
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::metadata(&ddm.mnt).err().and_then(|e| e.raw_os_error()) == Some(libc::ENOTCONN)
        }),
        "the killed ddm did not leave a dead mount"
    );
    let out = run(&ddm.mnt);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(msg.contains("dead FUSE mount") && msg.contains("umount -l"), "{msg}");
    // (ddm's Drop detaches the dead mount.)
}

#[test]
fn missing_mountpoint_is_created() {
    ddf_tests::needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("new/ddf");
    let sock = dir.path().join("s.sock");
    let mut child = Command::new(bin("ddm"))
        .arg(&mnt)
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_until(Duration::from_secs(30), || is_mounted(&mnt));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = wait_timeout(&mut child, Duration::from_secs(20));
    if is_mounted(&mnt) {
        let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    }
    assert!(up, "ddm did not mount on a missing directory");
    assert!(st.unwrap().success());
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    ddf_tests::needs_root!();
    let mut ddm = Ddm::start();
    let mnt = ddm.mnt.clone();
    assert!(is_mounted(&mnt));
    // An open file does not keep the mount alive.
    let f = std::fs::File::open(ddm.path("zero")).unwrap();
    let st = ddm.stop().expect("ddm did not stop on SIGTERM");
    assert!(st.success(), "ddm exited with {st}");
    assert!(!is_mounted(&mnt), "SIGTERM left the mount behind");
    assert!(!ddm.socket.exists(), "the control socket is left behind");
    drop(f);
}
