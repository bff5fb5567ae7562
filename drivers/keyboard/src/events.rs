//! The evdev side of a keyboard: what `/ddf/input/eventN` says it is, and
//! each handle opened on it.
//!
//! A keyboard's [`Node`] is its evdev identity and state
//! ([`ddf::input::evnode`]), how its source frames events into packets,
//! and who grabbed it. An [`EventReader`] is one handle: a kernel-style
//! event queue ([`Client`]) and the reads parked on it.
//!
//! The identities of the keyboards that have none of their own:
//!
//! | source | name | `input_id` (bus vendor product version) | `phys` | events |
//! |--------|------|------------------------------------------|--------|--------|
//! | virtual | `ddf virtual keyboard` | `BUS_VIRTUAL` 0 1 1 | `ddf/<name>N` | `EV_SYN`, `EV_KEY` (the 104 keys of a US keyboard, 105 with German's `<>` key), `EV_REP` |
//! | i8042, emulated | `ddf emulated AT keyboard` | `BUS_I8042` 1 1 0xab41 | `ddf/emulated-i8042/serio0` | `EV_SYN`, `EV_KEY` (what scancode set 1 has), `EV_REP` |
//! | i8042, real ports | `AT Translated Set 2 keyboard` | `BUS_I8042` 1 1 0xab41 | `isa0060/serio0/input0` | as emulated |
//!
//! None of them has a `uniq` (`EVIOCGUNIQ` answers `ENOENT`). A keyboard
//! read from the kernel's evdev mirrors the real device's identity and
//! state instead (read with the same ioctls at start).
//!
//! `EV_REP` gives the kernel's default delay and period (250 ms, 33 ms),
//! which `EVIOCSREP` changes (every reader then gets the `EV_REP` events,
//! as from the kernel). Repeats are what the source sends: the virtual
//! keyboard repeats only when its writer writes repeat records (value 2),
//! and does no autorepeat of its own, because then `ddmctl type` would
//! repeat a key whenever a loaded machine paused between two of its writes
//! longer than the delay. A mirror's `EVIOCSREP` changes what the node
//! reports, not the real keyboard.

use std::collections::VecDeque;

use ddf::input::evio::{InputId, BUS_I8042, BUS_VIRTUAL, REP_DELAY, REP_PERIOD};
use ddf::input::evnode::{Client, Identity, Stamp, State};
use ddf::input::{InputEvent, KeyAction, Layout, EVENT_SIZE, EV_KEY, EV_REP, EV_SYN};
use ddf::proto::{Errno, RequestId};

use crate::hub::{PendingRead, MAX_PARKED};

/// How a source groups its events into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The source's own `SYN_REPORT`s end packets and every event type it
    /// has passes (a mirrored evdev device).
    Source,
    /// Only key events count, and each is a packet of its own (virtual and
    /// i8042 keyboards).
    PerKey,
}

/// A keyboard as an evdev device.
#[derive(Debug)]
pub struct Node {
    /// What it says it is.
    pub identity: Identity,
    /// What is down and on (`state.key` is every key down, also keys the
    /// identity does not list: the text node's view).
    pub state: State,
    /// How its source frames events.
    pub framing: Framing,
    /// The handle that grabbed it (`EVIOCGRAB`): it alone gets events.
    pub grab: Option<ddf::proto::Handle>,
}

impl Node {
    /// A node with `identity`, everything up and off.
    pub fn new(identity: Identity, framing: Framing) -> Node {
        Node { identity, state: State::default(), framing, grab: None }
    }

    /// Applies a key action to the key state; `false` if it contradicts
    /// it (a press of a key already down, a release or repeat of a key
    /// that is up) and must be dropped, as the kernel drops it.
    pub fn apply_key(&mut self, code: u16, action: KeyAction) -> bool {
        let down = self.state.key.test(code);
        match action {
            KeyAction::Press if !down => self.state.key.set(code, true),
            KeyAction::Release if down => self.state.key.set(code, false),
            KeyAction::Repeat if down => {}
            KeyAction::Press | KeyAction::Release | KeyAction::Repeat => return false,
        }
        code <= ddf::input::KEY_MAX
    }

