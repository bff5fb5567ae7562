//! Drivers run confined: as another user where they need no privilege, with
//! no new privileges, and (Landlock) able to open only the files their
//! manifest names.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ddf_tests::{wait_until, Ddm};

fn status_field(pid: u64, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(field)).unwrap().trim().to_owned()
}

fn pid_of(ddm: &Ddm, name: &str) -> u64 {
    let all: Vec<serde_json::Value> = serde_json::from_str(&ddm.ddmctl_ok(&["status", "--json"])).unwrap();
    all.iter().find(|d| d["name"] == name).and_then(|d| d["pid"].as_u64()).unwrap()
}

fn probe(ddm: &Ddm, dev: &str) -> String {
    let path = ddm.path(&format!("{dev}.info"));
    assert!(wait_until(Duration::from_secs(10), || path.exists()));
    std::fs::read_to_string(path).unwrap()
}

fn manifest(name: &str, sandbox: &str) -> String {
    format!(
        "name = \"{name}\"\nexec = \"ddf-testdrv\"\nautostart = true\n\
         [params]\nname = \"{name}\"\nprobe = \"/etc/hostname\"\n{sandbox}"
    )
}

#[test]
fn builtin_drivers_that_need_no_privilege_run_as_nobody_without_new_privileges() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    for d in ["null", "ramdisk", "vbus"] {
        let pid = pid_of(&ddm, d);
        assert_eq!(status_field(pid, "Uid:").split_whitespace().next(), Some("65534"), "{d} runs as root");
        assert_eq!(status_field(pid, "NoNewPrivs:"), "1", "{d} may gain privileges");
    }
    // ... and they still work.
    let mut b = [1u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(ddm.path("zero")).unwrap(), &mut b).unwrap();
    assert_eq!(b, [0; 4]);
    assert_eq!(status_field(pid_of(&ddm, "keyboard"), "NoNewPrivs:"), "1");
}

#[test]
fn landlock_lets_a_driver_open_only_what_its_manifest_names() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder()
        .manifest(&manifest("confined", ""))
        .manifest(&manifest("allowed", "[sandbox]\nread = [\"/etc/hostname\"]\n"))
        .manifest(&manifest("free", "[sandbox]\nlandlock = false\n"))
        .wait_for("free.info")
        .start();
    let confined = probe(&ddm, "confined");
    assert!(confined.contains("probe /etc/hostname: denied"), "{confined}");
    let allowed = probe(&ddm, "allowed");
    assert!(allowed.contains("probe /etc/hostname: ok"), "{allowed}");
    let free = probe(&ddm, "free");
    assert!(free.contains("probe /etc/hostname: ok"), "{free}");
}

#[test]
fn an_unknown_sandbox_user_is_a_clear_error() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(&manifest("nouser", "[sandbox]\nuser = \"no-such-user-here\"\n")).start();
    assert!(
        wait_until(Duration::from_secs(10), || ddm.log().contains("no user \"no-such-user-here\"")),
        "{}",
        ddm.log()
    );
    assert!(ddm.path("null").exists(), "the other drivers did not start");
}
