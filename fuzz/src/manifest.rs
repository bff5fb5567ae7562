//! Driver manifests ([`ddm_fs::manifest`]): the TOML files `ddm --manifest
//! FILE` reads.
//!
//! The parser has no encoder to round-trip through; instead the target
//! checks that what it accepts is usable: ddm takes every number and name
//! of an accepted manifest as it is, so a value the parser lets through
//! must not break ddm later. The target does with a manifest what ddm does
//! with it: the parameters a driver gets, the executable it runs, the
//! devices it matches, the restart policy over a crash loop, and the
//! deadline of a call on its link.

use std::path::Path;
use std::time::{Duration, Instant};

use ddf::ipc::{encode_frame, Channel};
use ddf::proto::{Call, DdmToDriver, Handle};
use ddm_fs::conn::Conn;
use ddm_fs::core::{Cause, Health};
use ddm_fs::manifest::Manifest;
use ddm_fs::reply::Parked;
use ddm_fs::supervise::{decide, Decision};

/// The name manifests are read under, for messages.
const SOURCE: &str = "fuzz.toml";

/// `manifest`: a driver manifest as [`Manifest::load`] reads it (a file
/// that is not UTF-8 is a read error before parsing).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let m = match Manifest::parse(text, SOURCE) {
        Ok(m) => m,
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains(SOURCE), "an error that does not say where: {message}");
            return;
        }
    };
    assert!(!m.name.is_empty() && !m.name.contains('/'), "name {:?} accepted", m.name);
    assert_eq!(m.source, SOURCE);

    // What the driver is started with.
    let params = m.param_pairs();
    assert_eq!(params.len(), m.params.len());
    let start = DdmToDriver::Start { instance: m.name.clone(), params, state: Vec::new() };
    if let Err(e) = encode_frame(&start, &[]) {
        panic!("the start message of {:?} does not encode: {e}", m.name);
    }
    let dir = Path::new("/usr/lib/ddf");
    let exec = m.exec_path(dir);
    if m.exec.contains('/') {
        assert_eq!(exec, Path::new(&m.exec), "a path was looked up in the driver directory");
    }
    if let Some(matches) = &m.matches {
        let meta = [("vendor".to_owned(), "1234".to_owned()), ("device".to_owned(), "0001".to_owned())];
        let _ = matches.matches("vbus", "char", &meta);
        let _ = matches.matches(&m.name, &m.exec, &[]);
    }

    // The restart policy over a crash loop, deaths 1 ms apart: waits of at
    // most backoff_max_ms; quarantine not before the max_failures-th death
    // (the first, if it is 0), and at it when the window holds them all.
    let policy = &m.supervision;
    let limit = policy.max_failures.max(1);
    let mut health = Health::default();
    let t0 = Instant::now();
    for death in 1..=limit.min(12) {
        let now = t0 + Duration::from_millis(u64::from(death));
        match decide(policy, &mut health, &Cause::Exit(1), now) {
            Decision::Restart(wait) => {
                assert!(wait <= Duration::from_millis(policy.backoff_max_ms), "a wait of {wait:?}");
                assert!(death < limit || policy.window_secs == 0, "death {death} of {limit} was not quarantined");
            }
            Decision::Quarantine(cooldown) => {
                assert!(death >= limit, "quarantined at death {death}, before {limit}");
                // The first quarantine cools down for cooldown_ms exactly.
                let expected = (policy.cooldown_ms > 0).then(|| Duration::from_millis(policy.cooldown_ms));
                assert_eq!(cooldown, expected, "the first cool-down");
            }
            Decision::StayDown => panic!("a crash left the driver down for good"),
        }
    }

    // A call on the link of a driver with this manifest: non-blocking calls
    // get a deadline request_timeout_ms from now.
    let (ours, _theirs) = match Channel::pair() {
        Ok(p) => p,
        Err(e) => panic!("socketpair: {e}"),
    };
    let conn = Conn::new(ours, policy.blocking_calls.clone(), Duration::from_millis(policy.request_timeout_ms));
    let _ = conn.call(Call::Close { handle: Handle(1) }, &[], Parked::Discard, 0);
    let _ = Duration::from_millis(policy.heartbeat_ms);
    let _ = Duration::from_millis(policy.heartbeat_timeout_ms);
}
