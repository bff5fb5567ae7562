//! The fast path through the core: calls by the ring answered on the
//! caller's thread, answers late or kept that come by the socket, and every
//! kind of hostile ring contents ending the driver, never ddm.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ddf::ipc::{Channel, Frame};
use ddf::proto::{Answer, Call, DdmToDriver, DriverToDdm, Errno, RequestId};
use ddf::ring::{Ring, SlotState};

use super::testkit::{manifest, wait_until, FakeDriver, Harness, Outcome};

fn harness() -> Harness {
    Harness::fast(&[manifest("kbd", ""), manifest("null", "")])
}

/// The fake driver's ring, with the driver "spinning" on a CPU no caller
/// runs on, so that calls take it.
fn spinning(d: &FakeDriver) -> Arc<Ring> {
    let ring = d.ring.as_ref().expect("no ring: the fast path is off").0.clone();
    ring.set_driver_cpu(u32::MAX - 1);
    ring.set_driver_spinning(true);
    ring
}

/// Waits for a call in the ring; its slot, id and call.
fn take(ring: &Ring) -> (usize, RequestId, Call, Vec<u8>) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((slot, _orphan)) = ring.take_call(0) {
            let mut buf = Vec::new();
            ring.read_frame(slot, &mut buf).unwrap();
            let f = Frame::parse(&buf, Vec::new()).unwrap();
            let DdmToDriver::Call { id, call } = f.decode().unwrap() else { panic!("not a call") };
            return (slot, id, call, f.payload.to_vec());
        }
        assert!(Instant::now() < end, "no call came by the ring");
        std::hint::spin_loop();
    }
}

/// Puts an answer in `slot` and publishes it.
fn answer(ring: &Ring, slot: usize, id: RequestId, result: Result<Answer, Errno>, payload: &[u8]) {
    let mut h = Vec::new();
    ddf::ipc::encode_header(&DriverToDdm::Reply { id, result }, &mut h).unwrap();
    assert!(ring.write_frame(slot, &h, payload));
    ring.transition(slot, SlotState::Busy, SlotState::Reply).unwrap();
}

/// The fake driver's socket, for another thread.
fn socket(d: &FakeDriver) -> Channel {
    d.socket()
}

/// Runs `driver` on a thread of its own while the test makes calls.
fn driver_thread(ring: Arc<Ring>, f: impl FnOnce(&Ring) + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || f(&ring))
}

/// A running driver with one device, open; its ring, and the file.
fn open_fast(h: &Harness, name: &str) -> (FakeDriver, Arc<Ring>, crate::ids::Fh) {
    let (mut d, inos) = h.running(name, &["dev0"]);
    // The open goes by the socket while the driver does not spin.
    let (fh, _) = h.open(&mut d, inos[0]);
    let ring = spinning(&d);
    (d, ring, fh)
}

#[test]
fn a_call_answered_in_the_ring_completes_on_the_callers_thread() {
    let h = harness();
    let (mut d, ring, fh) = open_fast(&h, "kbd");
    let t = driver_thread(ring.clone(), |ring| {
        for i in 0..100u8 {
            let (slot, id, call, _) = take(ring);
            assert!(matches!(call, Call::Read { len: 16, .. }), "{call:?}");
            answer(ring, slot, id, Ok(Answer::Data), &[i; 3]);
        }
    });
    for i in 0..100u8 {
        assert_eq!(h.read(fh, 16, 0).get(), Outcome::Data(vec![i; 3]));
    }
    t.join().unwrap();
    assert_eq!(d.conn.fast_calls(), 100);
    assert!(d.quiet(Duration::from_millis(50)), "a call came by the socket too");
    assert!(d.conn.pending.lock().is_empty());
    // The answers count like the socket's.
    assert_eq!(d.inst.requests.load(Ordering::Relaxed), 101);
}

#[test]
fn a_late_answer_comes_by_the_socket_and_the_call_stays_parked_meanwhile() {
    let h = harness();
    let (d, ring, fh) = open_fast(&h, "kbd");
    let sock = socket(&d);
    let t = driver_thread(ring.clone(), move |ring| {
        let (slot, id, _, _) = take(ring);
        // Too slow for any spin budget: the caller gives up on the slot.
        wait_until(|| ring.state(slot).unwrap() == SlotState::Abandoned);
        ring.set(slot, SlotState::Free);
        sock.send(&DriverToDdm::Reply { id, result: Ok(Answer::Data) }, b"late", &[]).unwrap();
    });
    assert_eq!(h.read(fh, 16, 0).get(), Outcome::Data(b"late".to_vec()));
    t.join().unwrap();
    assert!(!d.conn.is_dead());
}

#[test]
fn a_kept_call_is_deferred_to_the_socket_at_once() {
    let h = harness();
    let (d, ring, fh) = open_fast(&h, "kbd");
    let sock = socket(&d);
    let (kept_tx, kept_rx) = std::sync::mpsc::channel();
    let t = driver_thread(ring.clone(), move |ring| {
        let (slot, id, _, _) = take(ring);
        ring.transition(slot, SlotState::Busy, SlotState::Deferred).unwrap();
        kept_tx.send(id).unwrap();
    });
    let a = h.read(fh, 16, 0);
    let id = kept_rx.recv().unwrap();
    t.join().unwrap();
    assert_eq!(a.within(Duration::from_millis(50)), None, "a kept call was answered");
    wait_until(|| ring.state(0).unwrap() == SlotState::Free);
    sock.send(&DriverToDdm::Reply { id, result: Ok(Answer::Data) }, b"key", &[]).unwrap();
    assert_eq!(a.get(), Outcome::Data(b"key".to_vec()));
}

