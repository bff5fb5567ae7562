//! One open file of an evdev node: its event queue, clock and masks, as
//! the kernel's `evdev.c` keeps them for each `struct evdev_client`; and the
//! clocks its time stamps are on. See [`super`] for the whole picture.

use std::collections::VecDeque;

use super::{mask_count, Bits};
use crate::input::evio::{CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLOCK_REALTIME, EV_CNT};
use crate::input::{InputEvent, EVENT_SIZE, EV_SYN, SYN_DROPPED, SYN_REPORT};

/// The clock of a client's time stamps (`EVIOCSCLOCKID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClockId {
    /// `CLOCK_REALTIME`, the default.
    #[default]
    Realtime,
    /// `CLOCK_MONOTONIC`.
    Monotonic,
    /// `CLOCK_BOOTTIME`.
    Boottime,
}

impl ClockId {
    /// The clock an `EVIOCSCLOCKID` argument names; `None` answers
    /// `EINVAL`, as the kernel does.
    pub fn from_raw(id: i32) -> Option<ClockId> {
        match id {
            CLOCK_REALTIME => Some(ClockId::Realtime),
            CLOCK_MONOTONIC => Some(ClockId::Monotonic),
            CLOCK_BOOTTIME => Some(ClockId::Boottime),
            _ => None,
        }
    }
}

