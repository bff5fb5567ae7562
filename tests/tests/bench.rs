//! The benchmark (`ddf-bench`, behind `scripts/bench`) runs to completion in
//! its short mode and prints every section of its table. Its numbers are
//! never asserted: a benchmark measures, it does not pass or fail.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use ddf_tests::{bin, wait_timeout};

/// Mount points of the benchmark's temporary directories.
fn bench_mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.contains("/ddf-bench-"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn short_run_completes_and_prints_the_table() {
    ddf_tests::needs_root!();
    let before = bench_mounts();
    let out_path = tempfile::NamedTempFile::new().unwrap();
    let err_path = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(bin("ddf-bench"))
        .args(["--short", "--timeout", "280"])
        .stdin(Stdio::null())
        .stdout(out_path.reopen().unwrap())
        .stderr(err_path.reopen().unwrap())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(300));
    let out = std::fs::read_to_string(out_path.path()).unwrap();
    let err = std::fs::read_to_string(err_path.path()).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "ddf-bench --short failed; stderr:\n{err}\nstdout:\n{out}");
    for heading in [
        "machine:",
        "method:",
        "placement unpinned:",
        "1. Latency per call",
        "(a) /dev/null",
        "(b) FUSE floor",
        "(c) /ddf/null",
        "(d) direct client",
        "(e) socketpair",
        "Histograms:",
        "2. Ratios",
        "(c)/(b)",
        "(d)/(e)",
        "3. Throughput",
        "/ddf/ram0",
        "ram0 / FUSE floor",
        "3b. Random 4 KiB",
        "4. Scaling",
        "5. Idle cost",
        "6. The tree",
        "ddm RSS MiB",
    ] {
        assert!(out.contains(heading), "no {heading:?} in the table:\n{out}");
    }
    let left: Vec<String> = bench_mounts().difference(&before).cloned().collect();
    assert!(left.is_empty(), "ddf-bench left mounts behind: {left:?}");
}

#[test]
fn help_needs_no_root_and_lists_the_options() {
    let out = Command::new(bin("ddf-bench")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for opt in ["--short", "--calls", "--placements", "--cpus", "--timeout"] {
        assert!(text.contains(opt), "--help does not mention {opt}:\n{text}");
    }
    assert!(!text.contains("--ipc-echo"), "the helper mode is internal");
}
