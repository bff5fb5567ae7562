//! A short chaos run as a test: drivers killed and broken while clients
//! hammer them, and not one client may hang, nor ddm die.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn a_short_chaos_run_leaves_no_client_hung_and_ddm_alive() {
    ddf_tests::needs_root!();
    // Eight rounds in 20 s: every kind of death, the fast path's ring faults
    // among them (four deaths per driver stay short of quarantine).
    let faults = "kill,ring-garbage,panic,ring-stray,abort,ring-overlong,segv,ring-death";
    let out = Command::new(ddf_tests::bin("ddf-chaos"))
        .args(["--short", "--kills", "8", "--faults", faults])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chaos run failed:\n{table}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = |key: &str| {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key:?} line in:\n{table}"))
            .to_owned()
    };
    assert!(line("clients hung").trim_end().ends_with(" 0"), "{table}");
    assert!(line("DDM alive").contains("yes"), "{table}");
}
