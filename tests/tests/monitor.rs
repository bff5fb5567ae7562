//! `ddmctl monitor`, `ddmctl node`, completions and ddmctl's exit status,
//! end to end: a real ddm, the real ddmctl, shell tools making things happen.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use ddf_tests::{bin, wait_until, Ddm};
use serde_json::Value;

/// A driver for vbus devices of vendor 1234 (the test driver, bound).
const VDRV: &str = "name = \"vdrv\"\nexec = \"ddf-testdrv\"\n\
    [params]\nno_own_devices = \"true\"\n\
    [match]\nbus = \"vbus\"\n[match.ids]\nvendor = \"1234\"\n";

/// A test driver that is quarantined at its second death.
const FRAGILE: &str = "name = \"fragile\"\nexec = \"ddf-testdrv\"\nautostart = true\n\
    [supervision]\nmax_failures = 2\nwindow_secs = 60\n";

/// A running `ddmctl monitor`, its lines arriving on a channel.
struct Monitor {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Monitor {
    /// Starts `ddmctl monitor` (with `extra` arguments) as `uid` (None: as
    /// this process) and waits until it says it is monitoring.
    fn start(ddm: &Ddm, extra: &[&str], uid: Option<u32>) -> Monitor {
        let mut cmd = match uid {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([format!("--reuid={u}"), format!("--regid={u}"), "--clear-groups".into()]).arg(bin("ddmctl"));
                c
            }
            None => Command::new(bin("ddmctl")),
        };
        let mut child = cmd
            .arg("--socket")
            .arg(&ddm.socket)
            .arg("monitor")
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.contains("monitoring ddm at"), "ddmctl monitor said {first:?}");
        let (tx, lines) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Monitor { child, lines, seen: Vec::new() }
    }

    /// Waits for a JSON line for which `pred` holds; panics with every line
    /// seen when none comes within 20 s.
    fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                        panic!("not a JSON line: {line:?} ({e}); before it:\n{}", self.seen.join("\n"))
                    });
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("no {what} within 20 s; the monitor printed:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The next line, if one comes within `timeout`.
    fn line(&mut self, timeout: Duration) -> Option<String> {
        let l = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(l.clone());
        Some(l)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // As Ctrl-C would.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGINT);
        let _ = self.child.wait();
    }
}

fn ctl(ddm: &Ddm, line: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\n' \"$1\" > {}", ddm.path("vbus/ctl").display()))
        .arg("sh")
        .arg(line)
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
}

fn is(v: &Value, event: &str, key: &str, val: &str) -> bool {
    v["event"] == event && v[key] == val
}

fn pid_of(ddm: &Ddm, driver: &str) -> u64 {
    let all: Vec<Value> = serde_json::from_str(&ddm.ddmctl_ok(&["status", "--json"])).unwrap();
    all.iter().find(|d| d["name"] == driver).and_then(|d| d["pid"].as_u64()).unwrap()
}