/// One instant on the three clocks an evdev client may choose, in
/// nanoseconds (as the kernel stamps each event on all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// `CLOCK_REALTIME`.
    pub real_ns: i64,
    /// `CLOCK_MONOTONIC`.
    pub mono_ns: i64,
    /// `CLOCK_BOOTTIME`.
    pub boot_ns: i64,
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`, which is live
    // and exclusively borrowed; the clocks used here always exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    // `time_t` and `c_long` are i64 here, narrower on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (sec, nsec) = (i64::from(ts.tv_sec), i64::from(ts.tv_nsec));
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

impl Stamp {
    /// Now, on every clock.
    pub fn now() -> Stamp {
        let mono_ns = clock_ns(libc::CLOCK_MONOTONIC);
        Stamp { real_ns: clock_ns(libc::CLOCK_REALTIME), mono_ns, boot_ns: clock_ns(libc::CLOCK_BOOTTIME) }
    }

    /// The instant whose `CLOCK_REALTIME` time is `sec`.`usec` (an event's
    /// time stamp), on the other clocks as they stood relative to it at
    /// `reference`.
    pub fn from_realtime(sec: i64, usec: i64, reference: &Stamp) -> Stamp {
        let real_ns = sec.saturating_mul(1_000_000_000).saturating_add(usec.saturating_mul(1000));
        let shift = real_ns.saturating_sub(reference.real_ns);
        Stamp {
            real_ns,
            mono_ns: reference.mono_ns.saturating_add(shift),
            boot_ns: reference.boot_ns.saturating_add(shift),
        }
    }

    /// The `struct timeval` of this instant on `clock`: seconds and
    /// microseconds.
    pub fn timeval(&self, clock: ClockId) -> (i64, i64) {
        let ns = match clock {
            ClockId::Realtime => self.real_ns,
            ClockId::Monotonic => self.mono_ns,
            ClockId::Boottime => self.boot_ns,
        };
        (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) / 1000)
    }
}

// ---------------------------------------------------------------------------
// One open file.

/// The smallest queue a client gets: the kernel's `EVDEV_MIN_BUFFER_SIZE`.
pub const MIN_QUEUE: usize = 64;

/// One open file of an evdev node: its queue and settings. See the module
/// documentation.
#[derive(Debug, Clone)]
pub struct Client {
    /// Records in this client's clock.
    queue: VecDeque<InputEvent>,
    /// The records before this index are whole packets: readable.
    readable: usize,
    /// The ring's size: at most `size - 1` records are queued.
    size: usize,
    clock: ClockId,
    masks: Vec<Option<Bits>>,
    revoked: bool,
    lost: u64,
}

impl Client {
    /// A client whose ring holds `size` records (the kernel's `bufsize`;
    /// at least 2).
    pub fn new(size: usize) -> Client {
        Client {
            queue: VecDeque::new(),
            readable: 0,
            size: size.max(2),
            clock: ClockId::default(),
            masks: vec![None; EV_CNT],
            revoked: false,
            lost: 0,
        }
    }

    /// Events this client lost to overflows (not counting the
    /// `SYN_DROPPED` records that replaced them).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Whether a whole packet waits to be read.
    pub fn readable(&self) -> bool {
        self.readable > 0
    }

    /// Records queued now, readable or not.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether `EVIOCREVOKE` ended this file's access.
    pub fn revoked(&self) -> bool {
        self.revoked
    }

    /// Its clock.
    pub fn clock(&self) -> ClockId {
        self.clock
    }

    /// `__evdev_is_filtered`: whether the masks keep `ev_type`/`code` out.
    fn filtered(&self, ev_type: u16, code: u16) -> bool {
        if ev_type == EV_SYN || usize::from(ev_type) >= EV_CNT {
            return false;
        }
        if let Some(Some(types)) = self.masks.first() {
            if !types.test(ev_type) {
                return true;
            }
        }
        let cnt = mask_count(u32::from(ev_type));
        if cnt == 0 || usize::from(code) >= cnt {
            return false;
        }
        match self.masks.get(usize::from(ev_type)) {
            Some(Some(mask)) => !mask.test(code),
            _ => false,
        }
    }

    /// Queues one event of the device, stamped `at`; returns whether it
    /// completed a packet (readers should be woken). Mirrors
    /// `evdev_pass_values` and `__pass_event`.
    pub fn push(&mut self, ev: &InputEvent, at: &Stamp) -> bool {
        if self.revoked || self.filtered(ev.ev_type, ev.code) {
            return false;
        }
        let report = ev.ev_type == EV_SYN && ev.code == SYN_REPORT;
        // An empty packet is no packet.
        if report && self.readable == self.queue.len() {
            return false;
        }
        let (sec, usec) = at.timeval(self.clock);
        let record = InputEvent { sec, usec, ..*ev };
        if self.queue.len() + 1 >= self.size {
            // The ring is full: every unread event goes, SYN_DROPPED and
            // the newest event stay.
            self.lost += self.queue.iter().filter(|e| !is_dropped(e)).count() as u64;
            self.queue.clear();
            self.queue.push_back(InputEvent { sec, usec, ev_type: EV_SYN, code: SYN_DROPPED, value: 0 });
            self.readable = 0;
        }
        self.queue.push_back(record);
        if report {
            self.readable = self.queue.len();
        }
        report
    }

    /// Takes whole readable records, at most `max_bytes` of them, as bytes.
    pub fn read(&mut self, max_bytes: usize) -> Vec<u8> {
        let n = self.readable.min(max_bytes / EVENT_SIZE);
        self.readable -= n;
        let taken: Vec<InputEvent> = self.queue.drain(..n).collect();
        InputEvent::encode_records(&taken)
    }

    /// `__evdev_flush_queue`: drops the queued events of `ev_type`, and the
    /// packets that leaves empty.
    pub fn flush_type(&mut self, ev_type: u16) {
        let mut kept = VecDeque::with_capacity(self.queue.len());
        let mut readable = 0;
        // 1, so that a leading SYN_REPORT is kept.
        let mut in_packet = 1usize;
        for ev in self.queue.drain(..) {
            let report = ev.ev_type == EV_SYN && ev.code == SYN_REPORT;
            if ev.ev_type == ev_type || (report && in_packet == 0) {
                continue;
            }
            kept.push_back(ev);
            in_packet += 1;
            if report {
                in_packet = 0;
                readable = kept.len();
            }
        }
        self.queue = kept;
        self.readable = readable;
    }

    /// `EVIOCSCLOCKID`: a new clock discards what is queued and queues a
    /// `SYN_DROPPED` (readable with the next packet), as the kernel does.
    pub fn set_clock(&mut self, clock: ClockId, now: &Stamp) {
        if clock == self.clock {
            return;
        }
        self.clock = clock;
        if !self.queue.is_empty() {
            self.queue.clear();
            self.readable = 0;
            let (sec, usec) = now.timeval(clock);
            self.queue.push_back(InputEvent { sec, usec, ev_type: EV_SYN, code: SYN_DROPPED, value: 0 });
        }
    }

    /// `EVIOCREVOKE`: no more events, reads and ioctls answer `ENODEV`.
    pub fn revoke(&mut self) {
        self.revoked = true;
        self.queue.clear();
        self.readable = 0;
    }

    /// The mask set for `ev_type`, if any.
    pub(super) fn mask(&self, ev_type: u32) -> Option<&Bits> {
        self.masks.get(usize::try_from(ev_type).ok()?)?.as_ref()
    }

    /// `EVIOCSMASK` with the codes at hand.
    pub(super) fn set_mask(&mut self, ev_type: u32, codes: &[u8]) {
        let cnt = mask_count(ev_type);
        let (Ok(index), Ok(max)) = (usize::try_from(ev_type), u16::try_from(cnt.saturating_sub(1))) else {
            return;
        };
        if let Some(slot) = self.masks.get_mut(index) {
            *slot = Some(Bits::from_user(codes, max));
        }
    }
}

fn is_dropped(ev: &InputEvent) -> bool {
    ev.ev_type == EV_SYN && ev.code == SYN_DROPPED
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::tests::{at, key, records};
    use super::*;
    use crate::input::{EV_KEY, EV_MSC, KEY_A, KEY_B, MSC_SCAN};

    #[test]
    fn packets_are_readable_only_when_whole() {
        let mut c = Client::new(64);
        assert!(!c.push(&key(KEY_A, 1), &at(1)));
        assert!(!c.readable());
        assert!(c.read(4096).is_empty());
        assert!(c.push(&InputEvent::syn(), &at(1)));
        assert!(!c.push(&InputEvent::syn(), &at(1)), "an empty packet is dropped");
        c.push(&key(KEY_A, 0), &at(2));
        assert_eq!(records(&mut c), [(EV_KEY, KEY_A, 1), (EV_SYN, SYN_REPORT, 0)]);
        assert_eq!(c.queued(), 1, "the unfinished packet waits");
        c.push(&InputEvent::syn(), &at(2));
        // A read takes whole records only, never more than asked.
        assert_eq!(c.read(30).len(), EVENT_SIZE);
        assert_eq!(c.read(30).len(), EVENT_SIZE);
        assert!(c.read(30).is_empty());
    }

    #[test]
    fn an_overflow_leaves_syn_dropped_and_the_newest_event() {
        let mut c = Client::new(8); // 7 records fit
        for i in 0..3 {
            c.push(&key(KEY_A, 1 - (i % 2)), &at(1));
            c.push(&InputEvent::syn(), &at(1));
        }
        assert_eq!(c.queued(), 6);
        c.push(&key(KEY_B, 1), &at(2)); // 7: full ring minus one
        assert_eq!(c.lost(), 0);
        c.push(&InputEvent::syn(), &at(2)); // 8th: overflow
        assert_eq!(c.lost(), 7);
        assert_eq!(records(&mut c), [(EV_SYN, SYN_DROPPED, 0), (EV_SYN, SYN_REPORT, 0)]);
        // Overflow by a key: SYN_DROPPED waits for the packet's end.
        for _ in 0..3 {
            c.push(&key(KEY_A, 1), &at(3));
            c.push(&InputEvent::syn(), &at(3));
        }
        c.push(&key(KEY_B, 0), &at(3));
        c.push(&key(KEY_A, 0), &at(4)); // 8th: overflow by a key
        assert!(!c.readable());
        c.push(&InputEvent::syn(), &at(4));
        assert_eq!(records(&mut c), [(EV_SYN, SYN_DROPPED, 0), (EV_KEY, KEY_A, 0), (EV_SYN, SYN_REPORT, 0)]);
        assert_eq!(c.lost(), 14);
    }

    #[test]
    fn time_stamps_follow_the_clients_clock() {
        let mut c = Client::new(64);
        c.push(&key(KEY_A, 1), &at(7));
        c.push(&InputEvent::syn(), &at(7));
        let e = InputEvent::parse_records(&c.read(24)).unwrap()[0];
        assert_eq!((e.sec, e.usec), (7, 0));
        // A new clock discards what waits and queues SYN_DROPPED.
        c.set_clock(ClockId::Monotonic, &at(8));
        assert_eq!(c.queued(), 1);
        assert!(!c.readable());
        c.push(&key(KEY_A, 0), &at(9));
        c.push(&InputEvent::syn(), &at(9));
        let got = InputEvent::parse_records(&c.read(4096)).unwrap();
        assert_eq!((got[0].code, got[0].sec, got[0].usec), (SYN_DROPPED, 8, 5));
        assert_eq!((got[1].sec, got[1].usec), (9, 5));
        // The same clock again changes nothing.
        c.push(&key(KEY_A, 1), &at(9));
        c.set_clock(ClockId::Monotonic, &at(9));
        assert_eq!(c.queued(), 1);
        assert_eq!(ClockId::from_raw(CLOCK_BOOTTIME), Some(ClockId::Boottime));
        assert_eq!(ClockId::from_raw(2), None);
    }

    #[test]
    fn stamps_convert_between_clocks() {
        let reference = at(1000);
        let s = Stamp::from_realtime(1001, 250_000, &reference);
        assert_eq!(s.timeval(ClockId::Realtime), (1001, 250_000));
        assert_eq!(s.timeval(ClockId::Monotonic), (1001, 250_005));
        assert_eq!(s.timeval(ClockId::Boottime), (1001, 250_009));
        let now = Stamp::now();
        assert!(now.real_ns > 1_600_000_000 * 1_000_000_000 && now.mono_ns > 0 && now.boot_ns >= now.mono_ns);
        assert_eq!(Stamp { real_ns: -1, ..now }.timeval(ClockId::Realtime), (-1, 999_999));
    }

    #[test]
    fn flushing_a_type_drops_its_events_and_empty_packets() {
        let mut c = Client::new(64);
        c.push(&InputEvent::new(EV_MSC, MSC_SCAN, 30), &at(1));
        c.push(&key(KEY_A, 1), &at(1));
        c.push(&InputEvent::syn(), &at(1));
        c.push(&key(KEY_A, 0), &at(1));
        c.push(&InputEvent::syn(), &at(1));
        c.push(&key(KEY_B, 1), &at(1)); // an unfinished packet
        c.flush_type(EV_KEY);
        assert_eq!(records(&mut c), [(EV_MSC, MSC_SCAN, 30), (EV_SYN, SYN_REPORT, 0)]);
        assert_eq!(c.queued(), 0);
    }
}
