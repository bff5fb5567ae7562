//! The core's state machine, without FUSE, root or processes: fake replies,
//! fake drivers on real socket pairs, the real reader and the real plugin
//! manager (see `testkit.rs`).

#![allow(clippy::unwrap_used)]

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ddf::proto::{
    Answer, BusId, Call, DdmToDriver, DeviceClass, DeviceId, DeviceSpec, DriverState, DriverToDdm, Errno, Handle,
    OpenFlags, RequestId,
};

use super::testkit::{fake, fake_no_passthrough, manifest, wait_until, CountingWaker, FakeDriver, Harness, Outcome};
use super::{Binding, Event, Instance};
use crate::ids::{Fh, Ino, ROOT};
use crate::reply::Parked;

const SHORT: Duration = Duration::from_millis(100);

/// A driver whose open files survive its restarts (like null and zero).
fn surviving() -> String {
    manifest("null", "handles_survive_restart = true\n")
}

/// A driver whose open files die with it (like the keyboard).
fn mortal() -> String {
    manifest("kbd", "")
}

fn memfd(name: &str) -> OwnedFd {
    nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap()
}

fn reads(h: &Harness, d: &mut FakeDriver, fh: Fh, answer: &[u8]) -> Outcome {
    let a = h.read(fh, 16, 0);
    let (id, call, _) = d.expect_call();
    assert!(matches!(call, Call::Read { len: 16, .. }), "{call:?}");
    d.reply(id, Ok(Answer::Data), answer);
    a.get()
}

// ---------------------------------------------------------------------------
// Open, read, write, ioctl, poll: parked, then completed.

#[test]
fn an_open_is_parked_until_the_driver_answers() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (r, a) = fake();
    h.core.open(inos[0], OpenFlags::READ, r, 42);
    let (id, call, _) = d.expect_call();
    assert_eq!(call, Call::Open { device: DeviceId(0), flags: OpenFlags::READ });
    assert_eq!(a.within(SHORT), None, "answered before the driver did");
    d.reply(id, Ok(Answer::Opened { handle: Handle(9) }), &[]);
    assert!(matches!(a.get(), Outcome::Opened { class: DeviceClass::Char, passthrough: false, .. }));
    assert_eq!(h.core.open_files(), 1);
}

#[test]
fn reads_writes_ioctls_and_polls_reach_the_driver_with_its_handle() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (fh, handle) = h.open(&mut d, inos[0]);
    assert_eq!(reads(&h, &mut d, fh, b"hi"), Outcome::Data(b"hi".to_vec()));

    let a = h.write(fh, b"abc");
    let (id, call, payload) = d.expect_call();
    assert_eq!(
        (call, payload.as_slice()),
        (Call::Write { handle, offset: 0, flags: OpenFlags::default() }, &b"abc"[..])
    );
    d.reply(id, Ok(Answer::Written { len: 2 }), &[]);
    assert_eq!(a.get(), Outcome::Written(2));

    let (r, a) = fake();
    h.core.file_call(fh, |handle| Call::Ioctl { handle, cmd: 7, out_len: 4 }, b"in", Parked::Ioctl(r, 4), 0);
    let (id, call, payload) = d.expect_call();
    assert_eq!((call, payload.as_slice()), (Call::Ioctl { handle, cmd: 7, out_len: 4 }, &b"in"[..]));
    d.reply(id, Ok(Answer::Ioctl { result: 3 }), b"out!");
    assert_eq!(a.get(), Outcome::Ioctl(3, b"out!".to_vec()));

    let (r, a) = fake();
    h.core.file_call(fh, |handle| Call::Poll { handle, events: 1, notify: false }, &[], Parked::Poll(r), 0);
    let (id, _, _) = d.expect_call();
    d.reply(id, Ok(Answer::Polled { revents: 1 }), &[]);
    assert_eq!(a.get(), Outcome::Polled(1));
}

#[test]
fn a_parked_read_does_not_hold_up_the_calls_behind_it() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    let read = h.read(fh, 8, 0);
    let (read_id, _, _) = d.expect_call();
    let write = h.write(fh, b"x");
    let (write_id, _, _) = d.expect_call();
    d.reply(write_id, Ok(Answer::Written { len: 1 }), &[]);
    assert_eq!(write.get(), Outcome::Written(1));
    assert_eq!(read.within(SHORT), None);
    d.reply(read_id, Ok(Answer::Data), b"late");
    assert_eq!(read.get(), Outcome::Data(b"late".to_vec()));
}

#[test]
fn a_drivers_errno_reaches_the_caller_and_nonsense_becomes_eio() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    let a = h.read(fh, 16, 0);
    let (id, _, _) = d.expect_call();
    d.reply(id, Err(Errno::EAGAIN), &[]);
    assert_eq!(a.get(), Outcome::Error(Errno::EAGAIN));
    for bad in [0, -5, 99_999] {
        let a = h.read(fh, 16, 0);
        let (id, _, _) = d.expect_call();
        d.reply(id, Err(Errno(bad)), &[]);
        assert_eq!(a.get(), Outcome::Error(Errno::EIO), "errno {bad}");
    }
    assert_eq!(h.core.inst(d.inst.id).unwrap().errors.load(std::sync::atomic::Ordering::Relaxed), 4);
}

#[test]
fn opens_of_what_is_not_a_running_device_fail_without_a_driver() {
    let h = Harness::new(&[mortal()]);
    let (r, a) = fake();
    h.core.open(ROOT, OpenFlags::READ, r, 0);
    assert_eq!(a.get(), Outcome::Error(Errno(libc::EISDIR)));
    let (r, a) = fake();
    h.core.open(Ino(999), OpenFlags::READ, r, 0);
    assert_eq!(a.get(), Outcome::Error(Errno(libc::ENOENT)));
    // A device whose driver is starting again: try again.
    let (d, inos) = h.running("kbd", &["keyboard0"]);
    h.die(d, DriverState::Restarting);
    let (r, a) = fake();
    h.core.open(inos[0], OpenFlags::READ, r, 0);
    assert_eq!(a.get(), Outcome::Error(Errno::EAGAIN));
}