/// A driver whose ring answer is `bad`: the caller gets EIO, the driver is
/// ended as a protocol violation saying `why`, and another driver goes on.
fn hostile(why: &str, bad: impl FnOnce(&Ring, usize, RequestId) + Send + 'static) {
    let h = harness();
    let (d, ring, fh) = open_fast(&h, "kbd");
    let (mut other, others) = h.running("null", &["other0"]);
    let t = driver_thread(ring, move |ring| {
        let (slot, id, _, _) = take(ring);
        bad(ring, slot, id);
    });
    assert_eq!(h.read(fh, 16, 0).get(), Outcome::Error(Errno::EIO), "{why}");
    t.join().unwrap();
    wait_until(|| d.conn.is_dead());
    let reason = d.inst.live.lock().kill_reason.clone().map(|c| c.to_string()).unwrap_or_default();
    assert!(reason.contains(why), "kill reason {reason:?} lacks {why:?}");
    let (ofh, _) = h.open(&mut other, others[0]);
    let a = h.read(ofh, 1, 0);
    let (id, _, _) = other.expect_call();
    other.reply(id, Ok(Answer::Data), b"z");
    assert_eq!(a.get(), Outcome::Data(b"z".to_vec()));
}

#[test]
fn garbage_in_the_slot_ends_the_driver() {
    hostile("ring: header does not decode", |ring, slot, _| {
        ring.write_frame(slot, &[0xff; 20], &[0xff; 20]);
        ring.transition(slot, SlotState::Busy, SlotState::Reply).unwrap();
    });
}

#[test]
fn an_answer_in_the_slot_to_another_request_ends_the_driver() {
    hostile("answered in the ring with", |ring, slot, id| {
        answer(ring, slot, RequestId(id.0 + 1000), Ok(Answer::Data), b"x");
    });
}

#[test]
fn a_length_beyond_the_slot_ends_the_driver() {
    hostile("claims a frame of", |ring, slot, id| {
        let mut h = Vec::new();
        ddf::ipc::encode_header(&DriverToDdm::Reply { id, result: Ok(Answer::Data) }, &mut h).unwrap();
        ring.write_frame(slot, &h, b"x");
        // The length word lies (a raw write: the driver can write anything).
        let bytes = ring.frame_max() as u32 + 1;
        ring.poke(ring.slot_offset(slot) + 4, bytes);
        ring.transition(slot, SlotState::Busy, SlotState::Reply).unwrap();
    });
}

#[test]
fn a_slot_state_that_is_no_state_ends_the_driver() {
    hostile("holds state 4242", |ring, slot, _| ring.poke(ring.slot_offset(slot), 4242));
}

#[test]
fn an_answer_that_does_not_fit_its_request_ends_the_driver() {
    hostile("answered 17 bytes, 16 asked", |ring, slot, id| answer(ring, slot, id, Ok(Answer::Data), &[0; 17]));
}

#[test]
fn a_driver_that_dies_while_ddm_spins_ends_the_call_with_eio_at_once() {
    let h = harness();
    let (d, ring, fh) = open_fast(&h, "kbd");
    let conn = d.conn.clone();
    let t = driver_thread(ring, move |ring| {
        let (_slot, _id, _, _) = take(ring);
        // It took the call and dies: the reaper or the reader kills the link.
        conn.kill();
    });
    let start = Instant::now();
    assert_eq!(h.read(fh, 16, 0).get(), Outcome::Error(Errno::EIO));
    assert!(start.elapsed() < Duration::from_secs(1), "EIO took {:?}", start.elapsed());
    t.join().unwrap();
    drop(d);
}

#[test]
fn random_bytes_all_over_the_ring_never_hurt_ddm() {
    let h = harness();
    let (d, ring, fh) = open_fast(&h, "kbd");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let scribbler = driver_thread(ring.clone(), move |ring| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let words = ring.slot_offset(ring.slots()) / 4;
        while !s.load(Ordering::Relaxed) {
            // xorshift: random words at random places; the driver's line
            // keeps saying "spinning elsewhere" so that calls keep coming.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ring.poke((x as usize % words) * 4, (x >> 32) as u32);
            ring.set_driver_spinning(true);
            ring.set_driver_cpu(u32::MAX - 1);
        }
    });
    // Calls until the noise ends the driver: each is answered (EIO or
    // whatever the noise looked like) or parked, never a panic.
    let end = Instant::now() + Duration::from_secs(10);
    let mut answered = 0;
    while !d.conn.is_dead() && Instant::now() < end {
        if h.read(fh, 16, 0).within(Duration::from_millis(300)).is_some() {
            answered += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    scribbler.join().unwrap();
    assert!(d.conn.is_dead(), "random bytes never ended the driver");
    let reason = d.inst.live.lock().kill_reason.clone().map(|c| c.to_string()).unwrap_or_default();
    assert!(reason.starts_with("protocol violation (ring"), "{reason}");
    assert!(d.conn.pending.lock().is_empty(), "the death left calls in flight");
    eprintln!("{answered} calls answered before the noise ended the driver: {reason}");
    // ddm goes on: another driver serves.
    let (mut other, others) = h.running("null", &["other0"]);
    let (ofh, _) = h.open(&mut other, others[0]);
    assert!(ofh.0 > fh.0);
}