    /// `EVIOCSREP`: the `EV_REP` events (with their `SYN_REPORT`) that the
    /// change makes, applied to the state; empty if nothing changed.
    pub fn set_rep(&mut self, delay: u32, period: u32) -> Vec<InputEvent> {
        let mut out = Vec::new();
        for (code, value) in [(REP_DELAY, delay), (REP_PERIOD, period)] {
            // A value above i32::MAX is a negative value: ignored.
            let ev = InputEvent::new(EV_REP, code, value as i32);
            if self.state.apply(&self.identity.caps, &ev) {
                out.push(ev);
            }
        }
        if !out.is_empty() {
            out.push(InputEvent::syn());
        }
        out
    }
}

fn with_caps(mut identity: Identity, keys: impl IntoIterator<Item = u16>) -> Identity {
    for t in [EV_SYN, EV_KEY, EV_REP] {
        identity.caps.ev.set(t, true);
    }
    for k in keys {
        identity.caps.key.set(k, true);
    }
    identity
}

/// The identity of a virtual keyboard named `name` with `layout`.
pub fn virtual_identity(name: &str, layout: Layout) -> Identity {
    let id = InputId { bustype: BUS_VIRTUAL, vendor: 0, product: 1, version: 1 };
    let mut identity = with_caps(Identity::new("ddf virtual keyboard", id), layout.physical_keys());
    identity.phys = Some(format!("ddf/{name}"));
    identity
}

/// The identity of an i8042 keyboard (`emulated` or on the real ports)
/// that sends the keys `keys`.
pub fn i8042_identity(emulated: bool, keys: impl IntoIterator<Item = u16>) -> Identity {
    let id = InputId { bustype: BUS_I8042, vendor: 1, product: 1, version: 0xab41 };
    let (name, phys) = if emulated {
        ("ddf emulated AT keyboard", "ddf/emulated-i8042/serio0")
    } else {
        ("AT Translated Set 2 keyboard", "isa0060/serio0/input0")
    };
    let mut identity = with_caps(Identity::new(name, id), keys);
    identity.phys = Some(phys.to_owned());
    identity
}

/// One handle on an evdev node.
#[derive(Debug)]
pub struct EventReader<R> {
    /// The keyboard's index.
    pub keyboard: usize,
    /// Opened for reading (write-only handles get no events).
    pub reading: bool,
    /// Its queue and settings.
    pub client: Client,
    /// Reads waiting for a packet, answered in order.
    pub parked: VecDeque<R>,
}

impl<R: PendingRead> EventReader<R> {
    /// A handle on keyboard `keyboard` with a ring of `size` events.
    pub fn new(keyboard: usize, reading: bool, size: usize) -> EventReader<R> {
        EventReader { keyboard, reading, client: Client::new(size), parked: VecDeque::new() }
    }

    /// A read, as `evdev_read` answers it: whole records of whole packets;
    /// `EINVAL` for a buffer shorter than a record, `ENODEV` once the
    /// device is gone or the handle revoked, `EAGAIN` without a packet for
    /// a caller that must not wait; else it waits (parked).
    pub fn read(&mut self, gone: bool, reply: R) {
        let max = reply.max_len() as usize;
        if !self.reading {
            reply.error(Errno::EBADF);
        } else if max != 0 && max < EVENT_SIZE {
            reply.error(Errno::EINVAL);
        } else if gone || self.client.revoked() {
            reply.error(Errno::ENODEV);
        } else if self.client.readable() {
            let bytes = self.client.read(max);
            reply.data(&bytes);
        } else if reply.nonblocking() {
            reply.error(Errno::EAGAIN);
        } else if max == 0 {
            reply.data(&[]);
        } else if self.parked.len() >= MAX_PARKED {
            reply.error(Errno::ENOBUFS);
        } else {
            self.parked.push_back(reply);
        }
    }

    /// Queues `events` (with their stamps) and answers parked reads;
    /// returns whether a packet arrived, and how many events the queue lost
    /// to an overflow meanwhile.
    pub fn push_all(&mut self, events: &[(InputEvent, Stamp)]) -> (bool, u64) {
        if !self.reading {
            return (false, 0);
        }
        let before = self.client.lost();
        let mut packet = false;
        for (ev, at) in events {
            packet |= self.client.push(ev, at);
        }
        self.answer_parked();
        (packet, self.client.lost() - before)
    }

    /// Answers parked reads while packets wait.
    pub fn answer_parked(&mut self) {
        while self.client.readable() {
            let Some(reply) = self.parked.pop_front() else {
                break;
            };
            let bytes = self.client.read(reply.max_len() as usize);
            reply.data(&bytes);
        }
    }

