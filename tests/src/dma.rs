//! What the DMA tests share: the report the DMA test drivers (the Rust
//! `dmatest` and the C `tests/c/dma.c`) print on their device, and checks
//! of it against the driver's own page tables and a second mapping of its
//! memfd (root: `/proc/PID/pagemap` and `/proc/PID/map_files`).
//!
//! A report is `key value` lines (`bytes`, `page_size`, `pinned`,
//! `mapping`, `pattern`, and from the Rust driver `incarnation`), then one
//! `segment OFFSET 0xADDRESS LENGTH` line per segment.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Byte `offset` of the pattern the DMA test drivers write.
pub fn pattern(offset: usize) -> u8 {
    ((offset / 4096) as u8).wrapping_mul(37) ^ (offset as u8).wrapping_mul(11) ^ 0xa5
}

/// What the driver's device says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Bytes.
    pub bytes: usize,
    /// Page size.
    pub page_size: usize,
    /// Whether it is pinned.
    pub pinned: bool,
    /// Where the driver mapped it.
    pub mapping: usize,
    /// Which incarnation of the driver reports (the Rust driver says).
    pub incarnation: Option<u32>,
    /// `written` or `kept`.
    pub pattern: String,
    /// Offset, address, length.
    pub segments: Vec<(usize, u64, usize)>,
}

/// A number in hexadecimal, with or without `0x`.
fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

impl Report {
    /// Parses a report.
    pub fn parse(text: &str) -> Report {
        let find = |key: &str| text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')));
        let value = |key: &str| find(key).unwrap_or_else(|| panic!("no {key} in {text}")).to_owned();
        let segments = text
            .lines()
            .filter_map(|l| l.strip_prefix("segment "))
            .map(|l| {
                let w: Vec<&str> = l.split(' ').collect();
                (w[0].parse().unwrap(), hex(w[1]), w[2].parse().unwrap())
            })
            .collect();
        Report {
            bytes: value("bytes").parse().unwrap(),
            page_size: value("page_size").parse().unwrap(),
            pinned: value("pinned") == "yes",
            mapping: hex(&value("mapping")) as usize,
            incarnation: find("incarnation").map(|v| v.parse().unwrap()),
            pattern: value("pattern"),
            segments,
        }
    }
}
/// Checks the report against the driver's own page tables: every base page
/// of each segment is present in `/proc/PID/pagemap` at the driver's
/// mapping, the frames of a segment are consecutive, and the first is the
/// segment's address. Also that the mapping is the DMA memfd.
pub fn check_pagemap(pid: u32, r: &Report) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{:x}-", r.mapping)))
        .unwrap_or_else(|| panic!("no mapping at {:#x} in:\n{maps}", r.mapping));
    assert!(line.contains("memfd:ddf-dma:"), "the mapping is not the DMA memfd: {line}");
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).unwrap();
    let base = 4096usize;
    assert_eq!(r.segments.iter().map(|s| s.2).sum::<usize>(), r.bytes);
    for (i, &(offset, addr, len)) in r.segments.iter().enumerate() {
        assert_eq!(offset, i * r.page_size);
        assert_eq!(len, r.page_size);
        let mut raw = vec![0u8; len / base * 8];
        pagemap.read_exact_at(&mut raw, ((r.mapping + offset) / base * 8) as u64).unwrap();
        for (k, e) in raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).enumerate() {
            assert_eq!(e >> 63, 1, "page {k} of segment {i} is not present");
            let frame = e & ((1 << 55) - 1);
            assert_eq!(frame * base as u64, addr + (k * base) as u64, "segment {i}, page {k}: pagemap disagrees");
        }
    }
}

/// Maps the driver's memfd a second time (through `/proc/PID/map_files`)
/// and checks that it holds the pattern.
pub fn check_second_mapping(pid: u32, r: &Report) {
    let path = format!("/proc/{pid}/map_files/{:x}-{:x}", r.mapping, r.mapping + r.bytes);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: a new read-only shared mapping at an address of the kernel's
    // choosing; it is only read, and unmapped below.
    let p =
        unsafe { libc::mmap(std::ptr::null_mut(), r.bytes, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
    assert_ne!(p, libc::MAP_FAILED, "mmap of {path}: {}", std::io::Error::last_os_error());
    // SAFETY: the mapping is `r.bytes` readable bytes; the driver does not
    // write it after its start, so nothing changes it while we look.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), r.bytes) };
    let wrong = bytes.iter().enumerate().position(|(i, b)| *b != pattern(i));
    // SAFETY: exactly the mapping made above, no reference into it left.
    unsafe { libc::munmap(p, r.bytes) };
    assert_eq!(wrong, None, "a second mapping of the memfd does not read the pattern the driver wrote");
}
