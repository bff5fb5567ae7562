//! The control socket under abuse: an unprivileged client that opens
//! hundreds of connections, sends a frame of the largest size or over it,
//! half a frame, or nothing at all, holds only its own share of ddm, is
//! logged, and root's `ddmctl status` answers meanwhile.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ddf_tests::{bin, wait_timeout, wait_until, Ddm};

const STALL: &str = "name = \"stall\"\nexec = \"ddf-testdrv\"\nautostart = true\n";

/// A command run as uid and gid 4242 with no groups.
fn as_user(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "4242", "--regid", "4242", "--clear-groups"]).arg(bin(program));
    cmd
}

/// `ddf-abuse MODE...` as uid 4242 against `ddm`; its output.
fn abuse(ddm: &Ddm, mode: &[&str]) -> String {
    let mut child =
        as_user("ddf-abuse").arg("--socket").arg(&ddm.socket).args(mode).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("ddf-abuse hung");
    assert!(status.success(), "ddf-abuse {mode:?}: {status}\n{out}");
    out
}

/// Root's `ddmctl status`, which must answer: how long it took.
fn root_status(ddm: &Ddm) -> Duration {
    let t = Instant::now();
    let mut child = Command::new(bin("ddmctl"))
        .arg("--socket")
        .arg(&ddm.socket)
        .arg("status")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("root's ddmctl status hung");
    let took = t.elapsed();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success() && out.contains("stall"), "root's ddmctl status failed: {out}");
    took
}

#[test]
fn hundreds_of_connections_from_one_user_hold_only_their_share_and_root_is_answered() {
    ddf_tests::needs_root!();
    let ddm =
        Ddm::builder().args(&["--no-builtin", "--control-timeout", "3"]).manifest(STALL).wait_for("stall").start();
    let mut hog = as_user("ddf-abuse")
        .arg("--socket")
        .arg(&ddm.socket)
        .args(["connections", "300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(hog.stdout.take().unwrap()).lines();
    let counts = lines.next().unwrap().unwrap();
    let words: Vec<&str> = counts.split_whitespace().collect();
    assert_eq!(words[..2], ["accepted", "32"], "{counts}");
    let refused: u32 = words[3].parse().unwrap();
    assert!(refused > 0, "{counts}");
    let why = lines.next().unwrap().unwrap();
    assert!(why.contains("too many connections: uid 4242 has 32 open"), "{why}");
    // While it holds them: root is answered, the same user is refused.
    let took = root_status(&ddm);
    eprintln!("root's ddmctl status took {took:?} while uid 4242 held 32 connections and was refused {refused}");
    let out = as_user("ddmctl").arg("--socket").arg(&ddm.socket).arg("status").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too many connections"), "{out:?}");
    // Held idle past the timeout, they are closed by ddm, which logged all of it.
    assert!(wait_until(Duration::from_secs(15), || ddm.log().contains("nothing sent, or answers not taken, for 3 s")));
    std::thread::sleep(Duration::from_millis(500));
    drop(hog.stdin.take());
    let closed = lines.next().unwrap().unwrap();
    assert_eq!(closed, "closed_by_ddm 32");
    wait_timeout(&mut hog, Duration::from_secs(10)).expect("ddf-abuse did not end");
    let log = ddm.log();
    assert!(log.contains("connection of uid 4242") && log.contains("refused: too many connections"), "{log}");
    // Its share is free again.
    let out = as_user("ddmctl").arg("--socket").arg(&ddm.socket).arg("status").output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn oversized_and_truncated_frames_and_silence_end_only_their_connection() {
    ddf_tests::needs_root!();
    let ddm =
        Ddm::builder().args(&["--no-builtin", "--control-timeout", "2"]).manifest(STALL).wait_for("stall").start();
    let rss = ddm.rss_kb();
    let big = abuse(&ddm, &["big-frame"]);
    assert!(big.contains("max-frame: answered error: request not understood"), "{big}");
    assert!(big.contains("oversized-frame: closed by ddm"), "{big}");
    let half = abuse(&ddm, &["half-frame"]);
    assert_eq!(half.trim(), "half-frame: closed by ddm");
    // A silent client, while root asks.
    let silent = std::thread::scope(|s| {
        let silent = s.spawn(|| abuse(&ddm, &["stall"]));
        std::thread::sleep(Duration::from_millis(300));
        eprintln!("root's ddmctl status took {:?} while a client stalled", root_status(&ddm));
        silent.join().unwrap()
    });
    assert!(silent.starts_with("stall: closed by ddm after"), "{silent}");
    let log = ddm.log();
    for said in ["received frame was truncated", "malformed frame: 10 bytes, header claims 1000", "nothing sent"] {
        assert!(log.contains(said), "the log does not say {said:?}:\n{log}");
    }
    eprintln!("ddm RSS: {rss} kB before, {} kB after", ddm.rss_kb());
    root_status(&ddm);
}
