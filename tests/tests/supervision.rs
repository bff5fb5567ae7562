//! Supervision end to end: crashed, hung and misbehaving drivers are
//! noticed, their requests fail with EIO, they are restarted (or
//! quarantined), and nothing else notices.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ddf_tests::{wait_timeout, wait_until, Ddm};

const STALL: &str = "name = \"stall\"\nexec = \"ddf-testdrv\"\nautostart = true\n";

/// (pid, state, restarts, last_exit) of a driver, from `ddmctl status --json`.
fn driver(ddm: &Ddm, name: &str) -> (Option<u32>, String, u32, String) {
    let json = ddm.ddmctl_ok(&["status", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let d = all.iter().find(|d| d["name"] == name).unwrap_or_else(|| panic!("no {name} in {json}"));
    (
        d["pid"].as_u64().map(|p| p as u32),
        d["state"].as_str().unwrap().to_owned(),
        d["restarts"].as_u64().unwrap() as u32,
        d["last_exit"].as_str().unwrap_or("").to_owned(),
    )
}

fn wait_running_new_pid(ddm: &Ddm, name: &str, old: u32) -> u32 {
    let mut pid = 0;
    let ok = wait_until(Duration::from_secs(20), || {
        let (p, state, _, _) = driver(ddm, name);
        pid = p.unwrap_or(0);
        state == "running" && pid != 0 && pid != old
    });
    assert!(ok, "{name} did not come back; log:\n{}", ddm.log());
    pid
}

fn kill9(pid: u32) {
    // SAFETY: kill(2) on a driver process of the ddm under test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn getfattr(path: &std::path::Path, name: &str) -> String {
    let out = Command::new("getfattr").args(["--only-values", "-n", name]).arg(path).output().unwrap();
    assert!(out.status.success(), "getfattr {name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kill_9_fails_the_blocked_read_with_eio_and_the_driver_comes_back() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(STALL).wait_for("stall").start();
    let (pid, _, _, _) = driver(&ddm, "stall");
    let pid = pid.unwrap();
    // A reader parked in the stalling driver.
    let path = ddm.path("stall");
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(path).unwrap();
        let mut b = [0u8; 16];
        let t = Instant::now();
        (f.read(&mut b).map_err(|e| e.raw_os_error()), t)
    });
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    kill9(pid);
    let (res, _) = reader.join().unwrap();
    assert_eq!(res, Err(Some(libc::EIO)), "the parked read did not end with EIO");
    eprintln!("in-flight failure after {:?}", killed.elapsed());
    // The node stays listed, the driver is back with a new pid, new opens work.
    assert!(ddm.path("stall").exists());
    let new = wait_running_new_pid(&ddm, "stall", pid);
    assert_ne!(new, pid);
    let (_, _, restarts, last_exit) = driver(&ddm, "stall");
    assert_eq!(restarts, 1);
    assert!(last_exit.contains("SIGKILL"), "last_exit: {last_exit}");
    let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(ddm.path("stall")).unwrap();
    let err = f.read(&mut [0u8; 4]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "a new open does not reach the new driver");
    // The state shows as extended attributes, and the death is logged.
    assert_eq!(getfattr(&ddm.path("stall"), "user.ddf.state"), "running");
    assert_eq!(getfattr(&ddm.path("stall"), "user.ddf.pid"), new.to_string());
    assert_eq!(getfattr(&ddm.path("stall"), "user.ddf.restarts"), "1");
    assert!(getfattr(&ddm.path("stall"), "user.ddf.last_exit").contains("signal 9"));
    let log = ddm.log();
    assert!(
        log.contains("driver stall (/stall /stall.info) died: killed by signal 9") && log.contains("read #"),
        "the death is not logged with devices, cause and what was in flight:\n{log}"
    );
}

#[test]
fn a_zero_handle_survives_its_driver_restart() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let mut zero = std::fs::File::open(ddm.path("zero")).unwrap();
    let mut null = std::fs::OpenOptions::new().write(true).open(ddm.path("null")).unwrap();
    let mut b = [1u8; 4096];
    zero.read_exact(&mut b).unwrap();
    let (pid, _, _, _) = driver(&ddm, "null");
    let pid = pid.unwrap();
    kill9(pid);
    wait_running_new_pid(&ddm, "null", pid);
    // The same descriptors keep working on the new incarnation.
    b = [1u8; 4096];
    zero.read_exact(&mut b).unwrap();
    assert!(b.iter().all(|x| *x == 0));
    null.write_all(&[7u8; 1000]).unwrap();
}