fn sh_ok(cmd: &str) {
    let out = ddf_tests::sh(cmd);
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn monitor_json_shows_hotplug_binding_death_restart_quarantine_and_chmod() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(VDRV).manifest(FRAGILE).wait_for("vbus/ctl").wait_for("stall").start();
    // Anyone may watch, like `tree`: the monitor runs as another user.
    let mut m = Monitor::start(&ddm, &["--json"], Some(4242));

    // A vbus device: added, bound to the driver whose manifest matches it,
    // removed (and unbound on the way).
    ctl(&ddm, "add mon0 vendor=1234 device=0001");
    let added = m.expect("device-added of vbus/mon0", |v| is(v, "device-added", "path", "vbus/mon0"));
    assert_eq!(added["driver"], "vbus");
    let bound = m.expect("bound of vbus/mon0", |v| is(v, "bound", "path", "vbus/mon0"));
    assert_eq!(bound["driver"], "vdrv");
    assert!(bound["seq"].as_u64() > added["seq"].as_u64(), "bound before added: {bound} {added}");
    m.expect("vdrv ready", |v| is(v, "ready", "driver", "vdrv"));
    ctl(&ddm, "remove mon0");
    let unbound = m.expect("unbound of vbus/mon0", |v| is(v, "unbound", "path", "vbus/mon0"));
    assert_eq!((unbound["driver"].as_str(), unbound["why"].as_str()), (Some("vdrv"), Some("removed")));
    m.expect("removed of vbus/mon0", |v| is(v, "removed", "path", "vbus/mon0"));

    // A driver killed (kill -9) and restarted.
    let pid = pid_of(&ddm, "null");
    sh_ok(&format!("kill -9 {pid}"));
    let died = m.expect("died of null", |v| is(v, "died", "driver", "null"));
    assert_eq!(died["how"], "killed by signal 9 (SIGKILL)");
    assert_eq!(died["next"], "restarting");
    let started = m.expect("started of null", |v| is(v, "started", "driver", "null"));
    assert_ne!(started["pid"].as_u64(), Some(pid), "the same pid after a restart");
    let restarted = m.expect("restarted of null", |v| is(v, "restarted", "driver", "null"));
    assert_eq!(restarted["restarts"], 1);

    // A driver allowed one death in its window: restarted after the first,
    // quarantined at the second.
    let first = pid_of(&ddm, "fragile");
    sh_ok(&format!("kill -9 {first}"));
    let died = m.expect("died of fragile", |v| is(v, "died", "driver", "fragile"));
    assert_eq!(died["next"], "restarting");
    let again = m.expect("started of fragile", |v| is(v, "started", "driver", "fragile"));
    m.expect("restarted of fragile", |v| is(v, "restarted", "driver", "fragile"));
    sh_ok(&format!("kill -9 {}", again["pid"].as_u64().unwrap()));
    let died = m.expect("died of fragile", |v| is(v, "died", "driver", "fragile"));
    assert_eq!(died["next"], "failed");
    let q = m.expect("quarantined of fragile", |v| is(v, "quarantined", "driver", "fragile"));
    assert_eq!(q["how"], "killed by signal 9 (SIGKILL)");

    // A chmod.
    sh_ok(&format!("chmod 604 {}", ddm.path("zero").display()));
    let perm = m.expect("perm-changed of zero", |v| is(v, "perm-changed", "path", "zero"));
    assert_eq!((perm["mode"].as_str(), perm["uid"].as_u64(), perm["gid"].as_u64()), (Some("0604"), Some(0), Some(0)));

    // Every line was one JSON object with a number, a time and a name, in order.
    let seqs: Vec<u64> =
        m.seen.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order: {seqs:?}");
    for l in &m.seen {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v["time_ms"].as_u64().is_some_and(|t| t > 1_600_000_000_000) && v["event"].is_string(), "{l}");
    }
}

#[test]
fn monitor_text_is_one_line_per_event_and_ctrl_c_ends_it() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().wait_for("vbus/ctl").start();
    let mut m = Monitor::start(&ddm, &[], None);
    ctl(&ddm, "add txt0 vendor=9999 device=0002");
    let line = m.line(Duration::from_secs(20)).expect("no line for the device added");
    // 12:34:56.789 device-added  /vbus/txt0  driver vbus
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.get(1..).unwrap_or_default(), ["device-added", "/vbus/txt0", "driver", "vbus"], "{line}");
    assert_eq!(words[0].len(), "12:34:56.789".len(), "{line}");
    // Ctrl-C ends it at once.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(m.child.id() as i32), nix::sys::signal::SIGINT).unwrap();
    let status = ddf_tests::wait_timeout(&mut m.child, Duration::from_secs(5)).expect("monitor did not end on SIGINT");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT));
}

