//! DMA memory end to end: a real ddm allocates huge pages (or locked pages)
//! for the DMA test driver, which fills them with a pattern and reports its
//! segments; the tests check those against the driver's own pagemap (read
//! as root), a second mapping of the memfd, a `kill -9`, the limit, and the
//! huge-page pool before and after.
//!
//! The huge-page pool is global state of the machine: these tests take
//! turns (one lock), keep their requests to a few pages, and put
//! `nr_hugepages` and `nr_overcommit_hugepages` back as they found them,
//! also when they fail ([`PoolGuard`]).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ddf_tests::dma::{check_pagemap, check_second_mapping, Report};
use ddf_tests::{wait_until, Ddm};

const HUGE: usize = 2 << 20;

/// The huge-page pool is one per machine: one test at a time touches it.
static POOL: Mutex<()> = Mutex::new(());

fn take_pool() -> std::sync::MutexGuard<'static, ()> {
    POOL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const NR: &str = "/proc/sys/vm/nr_hugepages";
const OVERCOMMIT: &str = "/proc/sys/vm/nr_overcommit_hugepages";

fn read_sysctl(path: &str) -> u64 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// Puts the huge-page sysctls back as they were when it was made.
struct PoolGuard {
    nr: u64,
    overcommit: u64,
}

impl PoolGuard {
    fn new() -> PoolGuard {
        PoolGuard { nr: read_sysctl(NR), overcommit: read_sysctl(OVERCOMMIT) }
    }
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(NR, self.nr.to_string());
        let _ = std::fs::write(OVERCOMMIT, self.overcommit.to_string());
    }
}

