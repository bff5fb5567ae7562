//! Drivers run confined: as another user where they need no privilege, with
//! no new privileges, (Landlock) able to open only the files their
//! manifest names, and (seccomp) able to make only the system calls of the
//! base list and their manifest.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ddf_tests::{proc_status, wait_until, Ddm, DdmProcess};

fn status_field(pid: u32, field: &str) -> String {
    proc_status(pid, field).unwrap_or_else(|| panic!("no {field} for pid {pid}"))
}

fn pid_of(ddm: &Ddm, name: &str) -> u32 {
    ddm.driver_pid(name).unwrap_or_else(|| panic!("{name} does not run"))
}

const BUILTIN: [&str; 5] = ["null", "keyboard", "ramdisk", "pci", "vbus"];

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

#[test]
fn every_builtin_driver_runs_with_a_system_call_filter() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    for d in BUILTIN {
        let pid = pid_of(&ddm, d);
        assert_eq!(status_field(pid, "Seccomp:"), "2", "{d} runs without a seccomp filter");
        // ddm's two (clone3, the list) and the runtime's own (no execve).
        assert_eq!(status_field(pid, "Seccomp_filters:"), "3", "{d}");
    }
    // ... and they still do their work.
    let mut b = [1u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(ddm.path("zero")).unwrap(), &mut b).unwrap();
    assert_eq!(b, [0; 4]);
    assert_eq!(std::fs::read(ddm.path("pci/0000:00:00.0")).map(|b| b.len() >= 64).ok(), Some(true));
    std::fs::write(ddm.path("vbus/ctl"), "add filtered vendor=0x1\n").unwrap();
    assert!(wait_until(Duration::from_secs(10), || ddm.path("vbus/filtered").exists()));
}

#[test]
fn a_forbidden_system_call_kills_each_builtin_driver_with_sigsys_and_it_comes_back() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    for d in BUILTIN {
        let pid = pid_of(&ddm, d);
        ddm.ddmctl_ok(&["inject", d, "forbidden-syscall"]);
        let new = ddm.wait_running_new_pid(d, pid);
        let status = ddm.driver(d);
        let last_exit = status["last_exit"].as_str().unwrap_or("");
        // pci may open its netlink socket: it is stopped at ptrace.
        let call = if d == "pci" { "ptrace" } else { "socket" };
        assert!(
            last_exit.starts_with(&format!("sandbox violation: system call {call} (")) && last_exit.contains("SIGSYS"),
            "{d}: {last_exit}"
        );
        assert_eq!(status["violations"], 1, "{d}");
        assert_eq!(status_field(new, "Seccomp:"), "2", "{d}'s new incarnation");
        let said = format!("driver {d}: sandbox violation: its system call filter refused {call} (");
        assert!(ddm.log().contains(&said), "the log does not name {call} for {d}:\n{}", ddm.log());
    }
    let text = ddm.ddmctl_ok(&["status"]);
    assert!(text.contains("sandbox violations: 1, the last: system call socket"), "{text}");
    let xattr = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", "user.ddf.violations"])
        .arg(ddm.path("zero"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&xattr.stdout), "1");
    // The drivers serve again.
    let mut b = [1u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(ddm.path("zero")).unwrap(), &mut b).unwrap();
    assert_eq!(b, [0; 4]);
}

#[test]
fn what_a_manifest_adds_is_allowed_and_the_runtime_still_refuses_execve() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder()
        .manifest(&manifest("lenient", "[sandbox]\nsyscalls = [\"socket\", \"ptrace\"]\n"))
        .manifest(&manifest("runner", "[sandbox]\nsyscalls = [\"socket\", \"ptrace\", \"execve\"]\n"))
        .wait_for("runner.info")
        .start();
    let pid = pid_of(&ddm, "lenient");
    ddm.ddmctl_ok(&["inject", "lenient", "forbidden-syscall"]);
    ddm.wait_running_new_pid("lenient", pid);
    let last_exit = ddm.driver("lenient")["last_exit"].as_str().unwrap_or("").to_owned();
    assert!(last_exit.starts_with("sandbox violation: system call execve ("), "{last_exit}");
    // A driver whose manifest names execve may run programs (it tries "/",
    // which is none): it survives all three.
    ddm.ddmctl_ok(&["inject", "runner", "forbidden-syscall"]);
    assert!(wait_until(Duration::from_secs(10), || ddm.log().contains("did not kill this driver")), "{}", ddm.log());
    assert_eq!(ddm.driver("runner")["restarts"], 0);
    assert_eq!(status_field(pid_of(&ddm, "runner"), "Seccomp_filters:"), "2", "no runtime filter when exec is allowed");
}

#[test]
fn log_mode_names_the_calls_a_driver_would_need() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder()
        .manifest(&manifest("learner", "[sandbox]\nseccomp = \"log\"\n"))
        .wait_for("learner.info")
        .start();
    let pid = pid_of(&ddm, "learner");
    // The kernel's log is rate-limited and shared with the whole machine:
    // try again if a record was lost.
    let want = "driver learner (seccomp log mode): its filter would refuse socket (";
    let named = wait_until(Duration::from_secs(15), || {
        if !ddm.log().contains(want) {
            ddm.ddmctl_ok(&["inject", "learner", "forbidden-syscall"]);
            std::thread::sleep(Duration::from_millis(500));
        }
        ddm.log().contains(want)
    });
    assert!(named, "{}", ddm.log());
    assert!(ddm.log().contains("add \"socket\" to its manifest's [sandbox] syscalls"), "{}", ddm.log());
    // Nothing was refused: the same process runs on.
    assert_eq!(pid_of(&ddm, "learner"), pid);
    assert_eq!(ddm.driver("learner")["violations"], 0);
}

#[test]
fn a_manifest_naming_no_system_call_stops_ddm_with_the_name() {
    ddf_tests::needs_root!();
    let err = DdmProcess::builder(&ddf_tests::bin_dir())
        .args(["--no-builtin"])
        .manifest("typo.toml", &manifest("typo", "[sandbox]\nsyscalls = [\"sokcet\"]\n"))
        .timeout(Duration::from_secs(10))
        .start()
        .unwrap_err();
    let said = ddf::error_chain(&err);
    assert!(said.contains("no system call named \"sokcet\""), "{said}");
}