#[test]
fn calls_on_an_unknown_file_handle_are_ebadf() {
    let h = Harness::new(&[mortal()]);
    assert_eq!(h.read(Fh(77), 1, 0).get(), Outcome::Error(Errno::EBADF));
}

#[test]
fn release_closes_the_drivers_handle() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (fh, handle) = h.open(&mut d, inos[0]);
    h.core.release(fh);
    let (_, call, _) = d.expect_call();
    assert_eq!(call, Call::Close { handle });
    assert_eq!(h.core.open_files(), 0);
    assert_eq!(h.read(fh, 1, 0).get(), Outcome::Error(Errno::EBADF));
}

#[test]
fn a_poll_wake_tells_the_files_poller_once() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (fh, handle) = h.open(&mut d, inos[0]);
    let woken = Arc::new(Mutex::new(0));
    assert!(h.core.set_poll(fh, Box::new(CountingWaker(woken.clone()))));
    assert!(!h.core.set_poll(Fh(12345), Box::new(CountingWaker(woken.clone()))));
    d.send(&DriverToDdm::PollWake { handle }, &[]);
    d.send(&DriverToDdm::PollWake { handle }, &[]);
    d.sync();
    assert_eq!(*woken.lock().unwrap(), 1);
}

// ---------------------------------------------------------------------------
// A driver that dies, restarts, or is quarantined.

#[test]
fn requests_in_flight_end_with_eio_when_the_driver_dies() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (fh, _) = h.open_as(&mut d, inos[0], 0);
    let a = h.read(fh, 16, 4242);
    let _ = d.expect_call();
    let b = h.write(fh, b"x");
    let _ = d.expect_call();
    let ended = h.die(d, DriverState::Restarting);
    assert_eq!(a.get(), Outcome::Error(Errno::EIO));
    assert_eq!(b.get(), Outcome::Error(Errno::EIO));
    assert_eq!(ended.in_flight.len(), 2, "{:?}", ended.in_flight);
    assert!(ended.in_flight[0].contains("read") && ended.in_flight[0].contains("4242"), "{:?}", ended.in_flight);
    assert_eq!(ended.how, "killed by signal 9 (SIGKILL)");
}

#[test]
fn a_file_that_does_not_survive_restarts_answers_eio_after_one() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    h.die(d, DriverState::Restarting);
    let (mut d2, _) = h.running("kbd", &["keyboard0"]);
    assert_eq!(h.read(fh, 1, 0).get(), Outcome::Error(Errno::EIO));
    assert!(d2.quiet(SHORT), "the new incarnation heard of the dead file");
}

#[test]
fn a_surviving_file_is_reopened_lazily_on_the_new_incarnation() {
    let h = Harness::new(&[surviving()]);
    let (mut d, inos) = h.running("null", &["zero"]);
    let (fh, old) = h.open(&mut d, inos[0]);
    h.die(d, DriverState::Restarting);
    let (mut d2, _) = h.running("null", &["zero"]);
    // Ready re-opens it with the flags of the first open.
    let (id, call, _) = d2.expect_call();
    assert_eq!(call, Call::Open { device: DeviceId(0), flags: OpenFlags::READ_WRITE });
    let new = Handle(old.0 + 50);
    d2.reply(id, Ok(Answer::Opened { handle: new }), &[]);
    let a = h.read(fh, 4, 0);
    let (id, call, _) = d2.expect_call();
    assert!(matches!(call, Call::Read { handle, .. } if handle == new), "{call:?}");
    d2.reply(id, Ok(Answer::Data), b"\0\0");
    assert_eq!(a.get(), Outcome::Data(vec![0, 0]));
}

