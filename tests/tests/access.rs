//! The access-control layer end to end: rules, chmod/chown/chgrp and ACLs
//! on the mount, enforced by the kernel for other users (numeric ids with
//! setpriv), persisted across ddm and driver restarts.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ddf_tests::{bin, wait_until, Ddm};

const STALL: &str = "name = \"stall\"\nexec = \"ddf-testdrv\"\nautostart = true\n";

/// Runs `cmd args` as uid/gid `id` with the given supplementary groups.
fn as_user(id: u32, groups: &[u32], cmd: &str, args: &[&str]) -> Output {
    let groups = if groups.is_empty() {
        "--clear-groups".to_owned()
    } else {
        format!("--groups={}", groups.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
    };
    Command::new("setpriv")
        .args([&format!("--reuid={id}"), &format!("--regid={id}"), &groups, cmd])
        .args(args)
        .output()
        .unwrap()
}

fn can_read(id: u32, groups: &[u32], path: &Path) -> Result<(), String> {
    let out = as_user(id, groups, "head", &["-c", "1", path.to_str().unwrap()]);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn sh_ok(cmd: &str) {
    let out = ddf_tests::sh(cmd);
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_kernel_enforces_mode_owner_and_groups_for_other_users() {
    ddf_tests::needs_root!();
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("rules");
    std::fs::write(&rules, "zero root:root 0600\n").unwrap();
    let ddm = Ddm::builder().args(&["--rules", rules.to_str().unwrap()]).start();
    let zero = ddm.path("zero");
    assert_eq!(mode(&zero), 0o600);
    let err = can_read(4242, &[], &zero).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");

    sh_ok(&format!("chmod 666 {}", zero.display()));
    can_read(4242, &[], &zero).unwrap();

    sh_ok(&format!("chmod 640 {0} && chgrp 2000 {0}", zero.display()));
    can_read(4242, &[2000], &zero).unwrap();
    assert!(can_read(4243, &[], &zero).is_err(), "a user outside group 2000 read a 0640 file");

    // A non-owner may not chmod.
    let out = as_user(4242, &[2000], "chmod", &["666", zero.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not permitted"), "{out:?}");
    assert_eq!(mode(&zero), 0o640);

    // chown to another user: that user may now chmod it.
    sh_ok(&format!("chown 4242 {}", zero.display()));
    let out = as_user(4242, &[], "chmod", &["604", zero.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    can_read(4243, &[], &zero).unwrap();
}

#[test]
fn chmod_survives_a_ddm_restart_and_a_driver_restart() {
    ddf_tests::needs_root!();
    let state = tempfile::tempdir().unwrap();
    {
        let ddm = Ddm::builder().state_dir(state.path()).start();
        sh_ok(&format!("chmod 600 {0} && chown 7:8 {0}", ddm.path("zero").display()));
        // A driver restart keeps it.
        let pid = status_pid(&ddm, "null");
        // SAFETY: kill(2) on a driver of the ddm under test.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(wait_until(Duration::from_secs(20), || {
            let p = status_pid(&ddm, "null");
            p != 0 && p != pid
        }));
        let m = std::fs::metadata(ddm.path("zero")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 7, 8));
    }
    // A new ddm on the same state.
    let ddm = Ddm::builder().state_dir(state.path()).start();
    let m = std::fs::metadata(ddm.path("zero")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 7, 8));
    // Untouched nodes keep their rule defaults.
    assert_eq!(mode(&ddm.path("null")), 0o666);
}

fn status_pid(ddm: &Ddm, name: &str) -> u32 {
    let all: Vec<serde_json::Value> = serde_json::from_str(&ddm.ddmctl_ok(&["status", "--json"])).unwrap();
    all.iter().find(|d| d["name"] == name).and_then(|d| d["pid"].as_u64()).unwrap_or(0) as u32
}

#[test]
fn rules_defaults_and_later_rules_win() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(STALL).wait_for("stall").start();
    // Built-in defaults.
    assert_eq!(mode(&ddm.path("null")), 0o666);
    assert_eq!(mode(&ddm.path("zero")), 0o666);
    assert_eq!(mode(&ddm.path("stall")), 0o600);
    assert_eq!(mode(&ddm.mnt), 0o755);
    drop(ddm);

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("site.rules");
    std::fs::write(&rules, "# site rules\nstall* root:root 0644\nstall 5:6 0660   # later wins\n").unwrap();
    let ddm = Ddm::builder().manifest(STALL).args(&["--rules", rules.to_str().unwrap()]).wait_for("stall.info").start();
    let m = std::fs::metadata(ddm.path("stall")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o660, 5, 6));
    assert_eq!(mode(&ddm.path("stall.info")), 0o644);
}