/// `HugePages_Total`, `_Free`, `_Rsvd`, `_Surp` from /proc/meminfo.
fn huge_pages() -> [u64; 4] {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let get = |key: &str| {
        let line = text.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    [get("HugePages_Total:"), get("HugePages_Free:"), get("HugePages_Rsvd:"), get("HugePages_Surp:")]
}

/// Free huge pages that a new reservation could take.
fn available() -> u64 {
    let [_, free, rsvd, _] = huge_pages();
    free.saturating_sub(rsvd)
}

fn dmatest(name: &str, bytes: &str, contiguous: &str, autostart: bool) -> String {
    format!(
        "name = \"{name}\"\nexec = \"ddf-dmatest\"\nautostart = {autostart}\n[params]\nname = \"{name}\"\n\
         [dma]\nbytes = \"{bytes}\"\ncontiguous = \"{contiguous}\"\n[sandbox]\nuser = \"nobody\"\n"
    )
}

const NULL: &str = "name = \"null\"\nexec = \"ddf-null\"\nautostart = true\n";

/// The report of the DMA test driver's device `dev`.
fn report(ddm: &Ddm, dev: &str) -> Report {
    Report::parse(&std::fs::read_to_string(ddm.path(dev)).unwrap())
}

/// `ddmctl status --json` of driver `name`.
fn status(ddm: &Ddm, name: &str) -> serde_json::Value {
    let json = ddm.ddmctl_ok(&["status", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    all.into_iter().find(|d| d["name"] == name).unwrap_or_else(|| panic!("no {name} in {json}"))
}

fn pid(ddm: &Ddm, name: &str) -> u32 {
    status(ddm, name)["pid"].as_u64().unwrap_or(0) as u32
}

fn getfattr(path: &Path, name: &str) -> String {
    let out = std::process::Command::new("getfattr").args(["--only-values", "-n", name]).arg(path).output().unwrap();
    assert!(out.status.success(), "getfattr {name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn wait_new_pid(ddm: &Ddm, name: &str, old: u32) -> u32 {
    let mut now = 0;
    let back = wait_until(Duration::from_secs(20), || {
        now = pid(ddm, name);
        now != 0 && now != old && status(ddm, name)["state"] == "running"
    });
    assert!(back, "{name} did not come back; log:\n{}", ddm.log());
    now
}

#[test]
fn huge_pages_match_the_drivers_pagemap_survive_a_kill_and_go_back_when_unloaded() {
    ddf_tests::needs_root!();
    let _pool = take_pool();
    let _guard = PoolGuard::new();
    let before = huge_pages();
    // ddm grows the pool itself if it has too few pages free.
    let ddm =
        Ddm::builder().args(&["--no-builtin"]).manifest(&dmatest("dma0", "4M", "2M", true)).wait_for("dma0").start();
    let r = report(&ddm, "dma0");
    assert_eq!((r.bytes, r.page_size, r.segments.len()), (4 << 20, HUGE, 2), "{r:?}");
    assert!(r.pinned, "the region is not pinned: {r:?}");
    assert_eq!((r.incarnation, r.pattern.as_str()), (Some(1), "written"));
    let first = pid(&ddm, "dma0");
    check_pagemap(first, &r);
    check_second_mapping(first, &r);
    // ddmctl status and the device's attributes show it (not its addresses).
    let st = ddm.ddmctl_ok(&["status"]);
    assert!(st.contains("dma: 4M in 2 segments of 2M, pinned"), "{st}");
    let dma = &status(&ddm, "dma0")["dma"];
    assert_eq!((dma["bytes"].as_u64(), dma["segments"].as_u64()), (Some(4 << 20), Some(2)), "{dma}");
    let dev = ddm.path("dma0");
    assert_eq!(getfattr(&dev, "user.ddf.dma_bytes"), "4194304");
    assert_eq!(getfattr(&dev, "user.ddf.dma_page_size"), "2097152");
    assert_eq!(getfattr(&dev, "user.ddf.dma_segments"), "2");
    assert_eq!(getfattr(&dev, "user.ddf.dma_pinned"), "yes");
    assert_eq!(read_sysctl(OVERCOMMIT), _guard.overcommit, "ddm did not put nr_overcommit_hugepages back");

    // kill -9: the next incarnation gets the same memory, with its contents.
    // SAFETY: kill(2) on the driver process of the ddm under test.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let second = wait_new_pid(&ddm, "dma0", first);
    let r2 = report(&ddm, "dma0");
    assert_eq!(r2.segments, r.segments, "the addresses changed across a restart");
    assert_eq!((r2.incarnation, r2.pattern.as_str()), (Some(2), "kept"), "the contents did not survive: {r2:?}");
    check_pagemap(second, &r2);
    check_second_mapping(second, &r2);

    // Unloading the driver gives the pages back.
    let out = ddm.ddmctl_ok(&["unload", "/dma0"]);
    assert!(out.contains("dma0: stopped"), "{out}");
    let back = wait_until(Duration::from_secs(10), || huge_pages() == before);
    assert!(back, "the huge pages did not go back: {:?} before, {:?} after; log:\n{}", before, huge_pages(), ddm.log());
    assert!(status(&ddm, "dma0")["dma"].is_null());
    assert!(ddm.log().contains("driver dma0: its DMA memory (4M in 2 huge pages of 2M, pinned) is freed"));
}

#[test]
fn reserved_huge_pages_are_taken_and_given_back_free() {
    ddf_tests::needs_root!();
    let _pool = take_pool();
    let guard = PoolGuard::new();
    // Two pages more in the pool, for this test alone.
    std::fs::write(NR, (guard.nr + 2).to_string()).unwrap();
    if read_sysctl(NR) < guard.nr + 2 {
        eprintln!("skipped: the kernel could not reserve 2 huge pages (memory too fragmented)");
        return;
    }
    let before = huge_pages();
    let ddm = Ddm::builder()
        .args(&["--no-builtin", "--dma-reserved-only"])
        .manifest(&dmatest("dma0", "4M", "2M", true))
        .wait_for("dma0")
        .start();
    let r = report(&ddm, "dma0");
    assert_eq!((r.page_size, r.segments.len()), (HUGE, 2));
    check_pagemap(pid(&ddm, "dma0"), &r);
    let during = huge_pages();
    assert_eq!(during[1] + 2, before[1], "the reserved pool did not give 2 pages: {before:?} -> {during:?}");
    assert_eq!(during[0], before[0], "ddm grew the pool despite --dma-reserved-only");
    ddm.ddmctl_ok(&["unload", "/dma0"]);
    let back = wait_until(Duration::from_secs(10), || huge_pages()[1] == before[1]);
    assert!(back, "HugePages_Free did not return: {:?} before, {:?} after", before, huge_pages());
}

#[test]
fn a_request_past_the_dma_limit_is_refused_and_ddm_and_other_drivers_carry_on() {
    ddf_tests::needs_root!();
    let _pool = take_pool();
    let _guard = PoolGuard::new();
    // Page-sized segments from the reserved pool or ordinary locked pages:
    // nothing here changes the pool.
    let ddm = Ddm::builder()
        .args(&["--no-builtin", "--dma-reserved-only", "--dma-limit", "4M"])
        .manifest(NULL)
        .manifest(&dmatest("small", "2M", "4K", true))
        .manifest(&dmatest("big", "4M", "4K", true))
        .manifest(&dmatest("later", "4M", "4K", false))
        .wait_for("small")
        .wait_for("zero")
        .start();
    let refusal = "past ddm's --dma-limit of 4M (2M held by other drivers): raise --dma-limit or ask for less";
    let log = ddm.log();
    assert!(
        log.contains(&format!(
            "driver big: DMA memory: [dma] asks for 4M, which would bring the DMA memory of all drivers to 6M, {refusal}"
        )),
        "the refusal is not logged as documented:\n{log}"
    );
    let big = status(&ddm, "big");
    assert_eq!(big["state"], "stopped");
    assert!(big["last_exit"].as_str().unwrap().contains(refusal), "{big}");
    assert!(!ddm.path("big").exists());
    // `ddmctl load` says the same to its caller.
    let out = ddm.ddmctl(&["load", "later"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(refusal), "ddmctl load said: {said}");
    // Everything else carries on.
    assert_eq!(ddf_tests::read_n(&ddm.path("zero"), 4).unwrap(), [0; 4]);
    assert_eq!(report(&ddm, "small").bytes, 2 << 20);
    assert_eq!(status(&ddm, "small")["state"], "running");
    // What an unloaded driver held can be had again.
    ddm.ddmctl_ok(&["unload", "/small"]);
    ddm.ddmctl_ok(&["restart", "big"]);
    assert!(
        wait_until(Duration::from_secs(20), || ddm.path("big").exists()),
        "big did not start once small was unloaded; log:\n{}",
        ddm.log()
    );
    assert_eq!(report(&ddm, "big").bytes, 4 << 20);
}

#[test]
fn without_huge_pages_a_start_fails_with_what_to_do_unless_page_sized_segments_are_accepted() {
    ddf_tests::needs_root!();
    let _pool = take_pool();
    let _guard = PoolGuard::new();
    let free = available();
    if free > 0 {
        eprintln!(
            "skipped: {free} huge pages are free on this machine; this test needs the empty pool a machine starts with"
        );
        return;
    }
    // The pool is empty, and ddm may not grow it.
    let (pages, bytes) = (1, "2M");
    let ddm = Ddm::builder()
        .args(&["--no-builtin", "--dma-reserved-only"])
        .manifest(NULL)
        .manifest(&dmatest("huge", bytes, "2M", true))
        .manifest(&dmatest("paged", "64K", "4K", true))
        .wait_for("zero")
        .wait_for("paged")
        .start();
    let log = ddm.log();
    let want = format!(
        "driver huge: DMA memory: [dma] bytes = \"{bytes}\", contiguous = \"2M\" needs {pages} huge pages of 2M, and they cannot be had: the pool has {free} free, and ddm may take only reserved pages (--dma-reserved-only); reserve huge pages (sysctl vm.nr_hugepages="
    );
    assert!(log.contains(&want), "the failure is not logged as documented ({want}):\n{log}");
    assert!(log.contains("or accept page-sized segments with contiguous = \"4K\""), "{log}");
    assert_eq!(status(&ddm, "huge")["state"], "stopped");
    // The driver that accepts page-sized segments gets locked pages, one
    // segment each, and its addresses are right too.
    let r = report(&ddm, "paged");
    assert_eq!((r.bytes, r.page_size, r.segments.len()), (64 << 10, 4096, 16), "{r:?}");
    assert!(r.pinned);
    let p = pid(&ddm, "paged");
    check_pagemap(p, &r);
    check_second_mapping(p, &r);
    assert_eq!(ddf_tests::read_n(&ddm.path("zero"), 4).unwrap(), [0; 4]);
}

#[test]
fn memory_a_driver_took_pages_out_of_is_replaced_at_its_restart() {
    ddf_tests::needs_root!();
    let _pool = take_pool();
    let _guard = PoolGuard::new();
    let ddm = Ddm::builder()
        .args(&["--no-builtin", "--dma-reserved-only"])
        .manifest(&dmatest("dma0", "64K", "4K", true))
        .wait_for("dma0")
        .start();
    let r = report(&ddm, "dma0");
    let first = pid(&ddm, "dma0");
    // What a driver could do to its own memfd: punch a page out of it.
    let path = format!("/proc/{first}/map_files/{:x}-{:x}", r.mapping, r.mapping + r.bytes);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    // SAFETY: fallocate(2) on a descriptor we own; it touches no memory of ours.
    let rc = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            r.page_size as i64,
        )
    };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    drop(file);
    // SAFETY: kill(2) on the driver process of the ddm under test.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let second = wait_new_pid(&ddm, "dma0", first);
    let r2 = report(&ddm, "dma0");
    assert_eq!((r2.incarnation, r2.pattern.as_str()), (Some(2), "written"), "the damaged region was kept: {r2:?}");
    check_pagemap(second, &r2);
    check_second_mapping(second, &r2);
    assert!(
        ddm.log().contains("driver dma0: its DMA memory is not what ddm pinned any more"),
        "the replacement is not logged:\n{}",
        ddm.log()
    );
}