#[test]
fn calls_made_while_the_driver_restarts_wait_and_go_after_the_reopen() {
    let h = Harness::new(&[surviving()]);
    let (mut d, inos) = h.running("null", &["zero"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    h.die(d, DriverState::Restarting);
    // Not running: the call waits on the file.
    let w = h.write(fh, b"queued");
    assert_eq!(w.within(SHORT), None);
    let (mut d2, _) = h.running("null", &["zero"]);
    let (id, call, _) = d2.expect_call();
    assert!(matches!(call, Call::Open { .. }), "{call:?}");
    d2.reply(id, Ok(Answer::Opened { handle: Handle(5) }), &[]);
    let (id, call, payload) = d2.expect_call();
    assert_eq!(
        (call, payload.as_slice()),
        (Call::Write { handle: Handle(5), offset: 0, flags: OpenFlags::default() }, &b"queued"[..])
    );
    d2.reply(id, Ok(Answer::Written { len: 6 }), &[]);
    assert_eq!(w.get(), Outcome::Written(6));
}

#[test]
fn a_call_on_a_surviving_file_whose_driver_is_back_reopens_it_then() {
    // The lock order: the call finds the file's incarnation dead under
    // `files`, and must look at the instance's `live` without holding it.
    let h = Harness::new(&[surviving()]);
    let (mut d, inos) = h.running("null", &["zero"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    // The link dies but the reaper has not yet run: the file still points
    // at the dead incarnation while a new one is already running.
    d.conn.kill();
    let old = d.conn.clone();
    let mut d2 = h.start("null");
    d2.add_device("zero", DeviceClass::Char);
    d2.send(&DriverToDdm::Ready, &[]);
    wait_until(|| h.core.inst(d2.inst.id).unwrap().state() == DriverState::Running);
    // Ready re-opened nothing: the file's link was live then (the old
    // incarnation had not been ended). The call does it.
    let a = h.read(fh, 4, 0);
    let (id, call, _) = d2.expect_call();
    assert!(matches!(call, Call::Open { .. }), "{call:?}");
    d2.reply(id, Ok(Answer::Opened { handle: Handle(8) }), &[]);
    let (id, call, _) = d2.expect_call();
    assert!(matches!(call, Call::Read { handle: Handle(8), .. }), "{call:?}");
    d2.reply(id, Ok(Answer::Data), b"ok");
    assert_eq!(a.get(), Outcome::Data(b"ok".to_vec()));
    drop(old);
    drop(d);
}

#[test]
fn a_failed_reopen_gives_the_waiting_calls_the_drivers_errno() {
    let h = Harness::new(&[surviving()]);
    let (mut d, inos) = h.running("null", &["zero"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    h.die(d, DriverState::Restarting);
    let w = h.write(fh, b"x");
    let (mut d2, _) = h.running("null", &["zero"]);
    let (id, _, _) = d2.expect_call();
    d2.reply(id, Err(Errno(libc::EBUSY)), &[]);
    assert_eq!(w.get(), Outcome::Error(Errno(libc::EBUSY)));
    // And the file is dead from then on.
    assert_eq!(h.read(fh, 1, 0).get(), Outcome::Error(Errno::EIO));
}

#[test]
fn a_file_closed_while_it_was_reopened_closes_the_new_handle_too() {
    let h = Harness::new(&[surviving()]);
    let (mut d, inos) = h.running("null", &["zero"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    h.die(d, DriverState::Restarting);
    let (mut d2, _) = h.running("null", &["zero"]);
    let (id, _, _) = d2.expect_call();
    h.core.release(fh);
    d2.reply(id, Ok(Answer::Opened { handle: Handle(3) }), &[]);
    let (_, call, _) = d2.expect_call();
    assert_eq!(call, Call::Close { handle: Handle(3) });
}

#[test]
fn quarantine_kills_the_files_and_a_restart_brings_opens_back() {
    let h = Harness::new(&[surviving()]);
    let (mut d, inos) = h.running("null", &["zero"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    h.die(d, DriverState::Restarting);
    let w = h.write(fh, b"x");
    let mut d2 = h.start("null");
    d2.add_device("zero", DeviceClass::Char);
    // It dies before it is ready, and too often: quarantine.
    h.die(d2, DriverState::Failed);
    assert_eq!(w.get(), Outcome::Error(Errno::EIO));
    assert_eq!(h.read(fh, 1, 0).get(), Outcome::Error(Errno::EIO));
    let (r, a) = fake();
    h.core.open(inos[0], OpenFlags::READ, r, 0);
    assert_eq!(a.get(), Outcome::Error(Errno::ENXIO));
    // `ddmctl restart`: a new incarnation, and opens work again.
    let (mut d3, _) = h.running("null", &["zero"]);
    let (fh2, _) = h.open(&mut d3, inos[0]);
    assert_ne!(fh, fh2);
    assert!(h.events().iter().any(|e| matches!(e, Event::Died { next: DriverState::Failed, .. })));
}

#[test]
fn a_restarted_driver_gets_its_old_nodes_back_and_loses_the_ones_it_forgets() {
    let h = Harness::new(&[surviving()]);
    let (d, inos) = h.running("null", &["null", "zero"]);
    h.die(d, DriverState::Restarting);
    let (_d2, _) = h.running("null", &["zero"]);
    assert_eq!(h.ino("zero"), inos[1], "zero kept its inode");
    assert!(!h.exists("null"), "null was not registered again");
    assert!(h.told.deleted.lock().unwrap().iter().any(|(p, i, n)| *p == ROOT && *i == inos[0] && n == "null"));
}

#[test]
fn state_saved_by_one_incarnation_is_handed_to_the_next() {
    let h = Harness::new(&[mortal()]);
    let (d, _) = h.running("kbd", &[]);
    d.save_state("boots", b"\x01");
    d.send_fds(&DriverToDdm::SaveState { key: "disk".into() }, b"cap", &[memfd("disk").as_fd_ref()]);
    d.sync();
    h.die(d, DriverState::Restarting);
    let d2 = h.start("kbd");
    let keys: Vec<(&str, &[u8], u8)> = d2.state.iter().map(|e| (e.key.as_str(), e.bytes.as_slice(), e.fds)).collect();
    assert_eq!(keys, [("boots", &b"\x01"[..], 0), ("disk", &b"cap"[..], 1)]);
    assert_eq!(d2.fds.len(), 1);
}

/// A driver asking for DMA memory, holding a fake region of two pages.
fn with_dma(h: &Harness, name: &str) -> Arc<crate::dma::Budget> {
    let budget = crate::dma::Budget::new(1 << 20);
    let inst = h.core.instance(name).unwrap();
    *inst.dma.lock() = Some(crate::dma::Region::fake(&budget, 2));
    budget
}

fn dma_manifest() -> String {
    manifest("dmadrv", "[dma]\nbytes = \"8K\"\ncontiguous = \"4K\"\n")
}

#[test]
fn dma_memory_is_granted_before_start_to_every_incarnation_and_freed_when_stopped() {
    let h = Harness::new(&[dma_manifest(), mortal()]);
    let budget = with_dma(&h, "dmadrv");
    assert_eq!(budget.used(), 8192);
    let d = h.start("dmadrv");
    let (grant, fd) = d.dma.as_ref().expect("no DMA grant before Start");
    assert_eq!((grant.len, grant.page_size, grant.pages.len()), (8192, 4096, 2));
    let first = (grant.clone(), nix::sys::stat::fstat(fd).unwrap().st_ino);
    // A driver without [dma] gets no grant.
    assert!(h.start("kbd").dma.is_none());
    // The next incarnation gets the same memory and addresses.
    h.die(d, DriverState::Restarting);
    let d2 = h.start("dmadrv");
    let (grant, fd) = d2.dma.as_ref().unwrap();
    assert_eq!((grant.clone(), nix::sys::stat::fstat(fd).unwrap().st_ino), first);
    assert_eq!(budget.used(), 8192, "a restart keeps the memory");
    // Quarantined: kept for a `ddmctl restart`. Stopped: freed.
    h.die(d2, DriverState::Failed);
    assert!(h.core.instance("dmadrv").unwrap().dma.lock().is_some());
    let d3 = h.start("dmadrv");
    h.die(d3, DriverState::Stopped);
    assert!(h.core.instance("dmadrv").unwrap().dma.lock().is_none());
    assert_eq!(budget.used(), 0, "a stopped driver's DMA memory is given back");
}

#[test]
fn unloading_a_quarantined_driver_frees_its_dma_memory() {
    let h = Harness::new(&[dma_manifest()]);
    let budget = with_dma(&h, "dmadrv");
    let (d, _) = h.running("dmadrv", &["dma0"]);
    h.die(d, DriverState::Failed);
    assert_eq!(budget.used(), 8192);
    crate::plug::unload(&h.core, "dma0").unwrap();
    assert_eq!(budget.used(), 0);
    assert!(!h.exists("dma0"));
}

/// Borrowing an owned descriptor in an argument list.
trait AsFdRef {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl AsFdRef for OwnedFd {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

// ---------------------------------------------------------------------------
// Protocol violations: the driver is ended, nothing else notices.

/// Runs `misbehave` on a running driver with a read in flight; checks that
/// the read ends with EIO, the link is dead, and the kill reason says `why`.
fn violation(why: &str, misbehave: impl FnOnce(&mut FakeDriver, RequestId)) {
    let h = Harness::new(&[mortal(), surviving()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (mut other, others) = h.running("null", &["zero"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    let a = h.read(fh, 4, 0);
    let (id, _, _) = d.expect_call();
    misbehave(&mut d, id);
    assert_eq!(a.get(), Outcome::Error(Errno::EIO), "{why}");
    wait_until(|| d.conn.is_dead());
    let reason = d.inst.live.lock().kill_reason.clone().map(|c| c.to_string()).unwrap_or_default();
    assert!(reason.contains(why), "kill reason {reason:?} lacks {why:?}");
    // Another driver goes on.
    let (ofh, _) = h.open(&mut other, others[0]);
    assert_eq!(reads(&h, &mut other, ofh, b"z"), Outcome::Data(b"z".to_vec()));
}

#[test]
fn a_read_answered_with_more_than_asked_is_a_violation() {
    violation("answered 5 bytes, 4 asked", |d, id| d.reply(id, Ok(Answer::Data), b"12345"));
}

#[test]
fn an_answer_that_does_not_fit_its_request_is_a_violation() {
    violation("does not fit read request", |d, id| d.reply(id, Ok(Answer::Written { len: 1 }), &[]));
}

#[test]
fn a_reply_to_no_request_is_a_violation() {
    violation("reply to unknown request 999", |d, _| d.reply(RequestId(999), Ok(Answer::Closed), &[]));
}

#[test]
fn a_frame_that_does_not_decode_is_a_violation() {
    violation("bad message", |d, _| d.send_raw(&[1, 0, 0, 0, 0xff, 0xff, 0xff]));
}

#[test]
fn descriptors_with_a_message_that_takes_none_are_a_violation() {
    violation("1 descriptors sent with a message that takes none", |d, _| {
        d.send_fds(&DriverToDdm::Counters(Vec::new()), &[], &[memfd("x").as_fd_ref()]);
    });
}

#[test]
fn a_device_number_registered_twice_is_a_violation() {
    violation("device number 0 registered twice", |d, _| {
        d.send(&DriverToDdm::AddDevice(DeviceSpec::new(DeviceId(0), "again", DeviceClass::Char, 0)), &[]);
    });
}

#[test]
fn a_device_on_a_bus_it_never_made_is_a_violation() {
    violation("device on unknown bus 3", |d, _| {
        let mut spec = DeviceSpec::new(DeviceId(9), "lost", DeviceClass::Char, 0);
        spec.bus = Some(BusId(3));
        d.send(&DriverToDdm::AddDevice(spec), &[]);
    });
}

#[test]
fn too_much_state_is_a_violation() {
    // Frames are smaller than the store: it takes several keys to fill it.
    let chunk = vec![0; 200 * 1024];
    violation("state store over 1048576 bytes", |d, _| {
        for k in 0..=(super::STATE_MAX_BYTES / chunk.len()) {
            d.save_state(&format!("k{k}"), &chunk);
        }
    });
}

#[test]
fn a_write_claiming_more_than_it_brought_is_a_violation() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    let w = h.write(fh, b"ab");
    let (id, _, _) = d.expect_call();
    d.reply(id, Ok(Answer::Written { len: 3 }), &[]);
    assert_eq!(w.get(), Outcome::Error(Errno::EIO));
    wait_until(|| d.conn.is_dead());
}

#[test]
fn a_bad_device_name_is_refused_but_is_no_violation() {
    let h = Harness::new(&[mortal()]);
    let mut d = h.start("kbd");
    d.add_device("a/b", DeviceClass::Char);
    d.add_device("..", DeviceClass::Char);
    d.add_device("fine", DeviceClass::Char);
    d.ready();
    assert!(h.exists("fine"));
    assert!(!d.conn.is_dead());
    assert_eq!(h.core.tree.read().children(ROOT).len(), 1);
}

// ---------------------------------------------------------------------------
// Hostile drivers: limits and checks on what a driver may register.

#[test]
fn more_devices_and_buses_than_the_manifest_allows_is_a_violation() {
    let h = Harness::new(&[manifest("many", "max_devices = 3\n"), surviving()]);
    let (_other, _) = h.running("null", &["zero"]);
    let mut d = h.start("many");
    d.add_bus(BusId(0), "b", "x");
    d.add_device("one", DeviceClass::Char);
    d.add_device("two", DeviceClass::Char);
    d.sync();
    assert!(!d.conn.is_dead(), "three nodes are within the limit");
    d.add_device("three", DeviceClass::Char);
    wait_until(|| d.conn.is_dead());
    let reason = d.inst.live.lock().kill_reason.clone().map(|c| c.to_string()).unwrap_or_default();
    assert!(reason.contains("more than 3 devices and buses"), "{reason}");
    assert!(!h.exists("three"));
    assert!(h.exists("zero"), "another driver's node went");
}

#[test]
fn hostile_names_are_refused_and_the_driver_and_the_tree_go_on() {
    let h = Harness::new(&[mortal(), surviving()]);
    let (_null, zero) = h.running("null", &["zero"]);
    let mut d = h.start("kbd");
    let long = "x".repeat(10 * 1024);
    let names = ["..", ".", "a/b", "nul\0inside", "new\nline", "tab\there", long.as_str(), "zero", ""];
    for (i, name) in names.iter().enumerate() {
        d.add_device(name, DeviceClass::Char);
        d.send(
            &DriverToDdm::AddBus { bus: BusId(i as u32), name: (*name).into(), kind: "k".into(), parent: None },
            &[],
        );
    }
    d.add_device("fine", DeviceClass::Char);
    d.ready();
    assert!(!d.conn.is_dead(), "a refused name is no violation");
    let names: Vec<String> = h.core.tree.read().children(ROOT).iter().map(|n| n.name.clone()).collect();
    assert_eq!(names, ["fine", "zero"]);
    // The node of the same name is still the other driver's.
    match &h.core.tree.read().get(zero[0]).unwrap().kind {
        crate::tree::NodeKind::Device(dref) => assert_ne!(dref.instance, d.inst.id),
        other => panic!("{other:?}"),
    }
    assert_eq!(d.inst.live.lock().refused, 18);
}

#[test]
fn refusal_after_refusal_is_a_violation_in_the_end() {
    violation("more than 10000 registrations refused", |d, _| {
        for _ in 0..=super::register::REFUSALS_MAX {
            if d.send_checked(&DriverToDdm::AddDevice(DeviceSpec::new(DeviceId(1), "..", DeviceClass::Char, 0)), &[])
                .is_err()
            {
                break;
            }
        }
    });
}

#[test]
fn oversized_metadata_is_refused_but_is_no_violation() {
    let h = Harness::new(&[mortal()]);
    let mut d = h.start("kbd");
    let mut many = DeviceSpec::new(DeviceId(0), "many-ids", DeviceClass::Char, 0);
    many.meta = (0..=super::META_MAX).map(|i| (format!("k{i}"), "v".into())).collect();
    d.add(many);
    let mut big = DeviceSpec::new(DeviceId(0), "big-ids", DeviceClass::Char, 0);
    big.meta = vec![("k".into(), "v".repeat(super::META_BYTES_MAX))];
    d.add(big);
    let mut addr = DeviceSpec::new(DeviceId(0), "long-address", DeviceClass::Char, 0);
    addr.address = Some("a".repeat(super::ADDRESS_MAX + 1));
    d.add(addr);
    d.send(&DriverToDdm::AddBus { bus: BusId(0), name: "b".into(), kind: "k\n".into(), parent: None }, &[]);
    let mut ok = DeviceSpec::new(DeviceId(0), "ok", DeviceClass::Char, 0);
    ok.meta = vec![("vendor".into(), "0x1".into())];
    d.add(ok);
    d.ready();
    assert!(!d.conn.is_dead());
    let names: Vec<String> = h.core.tree.read().children(ROOT).iter().map(|n| n.name.clone()).collect();
    assert_eq!(names, ["ok"]);
}

#[test]
fn a_bus_that_claims_to_be_its_own_parent_is_a_violation() {
    violation("bus 4 claims to be its own parent", |d, _| {
        d.send(
            &DriverToDdm::AddBus { bus: BusId(4), name: "loop".into(), kind: "k".into(), parent: Some(BusId(4)) },
            &[],
        );
    });
}

#[test]
fn a_start_failure_after_ready_is_a_violation() {
    violation("a start failure after Ready", |d, _| {
        d.send(&DriverToDdm::StartFailed { why: "too late".into() }, &[]);
    });
}

#[test]
fn serving_another_drivers_node_is_a_violation() {
    violation("serves \"zero\", which is not bound to it", |d, _| {
        let mut spec = DeviceSpec::new(DeviceId(7), "zero", DeviceClass::Char, 0);
        spec.serves = Some("zero".into());
        d.send(&DriverToDdm::AddDevice(spec), &[]);
    });
}

#[test]
fn too_many_state_keys_is_a_violation() {
    violation("state store over 64 keys", |d, _| {
        for k in 0..=super::STATE_MAX_KEYS {
            d.save_state(&format!("k{k}"), b"x");
        }
    });
}

#[test]
fn a_flood_of_state_writes_is_a_violation_and_the_store_stays_bounded() {
    let h = Harness::new(&[mortal()]);
    let (d, _) = h.running("kbd", &["keyboard0"]);
    let chunk = vec![0u8; 1024];
    let mut sent = 0u64;
    // The socket refuses more once the core has closed the link.
    while !d.conn.is_dead() && sent < 1_000_000 {
        if d.send_checked(&DriverToDdm::SaveState { key: "flood".into() }, &chunk).is_err() {
            break;
        }
        sent += 1;
    }
    wait_until(|| d.conn.is_dead());
    let reason = d.inst.live.lock().kill_reason.clone().map(|c| c.to_string()).unwrap_or_default();
    assert!(reason.contains("flood"), "{reason} after {sent} writes");
    let stored: usize = d.inst.store.lock().values().map(|s| s.bytes.len()).sum();
    assert!(stored <= super::STATE_MAX_BYTES, "{stored}");
}

#[test]
fn a_sandbox_report_is_kept_for_the_death_once_per_incarnation() {
    let h = Harness::new(&[mortal()]);
    let (d, _) = h.running("kbd", &["keyboard0"]);
    let arch = crate::seccomp::NATIVE_ARCH;
    let socket = crate::seccomp::number("socket").unwrap() as i32;
    let ptrace = crate::seccomp::number("ptrace").unwrap() as i32;
    d.send(&DriverToDdm::SandboxViolation { syscall: socket, arch }, &[]);
    d.send(&DriverToDdm::SandboxViolation { syscall: ptrace, arch }, &[]);
    d.sync();
    assert_eq!(d.inst.live.lock().violation.as_deref(), Some(format!("socket ({socket})").as_str()));
    assert!(!d.conn.is_dead(), "a report alone ends nothing: the death does");
    let inst = d.inst.clone();
    h.die(d, DriverState::Restarting);
    assert_eq!(inst.live.lock().violation, None, "the next incarnation starts clean");
}

// ---------------------------------------------------------------------------
// Interrupts.

#[test]
fn a_parked_call_whose_caller_was_signalled_ends_with_eintr_and_is_cancelled() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    let a = h.read(fh, 4, 777);
    let (id, _, _) = d.expect_call();
    // Too young to look at, and another caller's signal is not ours.
    assert_eq!(crate::interrupt::scan(&h.core, Duration::from_secs(60), &|_| true), 0);
    assert_eq!(crate::interrupt::scan(&h.core, Duration::ZERO, &|pid| pid == 1), 0);
    assert_eq!(crate::interrupt::scan(&h.core, Duration::ZERO, &|pid| pid == 777), 1);
    assert_eq!(a.get(), Outcome::Error(Errno::EINTR));
    assert_eq!(d.recv().0, DdmToDriver::Cancel { id });
    // The driver's late answer is dropped, not a violation.
    d.reply(id, Ok(Answer::Data), b"late");
    d.sync();
    assert!(!d.conn.is_dead());
}

#[test]
fn a_call_waiting_for_a_restarting_driver_can_be_interrupted() {
    let h = Harness::new(&[surviving()]);
    let (mut d, inos) = h.running("null", &["zero"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    h.die(d, DriverState::Restarting);
    let a = h.read(fh, 4, 555);
    let b = h.read(fh, 4, 556);
    assert_eq!(a.within(SHORT), None);
    assert_eq!(crate::interrupt::scan(&h.core, Duration::ZERO, &|pid| pid == 555), 1);
    assert_eq!(a.get(), Outcome::Error(Errno::EINTR));
    assert_eq!(b.within(SHORT), None, "the other caller still waits");
}

// ---------------------------------------------------------------------------
// Buses, the plugin manager, hot-unplug.

fn bus_manifest() -> String {
    manifest("vbus", "")
}

fn bound_manifest() -> String {
    "name = \"blink\"\nexec = \"fake-blink\"\n[match]\nbus = \"vbus\"\n[match.ids]\nvendor = \"12*\"\n".to_owned()
}

/// A bus driver with bus `vbus` (number 0) running.
fn bus(h: &Harness) -> FakeDriver {
    let d = h.start("vbus");
    d.add_bus(BusId(0), "vbus", "vbus");
    d.ready();
    d
}

fn offer(d: &mut FakeDriver, name: &str, vendor: &str) -> DeviceId {
    let mut spec = DeviceSpec::new(DeviceId(0), name, DeviceClass::Char, 0);
    spec.bus = Some(BusId(0));
    spec.address = Some(name.into());
    spec.meta = vec![("vendor".into(), vendor.into())];
    spec.offer = true;
    d.add(spec)
}

#[test]
fn an_offered_device_no_manifest_matches_says_why() {
    let h = Harness::new(&[bus_manifest(), bound_manifest()]);
    let mut b = bus(&h);
    offer(&mut b, "odd", "9999");
    b.sync();
    let ino = h.ino("vbus/odd");
    assert_eq!(h.core.bindings.lock().get(&ino).cloned(), Some(Binding::Unbound("no driver matches vbus odd".into())));
    assert_eq!(crate::plug::node_state(&h.core, ino, None).as_deref(), Some("unbound: no driver matches vbus odd"));
}

/// The bound driver the plugin manager launched for an offered device:
/// ready, told of its device, and serving it as `name`.
fn bound_blink(h: &Harness, name: &str) -> (FakeDriver, ddf::proto::BoundDevice) {
    let mut blink = h.launched();
    blink.ready();
    let DdmToDriver::Bind(bd) = blink.recv().0 else { panic!("no bind") };
    let mut spec = DeviceSpec::new(DeviceId(0), name, DeviceClass::Char, 0);
    spec.serves = Some(bd.path.clone());
    blink.add(spec);
    (blink, bd)
}

#[test]
fn a_matching_driver_is_started_bound_serves_the_node_and_is_told_of_its_going() {
    let h = Harness::new(&[bus_manifest(), bound_manifest()]);
    let mut b = bus(&h);
    let dev = offer(&mut b, "led", "1234");
    // The plugin manager starts blink for it, and binds the node once ready.
    let (mut blink, bd) = bound_blink(&h, "led");
    assert_eq!((bd.path.as_str(), bd.name.as_str(), bd.bus_kind.as_str()), ("vbus/led", "led", "vbus"));
    blink.sync();
    let ino = h.ino("vbus/led");
    let (fh, _) = h.open(&mut blink, ino);
    assert_eq!(reads(&h, &mut blink, fh, b"on"), Outcome::Data(b"on".to_vec()));
    // The bus unplugs it: the bound driver is told, the file is gone.
    b.send(&DriverToDdm::RemoveDevice { device: dev }, &[]);
    b.sync();
    assert_eq!(blink.recv().0, DdmToDriver::Unbind { path: "vbus/led".into() });
    assert_eq!(h.read(fh, 1, 0).get(), Outcome::Error(Errno::ENODEV));
    assert!(!h.exists("vbus/led"));
}

/// What an instance's books hold about `inos`: paths, device numbers,
/// bus numbers and the nodes it registered.
fn booked(inst: &Instance, inos: &[Ino]) -> Vec<String> {
    let live = inst.live.lock();
    let mut out = Vec::new();
    out.extend(live.names.iter().filter(|(_, i)| inos.contains(i)).map(|(p, _)| format!("name {p}")));
    out.extend(live.devices.iter().filter(|(_, i)| inos.contains(i)).map(|(d, _)| format!("device {d}")));
    out.extend(live.buses.iter().filter(|(_, i)| inos.contains(i)).map(|(b, _)| format!("bus {b}")));
    out.extend(live.seen.iter().filter(|i| inos.contains(i)).map(|i| format!("seen {i}")));
    out
}

#[test]
fn removed_nodes_leave_nothing_in_any_drivers_books_one_by_one_or_a_bus_at_once() {
    let h = Harness::new(&[bus_manifest(), bound_manifest()]);
    let mut b = bus(&h);
    // One bound to blink (in two instances' books), a few plain ones.
    let led = offer(&mut b, "led", "1234");
    let (blink, _) = bound_blink(&h, "led");
    let plain: Vec<DeviceId> = (0..5).map(|k| offer(&mut b, &format!("odd{k}"), "9999")).collect();
    blink.sync();
    b.sync();
    let mut inos = vec![h.ino("vbus/led")];
    inos.extend((0..5).map(|k| h.ino(&format!("vbus/odd{k}"))));
    assert!(!booked(&b.inst, &inos).is_empty() && !booked(&blink.inst, &inos).is_empty());
    for dev in std::iter::once(led).chain(plain) {
        b.send(&DriverToDdm::RemoveDevice { device: dev }, &[]);
    }
    b.sync();
    wait_until(|| booked(&blink.inst, &inos).is_empty());
    assert_eq!(booked(&b.inst, &inos), Vec::<String>::new());
    // A second bus with more devices than are forgotten key by key, removed at once.
    b.send(&DriverToDdm::AddBus { bus: BusId(1), name: "big".into(), kind: "vbus".into(), parent: None }, &[]);
    for k in 0..100 {
        let mut spec = DeviceSpec::new(DeviceId(0), &format!("d{k}"), DeviceClass::Char, 0);
        spec.bus = Some(BusId(1));
        b.add(spec);
    }
    b.sync();
    let mut big = vec![h.ino("big")];
    big.extend((0..100).map(|k| h.ino(&format!("big/d{k}"))));
    assert_eq!(booked(&b.inst, &big).len(), 3 * 101);
    b.send(&DriverToDdm::RemoveBus { bus: BusId(1) }, &[]);
    b.sync();
    assert_eq!(booked(&b.inst, &big), Vec::<String>::new());
    assert!(!h.exists("big") && h.exists("vbus"));
}

#[test]
fn a_bound_driver_claiming_a_node_not_bound_to_it_is_a_violation() {
    let h = Harness::new(&[bus_manifest(), bound_manifest()]);
    let mut b = bus(&h);
    offer(&mut b, "odd", "9999");
    b.sync();
    let mut intruder = h.start("vbus");
    let mut spec = DeviceSpec::new(DeviceId(0), "odd", DeviceClass::Char, 0);
    spec.serves = Some("vbus/odd".into());
    intruder.add(spec);
    wait_until(|| intruder.conn.is_dead());
}

#[test]
fn a_quarantined_bound_driver_gives_its_nodes_back_with_the_reason() {
    let h = Harness::new(&[bus_manifest(), bound_manifest()]);
    let mut b = bus(&h);
    offer(&mut b, "led", "1234");
    let blink = h.launched();
    let id = blink.inst.id;
    h.die(blink, DriverState::Failed);
    let ino = h.ino("vbus/led");
    let binding = h.core.bindings.lock().get(&ino).cloned();
    let Some(Binding::Unbound(why)) = binding else { panic!("{binding:?}") };
    assert!(why.starts_with("driver blink failed (killed by signal 9"), "{why}");
    // Its bus driver serves it again.
    let served_by = match &h.core.tree.read().get(ino).unwrap().kind {
        crate::tree::NodeKind::Device(d) => d.instance,
        other => panic!("{other:?}"),
    };
    assert_eq!(served_by, b.inst.id);
    assert_ne!(served_by, id);
}

#[test]
fn hot_unplug_ends_waiting_calls_with_enodev() {
    let h = Harness::new(&[surviving()]);
    let (mut d, inos) = h.running("null", &["zero"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    h.die(d, DriverState::Restarting);
    let w = h.write(fh, b"x");
    h.core.remove_node(inos[0]);
    assert_eq!(w.get(), Outcome::Error(Errno::ENODEV));
    assert_eq!(h.read(fh, 1, 0).get(), Outcome::Error(Errno::ENODEV));
    assert!(h.events().iter().any(|e| matches!(e, Event::NodeRemoved { path, .. } if path == "zero")));
}

#[test]
fn a_new_device_is_announced_to_the_kernel_and_the_listeners() {
    let h = Harness::new(&[mortal()]);
    let (_d, inos) = h.running("kbd", &["keyboard0"]);
    assert!(h.told.inval.lock().unwrap().contains(&(ROOT, "keyboard0".to_owned())));
    assert!(h.events().iter().any(|e| matches!(e, Event::DeviceAdded { ino, offered: false, .. } if *ino == inos[0])));
}

#[test]
fn load_waits_no_longer_than_the_start_timeout() {
    let h = Harness::with_timeout(&["name = \"slow\"\nexec = \"fake-slow\"\n".to_owned()], Duration::from_millis(200));
    let t0 = Instant::now();
    let core = h.core.clone();
    let t = std::thread::spawn(move || crate::plug::load(&core, "slow", None, &[]));
    let _never_ready = h.launched();
    let err = t.join().unwrap().unwrap_err();
    assert_eq!(err.to_string(), "driver slow did not start: starting");
    assert!(t0.elapsed() < Duration::from_secs(5), "load waited {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------
// Passthrough backing files.

/// A driver with one block device, `ram0`, running.
fn ramdisk(h: &Harness) -> (FakeDriver, Ino) {
    let mut d = h.start("rd");
    d.add_device("ram0", DeviceClass::Block);
    d.ready();
    (d, h.ino("ram0"))
}

#[test]
fn opens_with_a_backing_file_share_one_registration_per_node() {
    let h = Harness::new(&[manifest("rd", "")]);
    let (mut d, ino) = ramdisk(&h);
    let disk = memfd("disk");
    let mut fhs = Vec::new();
    for _ in 0..2 {
        let (r, a) = fake();
        h.core.open(ino, OpenFlags::READ, r, 0);
        let (id, _, _) = d.expect_call();
        d.reply_fd(id, Ok(Answer::OpenedBacked { handle: Handle(1) }), &disk);
        match a.get() {
            Outcome::Opened { fh, passthrough: true, class: DeviceClass::Block } => fhs.push(fh),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(h.core.backing_opens(ino), 2);
    h.core.release(fhs[0]);
    assert_eq!(h.core.backing_opens(ino), 1);
    h.core.release(fhs[1]);
    assert_eq!(h.core.backing_opens(ino), 0);
}

#[test]
fn an_open_is_served_through_the_driver_when_passthrough_is_refused_or_mixed() {
    let h = Harness::new(&[manifest("rd", "")]);
    let (mut d, ino) = ramdisk(&h);
    // The kernel refuses the backing file.
    let (r, a) = fake_no_passthrough();
    h.core.open(ino, OpenFlags::READ, r, 0);
    let (id, _, _) = d.expect_call();
    d.reply_fd(id, Ok(Answer::OpenedBacked { handle: Handle(1) }), &memfd("a"));
    assert!(matches!(a.get(), Outcome::Opened { passthrough: false, .. }));
    assert_eq!(h.core.backing_opens(ino), 0);
    // One file is in use; another one for the same node is refused.
    let (r, a) = fake();
    h.core.open(ino, OpenFlags::READ, r, 0);
    let (id, _, _) = d.expect_call();
    d.reply_fd(id, Ok(Answer::OpenedBacked { handle: Handle(2) }), &memfd("b"));
    assert!(matches!(a.get(), Outcome::Opened { passthrough: true, .. }));
    let (r, a) = fake();
    h.core.open(ino, OpenFlags::READ, r, 0);
    let (id, _, _) = d.expect_call();
    d.reply_fd(id, Ok(Answer::OpenedBacked { handle: Handle(3) }), &memfd("c"));
    assert!(matches!(a.get(), Outcome::Opened { passthrough: false, .. }));
    assert_eq!(h.core.backing_opens(ino), 1);
}

// ---------------------------------------------------------------------------
// Permissions.

#[test]
fn chmod_is_saved_then_shown_and_a_failed_save_changes_nothing() {
    let h = Harness::new(&[mortal()]);
    let (_d, inos) = h.running("kbd", &["keyboard0"]);
    let before = h.core.tree.read().get(inos[0]).unwrap().perm;
    let p = h.core.set_perm(inos[0], Some(0o600), None, Some(44)).unwrap();
    assert_eq!((p.mode, p.gid), (0o600, 44));
    assert_eq!(h.core.tree.read().get(inos[0]).unwrap().perm, p);
    assert_ne!(before, p);
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, Event::PermChanged { path, perm } if path == "keyboard0" && *perm == p)));
    assert!(matches!(h.core.set_perm(Ino(999), Some(0o600), None, None), Err(super::PermError::NoNode(_))));
}

#[test]
fn a_slow_permission_save_does_not_hold_the_tree() {
    let h = Harness::new(&[mortal()]);
    let (_d, inos) = h.running("kbd", &["keyboard0"]);
    // The store is busy (a slow fsync, here another thread holding it): the
    // chmod waits for it.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let core = h.core.clone();
    let busy = std::thread::spawn(move || {
        let _store = core.perms.lock();
        held_tx.send(()).unwrap();
        let _ = go_rx.recv();
    });
    held_rx.recv().unwrap();
    let core = h.core.clone();
    let ino = inos[0];
    let t = std::thread::spawn(move || core.set_perm(ino, Some(0o640), None, None).map(|p| p.mode));
    // Meanwhile the tree must stay free for lookups.
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        assert!(h.core.tree.try_read().is_some(), "a chmod waiting on the store holds the tree");
        std::thread::sleep(Duration::from_millis(5));
    }
    go_tx.send(()).unwrap();
    busy.join().unwrap();
    assert_eq!(t.join().unwrap().unwrap(), 0o640);
}

#[test]
fn a_restarted_bound_driver_keeps_its_node_and_is_handed_it_again() {
    let h = Harness::new(&[bus_manifest(), bound_manifest()]);
    let mut b = bus(&h);
    offer(&mut b, "led", "1234");
    let mut blink = h.launched();
    blink.ready();
    let DdmToDriver::Bind(bd) = blink.recv().0 else { panic!("no bind") };
    let mut spec = DeviceSpec::new(DeviceId(0), "led", DeviceClass::Char, 0);
    spec.serves = Some(bd.path.clone());
    blink.add(spec);
    blink.sync();
    let ino = h.ino("vbus/led");
    h.die(blink, DriverState::Restarting);
    // The new incarnation says ready before it is handed the node again:
    // the node is not one it forgot.
    let mut again = h.start("blink");
    again.ready();
    assert_eq!(again.recv().0, DdmToDriver::Bind(bd));
    assert_eq!(h.ino("vbus/led"), ino, "the bound node was removed at ready");
    assert_eq!(h.core.bindings.lock().get(&ino), Some(&Binding::Bound(again.inst.id)));
}

#[test]
fn an_answer_sent_just_before_the_driver_died_is_delivered_not_failed() {
    let h = Harness::new(&[mortal()]);
    let (mut d, inos) = h.running("kbd", &["keyboard0"]);
    let (fh, _) = h.open(&mut d, inos[0]);
    let a = h.read(fh, 16, 0);
    let (id, _, _) = d.expect_call();
    let b = h.read(fh, 16, 0);
    let _ = d.expect_call();
    // The driver says much, answers one call and dies at once: its reaper
    // ends the incarnation while the answer is still in the socket, behind
    // the rest.
    for _ in 0..3000 {
        d.send(&DriverToDdm::PollWake { handle: Handle(999) }, &[]);
    }
    d.reply(id, Ok(Answer::Data), b"last words");
    h.die(d, DriverState::Restarting);
    assert_eq!(a.get(), Outcome::Data(b"last words".to_vec()));
    assert_eq!(b.get(), Outcome::Error(Errno::EIO));
}

#[test]
fn a_log_line_names_a_few_paths_and_counts_the_rest() {
    let paths: Vec<String> = (0..20_000).map(|i| format!("/vbus/v{i}")).collect();
    assert_eq!(super::paths_for_log(&paths[..2]), "/vbus/v0 /vbus/v1");
    let line = super::paths_for_log(&paths);
    assert!(line.starts_with("/vbus/v0 /vbus/v1 "), "{line}");
    assert!(line.ends_with(" /vbus/v7 and 19992 more"), "{line}");
    assert_eq!(super::paths_for_log(&paths[..super::PATHS_IN_LOG]).matches(' ').count(), super::PATHS_IN_LOG - 1);
}

#[test]
fn a_status_line_counts_the_paths_an_answer_left_out() {
    let paths: Vec<String> = (0..1000).map(|i| format!("/vbus/v{i}")).collect();
    let line = super::paths_and_count(&paths, 100_001);
    assert!(line.ends_with(" /vbus/v7 and 99993 more"), "{line}");
    assert_eq!(super::paths_and_count(&paths[..3], 3), "/vbus/v0 /vbus/v1 /vbus/v2");
    assert_eq!(super::paths_and_count(&paths[..3], 4), "/vbus/v0 /vbus/v1 /vbus/v2 and 1 more");
}
