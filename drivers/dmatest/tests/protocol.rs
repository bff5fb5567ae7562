//! The DMA test driver over the real protocol, with a stand-in DDM that
//! grants it an ordinary sealed memfd with made-up addresses (no root, no
//! huge pages: what the driver does with a region, not where it comes from).

#![allow(clippy::unwrap_used)]

use std::os::fd::AsFd;
use std::path::Path;

use ddf::mem::SharedBuf;
use ddf::proto::{DeviceId, DmaGrant, DriverToDdm, OpenFlags, StateEntry};
use ddf::testing::StandIn;

const PAGE: usize = 4096;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ddf-dmatest"))
}

fn pattern(offset: usize) -> u8 {
    ((offset / 4096) as u8).wrapping_mul(37) ^ (offset as u8).wrapping_mul(11) ^ 0xa5
}

fn grant() -> DmaGrant {
    DmaGrant {
        len: 3 * PAGE as u64,
        page_size: PAGE as u64,
        pages: vec![0x1000_0000, 0x1000_1000, 0x2000_0000],
        pinned: true,
    }
}

/// Starts the driver on `mem` with `boots` earlier incarnations; returns it
/// and its report.
fn start(mem: &SharedBuf, boots: u64) -> (StandIn, String) {
    let mut ddm = StandIn::spawn(exe()).unwrap();
    ddm.grant_dma(grant(), mem.grant()).unwrap();
    let state = if boots == 0 {
        Vec::new()
    } else {
        vec![StateEntry { key: "boots".into(), bytes: boots.to_le_bytes().to_vec(), fds: 0 }]
    };
    let said = ddm.start("dmatest", &[], state, &[]).unwrap();
    assert!(said.iter().any(|s| matches!(&s.msg, DriverToDdm::AddDevice(d) if d.name == "dma0")), "{said:?}");
    let h = ddm.open(DeviceId(0), OpenFlags::READ).unwrap().unwrap();
    let report = String::from_utf8(ddm.read(h, 0, 4096).unwrap().unwrap()).unwrap();
    (ddm, report)
}

#[test]
fn the_driver_fills_its_region_reports_its_segments_and_keeps_the_pattern_across_a_restart() {
    let mem = SharedBuf::new("dmatest", 3 * PAGE).unwrap();
    let (mut first, report) = start(&mem, 0);
    for line in ["bytes 12288", "page_size 4096", "pinned yes", "incarnation 1", "pattern written"] {
        assert!(report.lines().any(|l| l == line), "no {line:?} in:\n{report}");
    }
    let segments: Vec<&str> = report.lines().filter(|l| l.starts_with("segment ")).collect();
    assert_eq!(segments, ["segment 0 0x10000000 4096", "segment 4096 0x10001000 4096", "segment 8192 0x20000000 4096"]);
    assert!(report.lines().any(|l| l.starts_with("mapping 0x")), "{report}");
    // The pattern is in the memfd, as another mapping of it sees.
    let mut got = vec![0u8; 3 * PAGE];
    mem.read_at(0, &mut got).unwrap();
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i)), "the region does not hold the pattern");
    // A new incarnation on the same memory finds it and leaves it.
    first.kill().unwrap();
    let (_second, report) = start(&mem, 1);
    assert!(report.contains("incarnation 2\npattern kept\n"), "{report}");
}

#[test]
fn without_a_grant_the_driver_does_not_start() {
    let mut ddm = StandIn::spawn(exe()).unwrap();
    assert!(ddm.start("dmatest", &[], Vec::new(), &[]).is_err(), "it said ready without DMA memory");
    assert!(!ddm.wait().unwrap().success());
}

#[test]
fn a_grant_that_does_not_fit_its_memfd_stops_the_driver() {
    let mem = SharedBuf::new("dmatest", 2 * PAGE).unwrap();
    let mut ddm = StandIn::spawn(exe()).unwrap();
    ddm.grant_dma(grant(), mem.as_fd()).unwrap();
    assert!(ddm.start("dmatest", &[], Vec::new(), &[]).is_err());
    assert!(!ddm.wait().unwrap().success());
}
