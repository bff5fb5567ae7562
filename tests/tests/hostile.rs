//! Hostile drivers: one that registers more devices than its manifest
//! allows, devices and buses with hostile names, a bus that is its own
//! parent, a claim on a node it does not own, a flood of state-store
//! writes. Each is refused with a logged reason or killed as a protocol
//! violation; ddm stays alive, the tree unharmed, its memory bounded.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ddf_tests::{wait_until, Ddm};

/// The test driver, loaded by hand with `hostile=...`.
const HOSTILE: &str = "name = \"hostile\"\nexec = \"ddf-testdrv\"\nmax_devices = 1000\n\
    [supervision]\nmax_failures = 2\nbackoff_ms = 50\n";

/// The names under `dir`.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

fn getfattr(path: &Path, name: &str) -> String {
    let out = Command::new("getfattr").args(["--only-values", "-n", name]).arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// What the other drivers serve is still theirs, and works.
fn unharmed(ddm: &Ddm, before: &BTreeSet<String>) {
    let now = names(&ddm.mnt);
    assert!(now.is_superset(before), "nodes went: {:?}", before.difference(&now).collect::<Vec<_>>());
    assert_eq!(getfattr(&ddm.path("null"), "user.ddf.driver"), "null");
    assert_eq!(getfattr(&ddm.path("zero"), "user.ddf.driver"), "null");
    let mut b = [1u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open(ddm.path("zero")).unwrap(), &mut b).unwrap();
    assert_eq!(b, [0; 16]);
    std::fs::write(ddm.path("null"), b"still here").unwrap();
    assert!(names(&ddm.path("pci")).len() > 1);
}

/// Loads the hostile driver with `hostile=how` and waits until its last
/// exit is a protocol violation that says `why`.
/// A driver that misbehaves before it says it is ready makes `ddmctl load`
/// fail with the same reason; one that misbehaves after is killed later.
fn load_and_end(ddm: &Ddm, how: &str, why: &str) {
    let out = ddm.ddmctl(&["load", "hostile", &format!("hostile={how}"), &format!("name=hostile-{how}")]);
    let inst = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).split(':').next().unwrap().trim().to_owned()
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "ddmctl load {how} failed for another reason: {err}");
        let inst = err.split("driver ").nth(1).and_then(|r| r.split(" did not start").next());
        inst.unwrap_or_else(|| panic!("no instance named in {err:?}")).to_owned()
    };
    ended_for(ddm, &inst, why);
}

/// Loads the hostile driver with `hostile=how`; it must start.
fn load(ddm: &Ddm, how: &str) -> String {
    let out = ddm.ddmctl_ok(&["load", "hostile", &format!("hostile={how}"), &format!("name=hostile-{how}")]);
    out.split(':').next().unwrap().trim().to_owned()
}

/// Waits until the instance's last exit says `why`.
fn ended_for(ddm: &Ddm, inst: &str, why: &str) {
    let ok = wait_until(Duration::from_secs(30), || {
        ddm.driver(inst)["last_exit"].as_str().is_some_and(|e| e.contains("protocol violation") && e.contains(why))
    });
    assert!(ok, "{inst} did not end with {why:?}: {}\n{}", ddm.driver(inst), ddm.log());
}

#[test]
fn hostile_drivers_are_refused_or_killed_and_harm_nothing() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(HOSTILE).wait_for("zero").start();
    let before = names(&ddm.mnt);
    let rss0 = ddm.rss_kb();
    let mut rss = rss0;
    let mut report = |case: &str, ddm: &Ddm| {
        let now = ddm.rss_kb();
        eprintln!("{case:<14} ddm RSS {rss:>7} kB before, {now:>7} kB after");
        rss = now;
    };

    // More devices than its manifest allows (1000): killed at the 1001st.
    load_and_end(&ddm, "devices", "more than 1000 devices and buses");
    report("devices", &ddm);

    // Hostile names: each refused, logged, and the driver goes on.
    let inst = load(&ddm, "names");
    assert!(wait_until(Duration::from_secs(20), || ddm.path("hostile-ok").exists()), "{}", ddm.log());
    assert_eq!(ddm.driver(&inst)["state"], "running");
    let added: BTreeSet<String> = names(&ddm.mnt).difference(&before).cloned().collect();
    let ours: BTreeSet<String> =
        ["hostile-ok", "hostile-names", "hostile-names.info"].iter().map(|s| (*s).to_owned()).collect();
    // (the devices instance's nodes stay, in quarantine: dev0, dev1, ...)
    let others: Vec<&String> = added.iter().filter(|n| !ours.contains(*n) && !n.starts_with("dev")).collect();
    assert!(others.is_empty(), "hostile names made it into the tree: {others:?}");
    assert!(ours.is_subset(&added), "{added:?}");
    let log = ddm.log();
    for said in
        ["device \"..\" refused", "device \"a/b\" refused", "device \"new\\nline\" refused", "... (10240 bytes)"]
    {
        assert!(log.contains(said), "the log does not say {said:?}:\n{log}");
    }
    assert!(log.contains("device \"null\" refused: \"null\" already exists"), "{log}");
    report("names", &ddm);

    // A bus that claims to be its own parent.
    load_and_end(&ddm, "own-parent", "bus 0 claims to be its own parent");
    report("own-parent", &ddm);

    // A claim on /null, which is bound to nobody: null keeps it.
    load_and_end(&ddm, "foreign-bind", "serves \"null\", which is not bound to it");
    report("foreign-bind", &ddm);

    // A flood of state-store writes.
    load_and_end(&ddm, "state-flood", "flood");
    report("state-flood", &ddm);

    unharmed(&ddm, &before);
    let rss1 = ddm.rss_kb();
    eprintln!("ddm RSS {rss0} kB before the hostile drivers, {rss1} kB after");
    assert!(rss1 < rss0 + 64 * 1024, "ddm grew from {rss0} kB to {rss1} kB");
    let text = ddm.ddmctl_ok(&["status"]);
    assert!(text.lines().any(|l| l.starts_with("null") && l.contains("running")), "{text}");
}