#[test]
fn a_monitor_that_does_not_read_loses_events_is_told_and_slows_nothing() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().wait_for("vbus/ctl").start();
    // A libDDM monitor that reads nothing for now.
    let stuck = ddf::ddm::Ddm::connect(&ddm.socket).unwrap().monitor().unwrap();
    // More events than its queue and its socket hold.
    let n = ddm_fs_queue_max() * 3;
    ctl(&ddm, &format!("add-many flood {n}"));
    // ddm goes on as if nothing were wrong: the tree has them all, another
    // monitor gets new events.
    assert!(wait_until(Duration::from_secs(30), || ddm.path(&format!("vbus/flood{}", n - 1)).exists()));
    let mut m = Monitor::start(&ddm, &["--json"], None);
    sh_ok(&format!("chmod 600 {}", ddm.path("null").display()));
    m.expect("perm-changed of null", |v| is(v, "perm-changed", "path", "null"));

    // The stuck one, read at last, gets what fitted, is told what it missed
    // (the n devices and the chmod), and then goes on.
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for e in stuck {
            if tx.send(e.unwrap().what).is_err() {
                return;
            }
        }
    });
    let (mut added, mut lost, mut perm) = (0u64, 0u64, 0u64);
    while added + lost + perm < n as u64 + 1 {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(ddf::proto::Happened::Lost { count }) => lost += count,
            Ok(ddf::proto::Happened::DeviceAdded { .. }) => added += 1,
            Ok(ddf::proto::Happened::PermChanged { .. }) => perm += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => panic!("the stuck monitor got {added} added, {perm} perm-changed and {lost} lost of {}", n + 1),
        }
    }
    assert!(lost > 0, "no events were lost by a monitor that did not read ({added} arrived)");
    sh_ok(&format!("chmod 666 {}", ddm.path("null").display()));
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(ddf::proto::Happened::PermChanged { path, mode, .. }) => assert_eq!((path.as_str(), mode), ("null", 0o666)),
        other => panic!("after its losses the monitor got {other:?}"),
    }
}

/// The monitor's queue bound (ddm_fs::monitor::QUEUE_MAX; the tests do not
/// link ddm-fs).
fn ddm_fs_queue_max() -> usize {
    1024
}