    /// Ends every parked read with `err`.
    pub fn fail_parked(&mut self, err: Errno) {
        for reply in self.parked.drain(..) {
            reply.error(err);
        }
    }

    /// Ends the parked read `id` with `EINTR`; whether it was here.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        match self.parked.iter().position(|r| r.id() == id) {
            Some(i) => {
                if let Some(reply) = self.parked.remove(i) {
                    reply.error(Errno::EINTR);
                }
                true
            }
            None => false,
        }
    }
}

/// Parses a write to a virtual keyboard's evdev node as `evdev_write`
/// takes it: whole 24-byte records (a trailing partial record is not
/// taken), `EINVAL` for less than one. Returns the key events to type
/// (codes 1 to `KEY_MAX`, values 0, 1 or 2; every other record is taken
/// and ignored, as the input core ignores events a device does not have)
/// and the bytes taken.
pub fn parse_write(data: &[u8]) -> Result<(Vec<InputEvent>, usize), Errno> {
    if !data.is_empty() && data.len() < EVENT_SIZE {
        return Err(Errno::EINVAL);
    }
    let whole = data.len() - data.len() % EVENT_SIZE;
    let records = InputEvent::parse_records(&data[..whole]).map_err(|_| Errno::EINVAL)?;
    let keys = records
        .into_iter()
        .filter(|e| e.ev_type == EV_KEY && (1..=ddf::input::KEY_MAX).contains(&e.code))
        .filter_map(|e| e.key_action().map(|(code, action)| InputEvent::key(code, action)))
        .collect();
    Ok((keys, whole))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use ddf::input::EV_LED;
    use ddf::input::{KEY_102ND, KEY_A, KEY_MAX};

    use super::*;

    #[test]
    fn identities_say_what_they_are() {
        let us = virtual_identity("keyboard0", Layout::Us);
        assert_eq!(
            (us.name.as_str(), us.id.bustype, us.phys.as_deref()),
            ("ddf virtual keyboard", 6, Some("ddf/keyboard0"))
        );
        assert!(us.caps.supports(EV_KEY, KEY_A) && us.caps.ev.test(EV_REP) && !us.caps.ev.test(EV_LED));
        assert!(!us.caps.key.test(KEY_102ND), "a US keyboard has 104 keys");
        assert!(virtual_identity("k", Layout::De).caps.key.test(KEY_102ND));
        assert_eq!(us.uniq, None);
        let real = i8042_identity(false, [KEY_A]);
        assert_eq!((real.name.as_str(), real.id.bustype), ("AT Translated Set 2 keyboard", BUS_I8042));
    }

    #[test]
    fn key_state_drops_contradictions_and_rep_changes_make_events() {
        let mut node = Node::new(virtual_identity("k", Layout::Us), Framing::PerKey);
        assert!(!node.apply_key(KEY_A, KeyAction::Release));
        assert!(node.apply_key(KEY_A, KeyAction::Press));
        assert!(!node.apply_key(KEY_A, KeyAction::Press));
        assert!(node.apply_key(KEY_A, KeyAction::Repeat));
        assert!(node.apply_key(KEY_A, KeyAction::Release));
        assert!(!node.apply_key(KEY_MAX + 1, KeyAction::Press));
        let evs = node.set_rep(500, 33);
        assert_eq!(evs, [InputEvent::new(EV_REP, REP_DELAY, 500), InputEvent::syn()]);
        assert!(node.set_rep(500, 33).is_empty());
        assert!(node.set_rep(u32::MAX, 33).is_empty(), "negative values are ignored");
        assert_eq!(node.state.rep, [500, 33]);
    }

    #[test]
    fn writes_are_whole_records() {
        let rec = |t, c, v| InputEvent::new(t, c, v).to_bytes().to_vec();
        let mut data = [rec(EV_KEY, KEY_A, 1), rec(EV_SYN, 0, 0), rec(EV_LED, 1, 1), rec(EV_KEY, KEY_A, 9)].concat();
        data.extend_from_slice(&[1, 2, 3]);
        let (keys, taken) = parse_write(&data).unwrap();
        assert_eq!(keys, [InputEvent::key(KEY_A, KeyAction::Press)]);
        assert_eq!(taken, 4 * EVENT_SIZE);
        assert_eq!(parse_write(&[0; 23]), Err(Errno::EINVAL));
        assert_eq!(parse_write(&[]), Ok((vec![], 0)));
    }
}