#[test]
fn a_handle_that_does_not_survive_gets_eio_and_a_new_open_works() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(STALL).wait_for("stall.info").start();
    let mut info = std::fs::File::open(ddm.path("stall.info")).unwrap();
    let (pid, _, _, _) = driver(&ddm, "stall");
    kill9(pid.unwrap());
    wait_running_new_pid(&ddm, "stall", pid.unwrap());
    let err = info.read(&mut [0u8; 64]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let text = std::fs::read_to_string(ddm.path("stall.info")).unwrap();
    assert_eq!(text, "incarnation 2\n", "state left in the store was not handed on");
}

#[test]
fn a_crash_loop_ends_in_failed_and_restart_retries() {
    ddf_tests::needs_root!();
    let manifest = "name = \"loopy\"\nexec = \"ddf-testdrv\"\nautostart = true\n\
        [params]\nname = \"loopy\"\npanic_on_init = \"true\"\n\
        [supervision]\nmax_failures = 3\nbackoff_ms = 50\n";
    let ddm = Ddm::builder().manifest(manifest).start();
    assert!(
        wait_until(Duration::from_secs(20), || driver(&ddm, "loopy").1 == "failed"),
        "the crash loop was not quarantined; log:\n{}",
        ddm.log()
    );
    let (pid, _, restarts, last_exit) = driver(&ddm, "loopy");
    assert_eq!(pid, None);
    assert_eq!(restarts, 2, "3 deaths are the start and 2 restarts");
    assert!(last_exit.contains("status 101"), "a panic exits 101: {last_exit}");
    let status = ddm.ddmctl_ok(&["status"]);
    assert!(status.lines().any(|l| l.starts_with("loopy") && l.contains("failed")), "{status}");
    assert!(ddm.log().contains("quarantined"), "{}", ddm.log());
    // ddmctl restart gives it a fresh start: it crashes again, 3 more times.
    let out = ddm.ddmctl_ok(&["restart", "loopy"]);
    assert!(out.contains("loopy"), "{out}");
    assert!(wait_until(Duration::from_secs(20), || {
        let (_, state, restarts, _) = driver(&ddm, "loopy");
        state == "failed" && restarts >= 5
    }));
    // null never noticed.
    assert_eq!(driver(&ddm, "null").2, 0);
}

#[test]
fn hung_and_garbage_sending_drivers_are_killed_and_restarted_while_ls_works() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(STALL).wait_for("stall").start();
    let (pid, _, _, _) = driver(&ddm, "stall");
    let pid = pid.unwrap();
    ddm.ddmctl_ok(&["inject", "stall", "hang"]);
    // While it hangs, the tree keeps answering.
    for _ in 0..5 {
        let out = Command::new("ls").arg(&ddm.mnt).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("stall"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid2 = wait_running_new_pid(&ddm, "stall", pid);
    assert!(driver(&ddm, "stall").3.contains("heartbeat"), "{}", ddm.log());

    ddm.ddmctl_ok(&["inject", "stall", "garbage"]);
    let pid3 = wait_running_new_pid(&ddm, "stall", pid2);
    assert!(driver(&ddm, "stall").3.contains("protocol violation"), "{}", ddm.log());
    assert_ne!(pid3, pid2);
    // ddm itself is fine.
    let out = Command::new("ls").arg(&ddm.mnt).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("zero"));
}