#[test]
fn node_tells_a_nodes_whole_story() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(VDRV).wait_for("vbus/ctl").start();
    ctl(&ddm, "add story0 vendor=1234 device=00ab");
    ctl(&ddm, "add lonely vendor=9999 device=0002");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(ddm.path("vbus/story0")).is_ok_and(|t| t.starts_with("bound story0 by vdrv"))
    }));
    sh_ok(&format!("chmod 640 {} && chgrp 6 {}", ddm.path("vbus/story0").display(), ddm.path("vbus/story0").display()));
    sh_ok(&format!("setfacl -m u:4242:r {}", ddm.path("vbus/story0").display()));

    let v: Value = serde_json::from_str(&ddm.ddmctl_ok(&["node", "vbus/story0", "--json"])).unwrap();
    assert_eq!(v["path"], "vbus/story0");
    assert_eq!(v["kind"], "device");
    assert_eq!(v["class"], "char");
    assert_eq!(v["driver"], "vdrv");
    assert_eq!(v["bus_driver"], "vbus");
    assert_eq!(v["state"], "running");
    assert!(v["pid"].as_u64().is_some_and(|p| p > 0), "{v}");
    assert_eq!((v["bus"].as_str(), v["address"].as_str()), (Some("vbus"), Some("story0")));
    assert_eq!((v["ids"]["vendor"].as_str(), v["ids"]["device"].as_str()), (Some("1234"), Some("00ab")));
    assert_eq!((v["uid"].as_u64(), v["owner"].as_str(), v["gid"].as_u64()), (Some(0), Some("root"), Some(6)));
    assert_eq!(v["mode"].as_u64(), Some(0o640));
    let acl = v["acl"].as_str().unwrap_or_else(|| panic!("no ACL in {v}"));
    assert!(acl.contains("user:4242:r--"), "{acl}");
    assert_eq!((v["restarts"].as_u64(), v["unbound"].is_null()), (Some(0), true));

    // A device no driver takes says why; the mount's own path works too.
    let lonely = ddm.path("vbus/lonely");
    let v: Value = serde_json::from_str(&ddm.ddmctl_ok(&["node", lonely.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(v["unbound"], "no driver matches vbus 9999:0002");
    assert_eq!(v["state_text"], "unbound: no driver matches vbus 9999:0002");

    // After a crash: restarts and the last exit.
    sh_ok(&format!("kill -9 {}", pid_of(&ddm, "null")));
    assert!(wait_until(Duration::from_secs(20), || {
        let v: Value = serde_json::from_str(&ddm.ddmctl_ok(&["node", "zero", "--json"])).unwrap();
        v["restarts"] == 1 && v["state"] == "running"
    }));
    let text = ddm.ddmctl_ok(&["node", "zero"]);
    let line = |k: &str| text.lines().find(|l| l.starts_with(k)).map(|l| l[k.len()..].trim().to_owned());
    assert_eq!(line("path").as_deref(), Some("/zero"), "{text}");
    assert_eq!(line("driver").as_deref(), Some("null"), "{text}");
    assert_eq!(line("last exit").as_deref(), Some("killed by signal 9 (SIGKILL)"), "{text}");
    assert_eq!(line("mode").as_deref(), Some("0666 (-rw-rw-rw-)"), "{text}");
    assert_eq!(line("owner").as_deref(), Some("root (0)"), "{text}");

    // A bus.
    let v: Value = serde_json::from_str(&ddm.ddmctl_ok(&["node", "vbus", "--json"])).unwrap();
    assert_eq!((v["kind"].as_str(), v["driver"].as_str()), (Some("bus"), Some("vbus")));
    // Anyone may look.
    let out = Command::new("setpriv")
        .args(["--reuid=4242", "--regid=4242", "--clear-groups"])
        .arg(bin("ddmctl"))
        .arg("--socket")
        .arg(&ddm.socket)
        .args(["node", "zero"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn exit_status_tells_usage_unreachable_denied_and_not_found_apart() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let code = |args: &[&str], uid: Option<u32>| {
        let mut cmd = match uid {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([format!("--reuid={u}"), format!("--regid={u}"), "--clear-groups".into()]).arg(bin("ddmctl"));
                c
            }
            None => Command::new(bin("ddmctl")),
        };
        let out = cmd.arg("--socket").arg(&ddm.socket).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(code(&["status"], None).0, Some(0));
    // 2: usage.
    assert_eq!(code(&["no-such-command"], None).0, Some(2));
    assert_eq!(code(&["inject", "null", "sneeze"], None).0, Some(2));
    assert_eq!(code(&["load", "null", "notkeyvalue"], None).0, Some(2));
    // 3: ddm not reachable.
    let gone = ddm.dir.path().join("nobody-here.sock");
    let out = Command::new(bin("ddmctl")).arg("--socket").arg(&gone).arg("tree").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    // 4: permission denied.
    let (c, err) = code(&["restart", "null"], Some(4242));
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    // 5: not found.
    for args in [&["restart", "nosuch"][..], &["node", "nosuch"], &["load", "nosuch"], &["unload", "nosuch"]] {
        let (c, err) = code(args, None);
        assert_eq!(c, Some(5), "{args:?}: {err}");
    }
    // 1: another failure (null is no bus a driver enumerates).
    let (c, err) = code(&["rescan", "null"], None);
    assert_eq!(c, Some(1), "{err}");
}

#[test]
fn completions_for_bash_zsh_and_fish_name_every_subcommand() {
    let help = Command::new(bin("ddmctl")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let subs: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|s| s != "help")
        .collect();
    for want in ["monitor", "node", "completions", "tree", "type"] {
        assert!(subs.iter().any(|s| s == want), "{want} not in --help: {subs:?}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin("ddmctl")).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "completions {shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        for s in &subs {
            assert!(script.contains(s.as_str()), "the {shell} completions do not mention {s}");
        }
        assert!(script.contains("json") && script.contains("socket"), "{shell}: options missing");
    }
    // The bash script is valid bash and completes a subcommand.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <({} completions bash) && COMP_WORDS=(ddmctl mon) COMP_CWORD=1 && _ddmctl ddmctl mon ddmctl && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bin("ddmctl").display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "monitor");
    // An unknown shell is a usage error.
    let out = Command::new(bin("ddmctl")).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
