//! ddm killed with SIGKILL: none of its drivers outlives it, and the next
//! ddm on the same mount point clears the dead mount and serves.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use ddf_tests::{bin_dir, is_mounted, wait_until, Ddm, DdmProcess};

/// Whether `pid` is still a running (not zombie) process of one of the
/// workspace's driver executables.
fn driver_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // pid (comm) STATE ...: the state follows the last ')'.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    let running = matches!(state, Some(s) if s != "Z" && s != "X");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    running && exe.starts_with(bin_dir()) && exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ddf-"))
}

#[test]
fn after_kill_9_no_driver_is_left_and_a_new_ddm_clears_the_dead_mount_and_serves() {
    ddf_tests::needs_root!();
    let stall = "name = \"stall\"\nexec = \"ddf-testdrv\"\nautostart = true\n";
    let mut first = Ddm::builder().manifest(stall).wait_for("stall").start();
    let all: Vec<serde_json::Value> = serde_json::from_str(&first.ddmctl_ok(&["status", "--json"])).unwrap();
    let pids: Vec<u32> = all.iter().filter_map(|d| d["pid"].as_u64()).map(|p| p as u32).collect();
    assert!(pids.len() >= 6, "{all:?}");
    assert!(pids.iter().all(|p| driver_alive(*p)));

    let killed = Instant::now();
    first.kill_hard();
    // Every driver dies with it (PR_SET_PDEATHSIG), within a second or two.
    let gone = wait_until(Duration::from_secs(2), || pids.iter().all(|p| !driver_alive(*p)));
    let left: Vec<&u32> = pids.iter().filter(|p| driver_alive(**p)).collect();
    assert!(gone, "drivers left 2 s after kill -9 of ddm: {left:?}");
    eprintln!("all {} drivers gone {:?} after kill -9 of ddm", pids.len(), killed.elapsed());
    // The mount is dead, as a crash leaves it.
    let err = std::fs::read_dir(&first.mnt).map(|_| ()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    assert!(is_mounted(&first.mnt));

    // A new ddm on the same mount point clears it and serves.
    let log = first.dir.path().join("ddm-2.log");
    let second = DdmProcess::builder(&bin_dir())
        .in_dir(first.dir.path())
        .state_dir(&first.state)
        .log_file(&log)
        .env("RUST_LOG", "info,fuser=warn")
        .manifest("stall-2.toml", stall)
        .wait_for("stall")
        .start()
        .unwrap_or_else(|e| panic!("{}", ddf::error_chain(&e)));
    // The dead mount's names may still be in the kernel's caches: the
    // new ddm is up when it says so.
    let up = format!("mounted {}, control socket", first.mnt.display());
    assert!(wait_until(Duration::from_secs(30), || second.log().contains(&up)), "{}", second.log());
    let said = second.log();
    assert!(said.contains("a dead ddf mount was left here") && said.contains("lazy unmount"), "{said}");
    let mut b = [1u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open(second.path("zero")).unwrap(), &mut b).unwrap();
    assert_eq!(b, [0; 8]);
    // Exactly one mount is left there: the new one.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let at = first.mnt.to_string_lossy().into_owned();
    assert_eq!(mounts.lines().filter(|l| l.split(' ').nth(4) == Some(at.as_str())).count(), 1, "{mounts}");
    drop(second);
    assert!(!is_mounted(Path::new(&at)));
}