#[test]
fn flooding_and_stray_replies_are_protocol_violations() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(STALL).wait_for("stall").start();
    let (pid, _, _, _) = driver(&ddm, "stall");
    ddm.ddmctl_ok(&["inject", "stall", "flood"]);
    let pid2 = wait_running_new_pid(&ddm, "stall", pid.unwrap());
    assert!(driver(&ddm, "stall").3.contains("flood"), "{}", ddm.log());
    ddm.ddmctl_ok(&["inject", "stall", "stray-reply"]);
    wait_running_new_pid(&ddm, "stall", pid2);
    assert!(driver(&ddm, "stall").3.contains("unknown request"), "{}", ddm.log());
    // ddm's memory stayed bounded through the flood: well under 256 MiB.
    let status = std::fs::read_to_string(format!("/proc/{}/status", ddm.pid())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 256 * 1024, "ddm uses {rss_kb} kB after a flood");
}

#[test]
fn other_drivers_see_no_error_while_one_crashes_repeatedly() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(STALL).wait_for("stall").start();
    let zero = ddm.path("zero");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let client = std::thread::spawn(move || {
        let mut ok = 0u64;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let mut f = std::fs::File::open(&zero).expect("open zero");
            let mut b = [1u8; 512];
            f.read_exact(&mut b).expect("read zero");
            assert!(b.iter().all(|x| *x == 0));
            ok += 1;
        }
        ok
    });
    for fault in ["panic", "abort", "segv", "exit"] {
        let (pid, _, _, _) = driver(&ddm, "stall");
        ddm.ddmctl_ok(&["inject", "stall", fault]);
        wait_running_new_pid(&ddm, "stall", pid.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ok = client.join().expect("a zero client saw an error");
    assert!(ok > 0);
    let (_, state, restarts, _) = driver(&ddm, "null");
    assert_eq!((state.as_str(), restarts), ("running", 0));
    assert!(driver(&ddm, "stall").2 >= 4);
}

#[test]
fn unprivileged_users_may_look_but_not_restart() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let run = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid", "4242", "--regid", "4242", "--clear-groups"])
            .arg(ddf_tests::bin("ddmctl"))
            .arg("--socket")
            .arg(&ddm.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["restart", "null"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied") && err.contains("root"), "{err}");
    let out = run(&["inject", "null", "panic"]);
    assert!(!out.status.success());
    assert_eq!(driver(&ddm, "null").2, 0, "the refused call changed something");
}

#[test]
fn the_stuck_reader_test_driver_can_be_signalled_out() {
    ddf_tests::needs_root!();
    // A signalled reader of a parked request leaves promptly (EINTR), the
    // driver is told, and the driver keeps serving.
    let ddm = Ddm::builder().manifest(STALL).wait_for("stall").start();
    let mut child = Command::new("timeout").args(["1", "cat"]).arg(ddm.path("stall")).spawn().unwrap();
    let st = wait_timeout(&mut child, Duration::from_secs(15)).expect("timeout 1 cat hung");
    assert_eq!(st.code(), Some(124));
    assert_eq!(driver(&ddm, "stall").1, "running");
}

#[test]
fn a_driver_that_removes_the_device_being_written_is_not_taken_for_hung() {
    ddf_tests::needs_root!();
    // The writer holds the file while its write waits for the driver, and
    // the kernel's notice of the removal waits for the file: the notice
    // must not be sent from the thread the write's answer needs.
    let ddm = Ddm::builder().manifest(STALL).wait_for("stall.info").start();
    let (pid, _, restarts, _) = driver(&ddm, "stall");
    let start = std::time::Instant::now();
    std::fs::write(ddm.path("stall.info"), "remove\n").unwrap();
    assert!(start.elapsed() < Duration::from_secs(3), "the write took {:?}", start.elapsed());
    assert!(wait_until(Duration::from_secs(5), || !ddm.path("stall.info").exists()));
    // Past the heartbeat timeout, the driver is the same process.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(driver(&ddm, "stall"), (pid, "running".to_owned(), restarts, driver(&ddm, "stall").3));
}