#[test]
fn a_rules_file_with_an_error_stops_ddm_with_the_line_number() {
    ddf_tests::needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.rules");
    std::fs::write(&rules, "null root:root 0666\n\nzero root:root rw-rw-rw-\n").unwrap();
    let out = Command::new(bin("ddm"))
        .arg(dir.path().join("mnt"))
        .args(["--socket", dir.path().join("s").to_str().unwrap()])
        .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
        .args(["--rules", rules.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ddm started with a bad rules file");
    assert!(err.contains("bad.rules:3"), "no file:line in {err}");
    assert!(err.contains("octal mode"), "{err}");
    assert!(!ddf_tests::is_mounted(&dir.path().join("mnt")));
}

#[test]
fn a_corrupt_state_file_is_kept_aside_and_reported_and_ddm_starts() {
    ddf_tests::needs_root!();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("permissions.json"), b"{ this is not json").unwrap();
    let ddm = Ddm::builder().state_dir(state.path()).start();
    assert_eq!(mode(&ddm.path("zero")), 0o666, "did not start from the rules");
    let aside: Vec<String> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("permissions.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the bad file was not kept aside: {aside:?}");
    let kept = std::fs::read(state.path().join(&aside[0])).unwrap();
    assert_eq!(kept, b"{ this is not json");
    let log = ddm.log();
    assert!(log.contains("corrupt") || log.contains("permissions.json"), "not reported:\n{log}");
    // And it works from there on.
    sh_ok(&format!("chmod 604 {}", ddm.path("zero").display()));
    assert_eq!(mode(&ddm.path("zero")), 0o604);
}

#[test]
fn the_tree_belongs_to_the_drivers() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let eperm = |cmd: &str| {
        let out = ddf_tests::sh(cmd);
        assert!(!out.status.success(), "{cmd} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not permitted"), "{cmd}: {err}");
    };
    let m = ddm.mnt.display();
    eperm(&format!("mkdir {m}/x"));
    eperm(&format!("rm {m}/null"));
    eperm(&format!("touch {m}/new"));
    eperm(&format!("mv {m}/null {m}/null2"));
    eperm(&format!("ln {m}/null {m}/null3"));
    eperm(&format!("ln -s null {m}/link"));
    eperm(&format!("mknod {m}/dev c 1 3"));
    // touch on a device does not fail scripts.
    sh_ok(&format!("touch {m}/null"));
    assert!(ddm.path("null").exists());
}

#[test]
fn posix_acls_are_stored_and_enforced() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(STALL).wait_for("stall.info").start();
    let info = ddm.path("stall.info");
    sh_ok(&format!("chmod 600 {}", info.display()));
    assert!(can_read(4242, &[], &info).is_err());
    sh_ok(&format!("setfacl -m u:4242:r {}", info.display()));
    can_read(4242, &[], &info).unwrap();
    assert!(can_read(4243, &[], &info).is_err(), "the ACL let in a user it does not name");
    let out = Command::new("getfacl").arg("-n").arg(&info).output().unwrap();
    let acl = String::from_utf8_lossy(&out.stdout);
    assert!(acl.contains("user:4242:r--"), "{acl}");
    // Stored with the other permission state.
    let state = std::fs::read_to_string(ddm.state.join("permissions.json")).unwrap();
    assert!(state.contains("stall.info") && state.contains("acl"), "{state}");
    sh_ok(&format!("setfacl -b {}", info.display()));
    assert!(can_read(4242, &[], &info).is_err());
}

#[test]
fn a_change_that_cannot_be_saved_is_refused_not_lost() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    // Make the state directory unwritable for the store: replace it by a file.
    std::fs::remove_dir_all(&ddm.state).unwrap();
    std::fs::write(&ddm.state, b"not a directory").unwrap();
    let out = ddf_tests::sh(&format!("chmod 600 {}", ddm.path("zero").display()));
    assert!(!out.status.success(), "chmod succeeded with nowhere to save it");
    assert_eq!(mode(&ddm.path("zero")), 0o666, "the refused change shows anyway");
    assert!(ddm.log().contains("not saved"), "{}", ddm.log());
}
