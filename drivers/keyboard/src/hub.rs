//! The fan-out of keys to readers: decoding, per-handle buffers and event
//! queues, parked reads, grabs, losses.
//!
//! A [`Hub`] knows the keyboards (one layout [`Decoder`] and one evdev
//! [`Node`] each) and every open handle, of either node of a keyboard:
//! the text node (`keyboard0`) or the evdev node (`input/event0`). Events
//! from any source enter through [`Hub::deliver`]; each keyboard filters
//! and decodes them once, and every reading handle of that keyboard gets a
//! copy in its own format: text bytes or 24-byte event records ([`Mode`])
//! on the text node, evdev packets on the evdev node. A handle only sees
//! events delivered after it was opened.
//!
//! Each text handle's buffer is bounded (the `buffer` parameter, rounded
//! down to whole records in raw mode). When a delivery does not fit, the
//! handle's **oldest** bytes are dropped to make room, and the loss is
//! counted for the handle, its keyboard, and the driver. Each evdev handle
//! has a ring of `event_buffer` events with the kernel's rules (see
//! [`ddf::input::evnode::Client`]): an overflow drops every unread event
//! and leaves `SYN_DROPPED`; the lost events are counted per handle,
//! keyboard and driver. A slow reader never holds up the driver or
//! another reader.
//!
//! A read with nothing pending is parked (up to [`MAX_PARKED`] per handle,
//! answered in order) until keys arrive; a non-blocking read gets `EAGAIN`.
//! The hub is generic over the reply type ([`PendingRead`]) so that all of
//! this is tested without a DDM.

use std::collections::{BTreeMap, VecDeque};

use ddf::driver::ReadReply;
use ddf::input::evnode::{self, Answer, ClockId, Effect, Stamp};
use ddf::input::keyboard::{Mode, Stats};
use ddf::input::{Decoder, InputEvent, KeyAction, Layout, EVENT_SIZE, EV_KEY, EV_MSC, EV_SYN, KEY_MAX};
use ddf::proto::{Errno, Handle, RequestId};
use log::{debug, info, warn};

use crate::events::{EventReader, Framing, Node};

/// Reads parked per handle at most; more get `ENOBUFS`.
pub const MAX_PARKED: usize = 64;

/// A read the hub may answer now or keep: [`ReadReply`] in the driver, a
/// recorder in tests.
pub trait PendingRead {
    /// The request id (to match a cancel).
    fn id(&self) -> RequestId;
    /// The most bytes the caller takes.
    fn max_len(&self) -> u32;
    /// Whether the caller must not be kept waiting (`O_NONBLOCK`).
    fn nonblocking(&self) -> bool;
    /// Answers with bytes.
    fn data(self, data: &[u8]);
    /// Answers with an error.
    fn error(self, err: Errno);
}

impl PendingRead for ReadReply {
    fn id(&self) -> RequestId {
        ReadReply::id(self)
    }

    fn max_len(&self) -> u32 {
        ReadReply::max_len(self)
    }

    fn nonblocking(&self) -> bool {
        ReadReply::nonblocking(self)
    }

    fn data(self, data: &[u8]) {
        ReadReply::data(self, data)
    }

    fn error(self, err: Errno) {
        ReadReply::error(self, err)
    }
}

#[derive(Debug)]
struct Keyboard {
    name: String,
    decoder: Decoder,
    node: Node,
    /// Bytes lost by all its text handles, closed ones included.
    lost: u64,
    /// Events lost by all its evdev handles, closed ones included.
    lost_events: u64,
    /// The device went away (unplugged).
    gone: bool,
}

#[derive(Debug)]
struct Reader<R> {
    keyboard: usize,
    /// Opened for reading (write-only handles get no copy of the keys).
    reading: bool,
    mode: Mode,
    buf: VecDeque<u8>,
    lost: u64,
    parked: VecDeque<R>,
}

impl<R: PendingRead> Reader<R> {
    /// Appends `data`, dropping the oldest bytes beyond `capacity`; returns
    /// how many were dropped.
    fn push(&mut self, data: &[u8], capacity: usize) -> u64 {
        let keep = data.len().min(capacity);
        let skipped = data.len() - keep;
        let over = (self.buf.len() + keep).saturating_sub(capacity);
        self.buf.drain(..over);
        self.buf.extend(&data[skipped..]);
        (over + skipped) as u64
    }

    /// Answers `reply` from the buffer (which must not be empty).
    fn answer(&mut self, reply: R) {
        let mut n = self.buf.len().min(reply.max_len() as usize);
        if self.mode == Mode::Raw {
            n -= n % EVENT_SIZE;
        }
        if n == 0 {
            // Only a raw read shorter than one record gets here.
            reply.error(Errno::EINVAL);
            return;
        }
        let bytes: Vec<u8> = self.buf.drain(..n).collect();
        reply.data(&bytes);
    }

    /// Answers parked reads while there are bytes.
    fn answer_parked(&mut self) {
        while !self.buf.is_empty() {
            match self.parked.pop_front() {
                Some(reply) => self.answer(reply),
                None => break,
            }
        }
    }
}

/// What [`Driver::poll`](ddf::driver::Driver::poll) needs to know of a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollState {
    /// Bytes (or a whole packet of events) are pending.
    pub readable: bool,
    /// The keyboard is gone (or the evdev handle revoked).
    pub hung_up: bool,
}

/// Which node of its keyboard a handle is open on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// The text node (`keyboard0`).
    Text,
    /// The evdev node (`input/event0`).
    Events,
}

/// The keyboards and their readers. See the module documentation.
#[derive(Debug)]
pub struct Hub<R> {
    keyboards: Vec<Keyboard>,
    readers: BTreeMap<Handle, Reader<R>>,
    events: BTreeMap<Handle, EventReader<R>>,
    next_handle: Handle,
    capacity: usize,
    event_buffer: usize,
    lost_driver: u64,
    lost_events_driver: u64,
}

impl<R: PendingRead> Hub<R> {
    /// A hub whose text handles buffer up to `capacity` bytes (at least one
    /// record's worth) and whose evdev handles hold `event_buffer` events.
    pub fn new(capacity: usize, event_buffer: usize) -> Hub<R> {
        Hub {
            keyboards: Vec::new(),
            readers: BTreeMap::new(),
            events: BTreeMap::new(),
            next_handle: Handle(1),
            capacity: capacity.max(EVENT_SIZE),
            event_buffer,
            lost_driver: 0,
            lost_events_driver: 0,
        }
    }

    /// Adds a keyboard named `name` (for logs) decoding with `decoder`,
    /// whose evdev node is `node`; returns its index.
    pub fn add_keyboard(&mut self, name: &str, decoder: Decoder, node: Node) -> usize {
        self.keyboards.push(Keyboard { name: name.to_owned(), decoder, node, lost: 0, lost_events: 0, gone: false });
        self.keyboards.len() - 1
    }

    /// The layout keyboard `kbd` decodes with.
    pub fn layout(&self, kbd: usize) -> Option<Layout> {
        self.keyboards.get(kbd).map(|k| k.decoder.layout())
    }

    fn take_handle(&mut self, kbd: usize) -> Result<Handle, Errno> {
        let keyboard = self.keyboards.get(kbd).ok_or(Errno::ENXIO)?;
        if keyboard.gone {
            return Err(Errno::ENODEV);
        }
        let handle = self.next_handle;
        self.next_handle.0 += 1;
        Ok(handle)
    }

    /// Opens a handle on keyboard `kbd`'s text node. A `reading` handle
    /// receives every key delivered from now on; a write-only one receives
    /// none.
    pub fn open(&mut self, kbd: usize, reading: bool) -> Result<Handle, Errno> {
        let handle = self.take_handle(kbd)?;
        self.readers.insert(
            handle,
            Reader { keyboard: kbd, reading, mode: Mode::Text, buf: VecDeque::new(), lost: 0, parked: VecDeque::new() },
        );
        debug!("{}: handle {handle} opened", self.name(kbd));
        Ok(handle)
    }

    /// Opens a handle on keyboard `kbd`'s evdev node.
    pub fn open_events(&mut self, kbd: usize, reading: bool) -> Result<Handle, Errno> {
        let handle = self.take_handle(kbd)?;
        self.events.insert(handle, EventReader::new(kbd, reading, self.event_buffer));
        debug!("{}: evdev handle {handle} opened", self.name(kbd));
        Ok(handle)
    }

    /// The keyboard of `handle`, and which of its nodes it is open on.
    pub fn keyboard_of(&self, handle: Handle) -> Option<(usize, NodeKind)> {
        match (self.readers.get(&handle), self.events.get(&handle)) {
            (Some(r), _) => Some((r.keyboard, NodeKind::Text)),
            (None, Some(e)) => Some((e.keyboard, NodeKind::Events)),
            (None, None) => None,
        }
    }

    /// Closes `handle`; its parked reads end with `EBADF`, its grab ends.
    pub fn close(&mut self, handle: Handle) {
        if let Some(reader) = self.readers.remove(&handle) {
            let name = self.name(reader.keyboard);
            if reader.lost > 0 {
                info!("{name}: handle {handle} closed; it lost {} bytes to a full buffer", reader.lost);
            } else {
                debug!("{name}: handle {handle} closed");
            }
            for reply in reader.parked {
                reply.error(Errno::EBADF);
            }
        } else if let Some(mut reader) = self.events.remove(&handle) {
            let lost = reader.client.lost();
            reader.fail_parked(Errno::EBADF);
            if let Some(k) = self.keyboards.get_mut(reader.keyboard) {
                if k.node.grab == Some(handle) {
                    k.node.grab = None;
                }
                if lost > 0 {
                    info!("{}: evdev handle {handle} closed; it lost {lost} events to a full queue", k.name);
                } else {
                    debug!("{}: evdev handle {handle} closed", k.name);
                }
            }
        }
    }

    /// Reads from `handle`: pending bytes (or packets) now, else `EAGAIN`
    /// if the caller must not wait, else later (parked).
    pub fn read(&mut self, handle: Handle, reply: R) {
        if let Some(reader) = self.events.get_mut(&handle) {
            let gone = self.keyboards.get(reader.keyboard).is_none_or(|k| k.gone);
            reader.read(gone, reply);
            return;
        }
        let Some(reader) = self.readers.get_mut(&handle) else {
            reply.error(Errno::EBADF);
            return;
        };
        let gone = self.keyboards.get(reader.keyboard).is_none_or(|k| k.gone);
        if !reader.reading {
            reply.error(Errno::EBADF);
        } else if reply.max_len() == 0 {
            reply.data(&[]);
        } else if reader.mode == Mode::Raw && (reply.max_len() as usize) < EVENT_SIZE {
            reply.error(Errno::EINVAL);
        } else if !reader.buf.is_empty() {
            reader.answer(reply);
        } else if gone {
            reply.error(Errno::ENODEV);
        } else if reply.nonblocking() {
            reply.error(Errno::EAGAIN);
        } else if reader.parked.len() >= MAX_PARKED {
            reply.error(Errno::ENOBUFS);
        } else {
            reader.parked.push_back(reply);
        }
    }

    /// The caller of request `id` gave up: its parked read ends with
    /// `EINTR`. Returns whether one was found.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        for reader in self.readers.values_mut() {
            if let Some(i) = reader.parked.iter().position(|r| r.id() == id) {
                if let Some(reply) = reader.parked.remove(i) {
                    reply.error(Errno::EINTR);
                }
                return true;
            }
        }
        self.events.values_mut().any(|r| r.cancel(id))
    }

    /// Events from keyboard `kbd`'s source. Key events count only as
    /// press, release or repeat, and only when consistent with which keys
    /// are down; the evdev node also gets, for a source that frames its
    /// own packets, every other event the device has. Events without a
    /// time stamp are stamped now; the others carry `CLOCK_REALTIME`
    /// stamps. Returns the handles that got something (for poll wake-ups).
    pub fn deliver(&mut self, kbd: usize, events: &[InputEvent]) -> Vec<Handle> {
        let Some(keyboard) = self.keyboards.get_mut(kbd) else {
            return Vec::new();
        };
        let now = Stamp::now();
        let framing = keyboard.node.framing;
        let mut text = Vec::new();
        let mut raw = Vec::new();
        let mut packets: Vec<(InputEvent, Stamp)> = Vec::new();
        for ev in events {
            let at = if ev.sec == 0 && ev.usec == 0 { now } else { Stamp::from_realtime(ev.sec, ev.usec, &now) };
            let (sec, usec) = at.timeval(ClockId::Realtime);
            let ev = InputEvent { sec, usec, ..*ev };
            if let Some((code, action)) = ev.key_action() {
                if !keyboard.node.apply_key(code, action) {
                    continue;
                }
                keyboard.decoder.feed(&ev, &mut text);
                raw.extend_from_slice(&ev.to_bytes());
                if keyboard.node.identity.caps.supports(EV_KEY, code) {
                    packets.push((ev, at));
                    if framing == Framing::PerKey {
                        packets.push((InputEvent::syn(), at));
                    }
                }
            } else if framing == Framing::Source
                && ev.ev_type != EV_KEY
                && keyboard.node.state.apply(&keyboard.node.identity.caps, &ev)
            {
                packets.push((ev, at));
            }
        }
        let grab = keyboard.node.grab;
        let mut woken = Vec::new();
        if !raw.is_empty() && grab.is_none() {
            for (&handle, reader) in self.readers.iter_mut() {
                if reader.keyboard != kbd || !reader.reading {
                    continue;
                }
                let (data, capacity) = match reader.mode {
                    Mode::Text => (&text, self.capacity),
                    Mode::Raw => (&raw, self.capacity - self.capacity % EVENT_SIZE),
                };
                if data.is_empty() {
                    continue;
                }
                let lost = reader.push(data, capacity);
                if lost > 0 {
                    if reader.lost == 0 {
                        warn!(
                            "{}: handle {handle} reads too slowly: its buffer of {capacity} bytes is full, \
                             dropping its oldest bytes (counted)",
                            keyboard.name
                        );
                    }
                    debug!("{}: handle {handle} lost {lost} bytes", keyboard.name);
                    reader.lost += lost;
                    keyboard.lost += lost;
                    self.lost_driver += lost;
                }
                reader.answer_parked();
                woken.push(handle);
            }
        }
        if !packets.is_empty() {
            woken.extend(Self::fan_out(&mut self.events, keyboard, kbd, &packets, &mut self.lost_events_driver));
        }
        woken
    }

    /// Queues `packets` on every evdev handle of keyboard `kbd` (only the
    /// grabbing one, if there is a grab); returns the handles that got a
    /// packet.
    fn fan_out(
        events: &mut BTreeMap<Handle, EventReader<R>>,
        keyboard: &mut Keyboard,
        kbd: usize,
        packets: &[(InputEvent, Stamp)],
        lost_driver: &mut u64,
    ) -> Vec<Handle> {
        let mut woken = Vec::new();
        for (&handle, reader) in events.iter_mut() {
            if reader.keyboard != kbd || keyboard.node.grab.is_some_and(|g| g != handle) {
                continue;
            }
            let (packet, lost) = reader.push_all(packets);
            if lost > 0 {
                if reader.client.lost() == lost {
                    warn!(
                        "{}: evdev handle {handle} reads too slowly: its queue is full, dropping its unread \
                         events (SYN_DROPPED, counted)",
                        keyboard.name
                    );
                }
                keyboard.lost_events += lost;
                *lost_driver += lost;
            }
            if packet {
                woken.push(handle);
            }
        }
        woken
    }

    /// An evdev ioctl on `handle`, answered as the kernel's evdev does
    /// ([`evnode::ioctl`]), with what it asks of the other handles applied:
    /// grabs (`EBUSY` while another handle holds one), revocation, new
    /// autorepeat settings (every reader gets the `EV_REP` events), new axis
    /// limits. Returns the answer and the handles to wake.
    pub fn ioctl_events(
        &mut self,
        handle: Handle,
        cmd: u32,
        input: &[u8],
        out_len: usize,
    ) -> (Result<Answer, Errno>, Vec<Handle>) {
        let Some(reader) = self.events.get_mut(&handle) else {
            return (Err(Errno::EBADF), Vec::new());
        };
        let kbd = reader.keyboard;
        let Some(keyboard) = self.keyboards.get_mut(kbd) else {
            return (Err(Errno::EBADF), Vec::new());
        };
        if keyboard.gone {
            return (Err(Errno::ENODEV), Vec::new());
        }
        let now = Stamp::now();
        let node = &mut keyboard.node;
        let answer = match evnode::ioctl(&node.identity, &node.state, &mut reader.client, cmd, input, out_len, &now) {
            Ok(a) => a,
            Err(e) => return (Err(e), Vec::new()),
        };
        let mut woken = Vec::new();
        match answer.effect {
            Effect::None => {}
            Effect::Grab if node.grab.is_some() => return (Err(Errno(libc::EBUSY)), woken),
            Effect::Grab => {
                debug!("{}: evdev handle {handle} grabbed the keyboard", keyboard.name);
                node.grab = Some(handle);
            }
            Effect::Ungrab if node.grab != Some(handle) => return (Err(Errno::EINVAL), woken),
            Effect::Ungrab => node.grab = None,
            Effect::Revoke => {
                reader.fail_parked(Errno::ENODEV);
                if node.grab == Some(handle) {
                    node.grab = None;
                }
                woken.push(handle);
            }
            Effect::SetRep { delay, period } => {
                let events = node.set_rep(delay, period);
                if !events.is_empty() {
                    let packets: Vec<(InputEvent, Stamp)> = events.into_iter().map(|e| (e, now)).collect();
                    woken = Self::fan_out(&mut self.events, keyboard, kbd, &packets, &mut self.lost_events_driver);
                }
            }
            Effect::SetAbs { abs, info } => {
                node.identity.absinfo.insert(abs, info);
            }
        }
        (Ok(answer), woken)
    }

    /// Keyboard `kbd` went away: reads of its text handles give what is
    /// pending, then `ENODEV` (evdev handles: `ENODEV` at once, as the
    /// kernel's); parked reads end now. Returns the handles to wake.
    pub fn keyboard_gone(&mut self, kbd: usize) -> Vec<Handle> {
        let Some(keyboard) = self.keyboards.get_mut(kbd) else {
            return Vec::new();
        };
        keyboard.gone = true;
        let mut woken = Vec::new();
        for (&handle, reader) in self.readers.iter_mut() {
            if reader.keyboard == kbd {
                for reply in reader.parked.drain(..) {
                    reply.error(Errno::ENODEV);
                }
                woken.push(handle);
            }
        }
        for (&handle, reader) in self.events.iter_mut() {
            if reader.keyboard == kbd {
                reader.fail_parked(Errno::ENODEV);
                woken.push(handle);
            }
        }
        woken
    }

    /// What `poll` reports for `handle`; `None` for an unknown handle.
    pub fn poll_state(&self, handle: Handle) -> Option<PollState> {
        let (kbd, readable, revoked) = match (self.readers.get(&handle), self.events.get(&handle)) {
            (Some(r), _) => (r.keyboard, !r.buf.is_empty(), false),
            (None, Some(e)) => (e.keyboard, e.client.readable(), e.client.revoked()),
            (None, None) => return None,
        };
        let gone = self.keyboards.get(kbd).is_none_or(|k| k.gone);
        Some(PollState { readable, hung_up: gone || revoked })
    }

    /// Switches `handle` to `mode`. A change discards what is pending (it
    /// is in the other format); setting the current mode changes nothing.
    pub fn set_mode(&mut self, handle: Handle, mode: Mode) -> Result<(), Errno> {
        let reader = self.readers.get_mut(&handle).ok_or(Errno::EBADF)?;
        if reader.mode != mode {
            debug!(
                "{}: handle {handle} now in {mode:?} mode; {} pending bytes discarded",
                self.keyboards.get(reader.keyboard).map_or("?", |k| &k.name),
                reader.buf.len()
            );
            reader.mode = mode;
            reader.buf.clear();
        }
        Ok(())
    }

    /// The mode of `handle`.
    pub fn mode(&self, handle: Handle) -> Result<Mode, Errno> {
        self.readers.get(&handle).map(|r| r.mode).ok_or(Errno::EBADF)
    }

    /// The loss counters as seen from `handle`.
    pub fn stats(&self, handle: Handle) -> Result<Stats, Errno> {
        let reader = self.readers.get(&handle).ok_or(Errno::EBADF)?;
        Ok(Stats {
            lost: reader.lost,
            lost_device: self.keyboards.get(reader.keyboard).map_or(0, |k| k.lost),
            lost_driver: self.lost_driver,
            pending: reader.buf.len() as u64,
        })
    }

    /// Bytes lost by every text handle of every keyboard since the start.
    pub fn lost_driver(&self) -> u64 {
        self.lost_driver
    }

    /// Events lost by every evdev handle of every keyboard since the start.
    pub fn lost_events_driver(&self) -> u64 {
        self.lost_events_driver
    }

    /// Events lost by the evdev handles of keyboard `kbd`.
    #[cfg(test)]
    pub fn lost_events(&self, kbd: usize) -> u64 {
        self.keyboards.get(kbd).map_or(0, |k| k.lost_events)
    }

    /// Sets keyboard `kbd`'s key state to `down` (after its source lost
    /// events): no key stays stuck, in the decoder either.
    pub fn resync_keys(&mut self, kbd: usize, down: &ddf::input::evnode::Bits) {
        if let Some(k) = self.keyboards.get_mut(kbd) {
            k.node.state.key = down.clone();
            k.decoder.resync(|code| down.test(code));
        }
    }

    /// Ends every parked read with `err` (the driver is stopping).
    pub fn fail_parked(&mut self, err: Errno) {
        for reader in self.readers.values_mut() {
            for reply in reader.parked.drain(..) {
                reply.error(err);
            }
        }
        for reader in self.events.values_mut() {
            reader.fail_parked(err);
        }
    }

    fn name(&self, kbd: usize) -> &str {
        self.keyboards.get(kbd).map_or("?", |k| &k.name)
    }
}

/// Checks a write to a virtual keyboard's text node and returns the key
/// events in it.
///
/// The write must be whole 24-byte `input_event` records. `EV_KEY` records
/// need a key code from 1 to `KEY_MAX` and a value of 0, 1 or 2; `EV_SYN`
/// and `EV_MSC` records are accepted and skipped; anything else makes the
/// whole write `EINVAL`, and nothing of it is injected. Time stamps are
/// ignored (the hub stamps the events on arrival, as uinput does).
pub fn parse_injection(data: &[u8]) -> Result<Vec<InputEvent>, Errno> {
    let records = InputEvent::parse_records(data).map_err(|_| Errno::EINVAL)?;
    let mut keys = Vec::with_capacity(records.len());
    for ev in records {
        match ev.ev_type {
            EV_SYN | EV_MSC => {}
            EV_KEY if (1..=KEY_MAX).contains(&ev.code) && KeyAction::from_value(ev.value).is_some() => {
                keys.push(InputEvent::new(EV_KEY, ev.code, ev.value));
            }
            _ => return Err(Errno::EINVAL),
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::cell::RefCell;
    use std::rc::Rc;

    use ddf::input::evio;
    use ddf::input::{text_to_events, EV_LED, EV_REP, KEY_A, KEY_B, KEY_LEFTSHIFT, LED_CAPSL, SYN_DROPPED, SYN_REPORT};

    use super::*;
    use crate::events::virtual_identity;

    type Answers = Rc<RefCell<Vec<(RequestId, Result<Vec<u8>, Errno>)>>>;

    /// A reply that records how it was answered.
    #[derive(Debug)]
    struct Probe {
        id: RequestId,
        max: u32,
        nonblocking: bool,
        answers: Answers,
    }

    impl PendingRead for Probe {
        fn id(&self) -> RequestId {
            self.id
        }
        fn max_len(&self) -> u32 {
            self.max
        }
        fn nonblocking(&self) -> bool {
            self.nonblocking
        }
        fn data(self, data: &[u8]) {
            self.answers.borrow_mut().push((self.id, Ok(data.to_vec())));
        }
        fn error(self, err: Errno) {
            self.answers.borrow_mut().push((self.id, Err(err)));
        }
    }

    struct Bench {
        hub: Hub<Probe>,
        answers: Answers,
        next_id: u64,
    }

    impl Bench {
        fn new(capacity: usize, keyboards: usize) -> Bench {
            let mut hub = Hub::new(capacity, 16);
            for i in 0..keyboards {
                let name = format!("keyboard{i}");
                let node = Node::new(virtual_identity(&name, Layout::Us), Framing::PerKey);
                hub.add_keyboard(&name, Decoder::us(), node);
            }
            Bench { hub, answers: Answers::default(), next_id: 0 }
        }

        fn reply(&mut self, max: u32, nonblocking: bool) -> Probe {
            self.next_id += 1;
            Probe { id: RequestId(self.next_id), max, nonblocking, answers: self.answers.clone() }
        }

        /// Reads with the given size; returns the request id.
        fn read(&mut self, handle: Handle, max: u32) -> RequestId {
            let reply = self.reply(max, false);
            let id = reply.id;
            self.hub.read(handle, reply);
            id
        }

        fn read_nonblocking(&mut self, handle: Handle, max: u32) -> RequestId {
            let reply = self.reply(max, true);
            let id = reply.id;
            self.hub.read(handle, reply);
            id
        }

        fn type_text(&mut self, kbd: usize, text: &str) -> Vec<Handle> {
            self.hub.deliver(kbd, &text_to_events(text).unwrap())
        }

        fn answer(&self, id: RequestId) -> Option<Result<Vec<u8>, Errno>> {
            self.answers.borrow().iter().find(|(i, _)| *i == id).map(|(_, a)| a.clone())
        }

        /// The (type, code, value) of the records a read got.
        fn events(&self, id: RequestId) -> Vec<(u16, u16, i32)> {
            let bytes = self.answer(id).unwrap().unwrap();
            InputEvent::parse_records(&bytes).unwrap().iter().map(|e| (e.ev_type, e.code, e.value)).collect()
        }
    }

    /// A key's press or release and its SYN_REPORT.
    fn packet(code: u16, value: i32) -> [(u16, u16, i32); 2] {
        [(EV_KEY, code, value), (EV_SYN, SYN_REPORT, 0)]
    }

    #[test]
    fn every_reader_gets_every_key_typed_after_it_opened() {
        let mut b = Bench::new(4096, 1);
        let early = b.hub.open(0, true).unwrap();
        b.type_text(0, "before ");
        let late = b.hub.open(0, true).unwrap();
        let woken = b.type_text(0, "Hello, World!\n");
        assert_eq!(woken, [early, late]);
        let r1 = b.read(early, 4096);
        let r2 = b.read(late, 4096);
        assert_eq!(b.answer(r1), Some(Ok(b"before Hello, World!\n".to_vec())));
        assert_eq!(b.answer(r2), Some(Ok(b"Hello, World!\n".to_vec())));
    }

    #[test]
    fn keyboards_are_separate() {
        let mut b = Bench::new(4096, 2);
        let h0 = b.hub.open(0, true).unwrap();
        let h1 = b.hub.open(1, true).unwrap();
        // Shift held on keyboard 0 does not shift keyboard 1.
        b.hub.deliver(0, &[InputEvent::key(KEY_LEFTSHIFT, KeyAction::Press)]);
        b.hub.deliver(0, &[InputEvent::key(KEY_A, KeyAction::Press)]);
        b.hub.deliver(1, &[InputEvent::key(KEY_A, KeyAction::Press)]);
        let r0 = b.read(h0, 10);
        let r1 = b.read(h1, 10);
        assert_eq!(b.answer(r0), Some(Ok(b"A".to_vec())));
        assert_eq!(b.answer(r1), Some(Ok(b"a".to_vec())));
    }

    #[test]
    fn a_read_with_nothing_pending_parks_until_a_key_arrives() {
        let mut b = Bench::new(4096, 1);
        let h = b.hub.open(0, true).unwrap();
        let r = b.read(h, 3);
        assert_eq!(b.answer(r), None);
        assert_eq!(b.hub.poll_state(h).map(|p| p.readable), Some(false));
        b.type_text(0, "abcde");
        assert_eq!(b.answer(r), Some(Ok(b"abc".to_vec())));
        // The rest waits for the next read.
        assert_eq!(b.hub.poll_state(h).map(|p| p.readable), Some(true));
        let r = b.read(h, 100);
        assert_eq!(b.answer(r), Some(Ok(b"de".to_vec())));
    }

    #[test]
    fn parked_reads_are_answered_in_order() {
        let mut b = Bench::new(4096, 1);
        let h = b.hub.open(0, true).unwrap();
        let first = b.read(h, 1);
        let second = b.read(h, 1);
        b.type_text(0, "x");
        assert_eq!(b.answer(first), Some(Ok(b"x".to_vec())));
        assert_eq!(b.answer(second), None);
        b.type_text(0, "y");
        assert_eq!(b.answer(second), Some(Ok(b"y".to_vec())));
    }

    #[test]
    fn nonblocking_reads_never_park() {
        let mut b = Bench::new(4096, 1);
        let h = b.hub.open(0, true).unwrap();
        let r = b.read_nonblocking(h, 10);
        assert_eq!(b.answer(r), Some(Err(Errno::EAGAIN)));
        b.type_text(0, "k");
        let r = b.read_nonblocking(h, 10);
        assert_eq!(b.answer(r), Some(Ok(b"k".to_vec())));
    }

    #[test]
    fn cancel_answers_eintr_and_close_answers_ebadf() {
        let mut b = Bench::new(4096, 1);
        let h = b.hub.open(0, true).unwrap();
        let r1 = b.read(h, 10);
        let r2 = b.read(h, 10);
        assert!(b.hub.cancel(r1));
        assert!(!b.hub.cancel(r1));
        assert!(!b.hub.cancel(RequestId(999)));
        assert_eq!(b.answer(r1), Some(Err(Errno::EINTR)));
        assert_eq!(b.answer(r2), None);
        b.hub.close(h);
        assert_eq!(b.answer(r2), Some(Err(Errno::EBADF)));
        // The handle is gone.
        let r3 = b.read(h, 10);
        assert_eq!(b.answer(r3), Some(Err(Errno::EBADF)));
        assert!(b.type_text(0, "nobody listens").is_empty());
    }

    #[test]
    fn a_slow_reader_loses_its_oldest_bytes_and_the_loss_is_counted() {
        let mut b = Bench::new(32, 1);
        let slow = b.hub.open(0, true).unwrap();
        let fast = b.hub.open(0, true).unwrap();
        for chunk in ["0123456789", "abcdefghij", "ABCDEFGHIJ", "klmnopqrst"] {
            b.type_text(0, chunk);
            let r = b.read(fast, 4096);
            assert_eq!(b.answer(r), Some(Ok(chunk.as_bytes().to_vec())));
        }
        let r = b.read(slow, 4096);
        assert_eq!(b.answer(r), Some(Ok(b"89abcdefghijABCDEFGHIJklmnopqrst".to_vec())));
        let stats = b.hub.stats(slow).unwrap();
        assert_eq!((stats.lost, stats.lost_device, stats.lost_driver, stats.pending), (8, 8, 8, 0));
        assert_eq!(b.hub.stats(fast).unwrap().lost, 0);
        // Closing keeps the device's and the driver's totals.
        b.hub.close(slow);
        assert_eq!(b.hub.stats(fast).unwrap().lost_device, 8);
        assert_eq!(b.hub.lost_driver(), 8);
    }

    #[test]
    fn a_delivery_larger_than_the_buffer_keeps_its_newest_bytes() {
        let mut b = Bench::new(24, 1);
        let h = b.hub.open(0, true).unwrap();
        b.type_text(0, "ab");
        b.type_text(0, "the quick brown fox jumps");
        let r = b.read(h, 4096);
        assert_eq!(b.answer(r), Some(Ok(b"he quick brown fox jumps".to_vec())));
        assert_eq!(b.hub.stats(h).unwrap().lost, 27 - 24);
    }

    #[test]
    fn raw_mode_gives_whole_records() {
        let mut b = Bench::new(4096, 1);
        let h = b.hub.open(0, true).unwrap();
        b.type_text(0, "ignored: text mode");
        b.hub.set_mode(h, Mode::Raw).unwrap();
        assert_eq!(b.hub.mode(h), Ok(Mode::Raw));
        assert_eq!(b.hub.stats(h).unwrap().pending, 0, "a mode change discards");
        let short = b.read_nonblocking(h, 23);
        assert_eq!(b.answer(short), Some(Err(Errno::EINVAL)));
        b.type_text(0, "B");
        // Shift, b, b up, shift up: four records; a 50-byte read takes two.
        let r = b.read(h, 50);
        let got = b.answer(r).unwrap().unwrap();
        assert_eq!(got.len(), 48);
        let events = InputEvent::parse_records(&got).unwrap();
        assert_eq!(events[0].key_action(), Some((KEY_LEFTSHIFT, KeyAction::Press)));
        assert_eq!(events[1].key_action(), Some((KEY_B, KeyAction::Press)));
        assert!(events.iter().all(|e| e.sec > 0), "stamped on arrival");
        let r = b.read(h, 4096);
        assert_eq!(b.answer(r).unwrap().unwrap().len(), 48);
    }

    #[test]
    fn raw_mode_drops_whole_records() {
        // 60 bytes hold two records in raw mode.
        let mut b = Bench::new(60, 1);
        let h = b.hub.open(0, true).unwrap();
        b.hub.set_mode(h, Mode::Raw).unwrap();
        b.type_text(0, "ab"); // four records
        let stats = b.hub.stats(h).unwrap();
        assert_eq!((stats.lost, stats.pending), (48, 48));
        let r = b.read(h, 4096);
        let events = InputEvent::parse_records(&b.answer(r).unwrap().unwrap()).unwrap();
        assert_eq!(events[0].key_action(), Some((KEY_B, KeyAction::Press)));
        assert_eq!(events[1].key_action(), Some((KEY_B, KeyAction::Release)));
    }

    #[test]
    fn repeats_and_inconsistent_events() {
        let mut b = Bench::new(4096, 1);
        let h = b.hub.open(0, true).unwrap();
        b.hub.deliver(
            0,
            &[
                InputEvent::key(KEY_A, KeyAction::Release), // not down: dropped
                InputEvent::key(KEY_A, KeyAction::Repeat),  // not down: dropped
                InputEvent::key(KEY_A, KeyAction::Press),
                InputEvent::key(KEY_A, KeyAction::Press), // already down: dropped
                InputEvent::key(KEY_A, KeyAction::Repeat),
                InputEvent::key(KEY_A, KeyAction::Repeat),
                InputEvent::key(KEY_A, KeyAction::Release),
                InputEvent::new(EV_MSC, 4, 30),
            ],
        );
        let r = b.read(h, 100);
        assert_eq!(b.answer(r), Some(Ok(b"aaa".to_vec())));
    }

    #[test]
    fn write_only_handles_get_no_keys() {
        let mut b = Bench::new(8, 1);
        let w = b.hub.open(0, false).unwrap();
        assert!(b.type_text(0, "more than eight bytes").is_empty());
        assert_eq!(b.hub.stats(w).unwrap().lost, 0);
        let r = b.read(w, 10);
        assert_eq!(b.answer(r), Some(Err(Errno::EBADF)));
    }

    #[test]
    fn a_gone_keyboard_ends_reads() {
        let mut b = Bench::new(4096, 1);
        let h = b.hub.open(0, true).unwrap();
        let parked = b.read(h, 10);
        let other = b.hub.open(0, true).unwrap();
        b.type_text(0, "z");
        assert_eq!(b.answer(parked), Some(Ok(b"z".to_vec())));
        let parked = b.read(h, 10);
        assert_eq!(b.hub.keyboard_gone(0), [h, other]);
        assert_eq!(b.answer(parked), Some(Err(Errno::ENODEV)));
        // What is pending is still read, then ENODEV.
        let r = b.read(other, 10);
        assert_eq!(b.answer(r), Some(Ok(b"z".to_vec())));
        let r = b.read(other, 10);
        assert_eq!(b.answer(r), Some(Err(Errno::ENODEV)));
        assert_eq!(b.hub.poll_state(other).map(|p| p.hung_up), Some(true));
        assert_eq!(b.hub.open(0, true), Err(Errno::ENODEV));
        assert_eq!(b.hub.open(7, true), Err(Errno::ENXIO));
    }

    #[test]
    fn parking_is_bounded() {
        let mut b = Bench::new(4096, 1);
        let h = b.hub.open(0, true).unwrap();
        let ids: Vec<_> = (0..=MAX_PARKED).map(|_| b.read(h, 1)).collect();
        assert_eq!(b.answer(ids[MAX_PARKED]), Some(Err(Errno::ENOBUFS)));
        assert_eq!(b.answer(ids[MAX_PARKED - 1]), None);
        b.hub.fail_parked(Errno::EIO);
        assert_eq!(b.answer(ids[0]), Some(Err(Errno::EIO)));
    }

    #[test]
    fn injected_writes_are_whole_key_records() {
        let events = text_to_events("Hi").unwrap();
        let bytes = InputEvent::encode_records(&events);
        let keys = parse_injection(&bytes).unwrap();
        // The SYN_REPORTs are skipped.
        assert_eq!(keys.len(), events.len() / 2);
        assert_eq!(Decoder::us().decode(&keys), b"Hi");
        // Time stamps are dropped.
        let stamped = InputEvent::key(KEY_A, KeyAction::Press).stamped_now().to_bytes();
        assert_eq!(parse_injection(&stamped).unwrap()[0].sec, 0);
        assert_eq!(parse_injection(&[]), Ok(vec![]));
        // Partial records, wrong types, codes and values.
        assert_eq!(parse_injection(&bytes[..25]), Err(Errno::EINVAL));
        assert_eq!(parse_injection(&[0xff; 24]), Err(Errno::EINVAL));
        for bad in [
            InputEvent::new(EV_KEY, 0, 1),
            InputEvent::new(EV_KEY, KEY_MAX + 1, 1),
            InputEvent::new(EV_KEY, KEY_A, 3),
            InputEvent::new(EV_KEY, KEY_A, -1),
            InputEvent::new(2, 0, 1), // EV_REL
        ] {
            let mut data = bytes.clone();
            data.extend_from_slice(&bad.to_bytes());
            assert_eq!(parse_injection(&data), Err(Errno::EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn evdev_handles_get_packets_and_text_handles_text() {
        let mut b = Bench::new(4096, 1);
        let text = b.hub.open(0, true).unwrap();
        let ev1 = b.hub.open_events(0, true).unwrap();
        let ev2 = b.hub.open_events(0, true).unwrap();
        assert_eq!(b.hub.keyboard_of(ev1), Some((0, NodeKind::Events)));
        assert_eq!(b.hub.keyboard_of(text), Some((0, NodeKind::Text)));
        let parked = b.read(ev1, 4096);
        let woken = b.type_text(0, "A");
        assert_eq!(woken, [text, ev1, ev2]);
        let want: Vec<_> =
            [packet(KEY_LEFTSHIFT, 1), packet(KEY_A, 1), packet(KEY_A, 0), packet(KEY_LEFTSHIFT, 0)].concat();
        assert_eq!(b.events(parked), want);
        let r = b.read(ev2, 4096);
        assert_eq!(b.events(r), want);
        let r = b.read(text, 4096);
        assert_eq!(b.answer(r), Some(Ok(b"A".to_vec())));
        // Records only: short reads are EINVAL; nothing left is EAGAIN.
        let r = b.read_nonblocking(ev2, 23);
        assert_eq!(b.answer(r), Some(Err(Errno::EINVAL)));
        let r = b.read_nonblocking(ev2, 4096);
        assert_eq!(b.answer(r), Some(Err(Errno::EAGAIN)));
        assert_eq!(b.hub.poll_state(ev2), Some(PollState { readable: false, hung_up: false }));
    }

    #[test]
    fn a_slow_evdev_reader_gets_syn_dropped_and_the_loss_is_counted() {
        let mut b = Bench::new(4096, 1); // evdev rings of 16
        let slow = b.hub.open_events(0, true).unwrap();
        let fast = b.hub.open_events(0, true).unwrap();
        let mut fast_got = 0;
        for _ in 0..5 {
            b.type_text(0, "ab"); // 8 events
            let r = b.read(fast, 4096);
            fast_got += b.events(r).len();
        }
        assert_eq!(fast_got, 40);
        let r = b.read(slow, 4096);
        let got = b.events(r);
        assert_eq!(got[0], (EV_SYN, SYN_DROPPED, 0));
        assert_eq!(got.last(), Some(&(EV_SYN, SYN_REPORT, 0)));
        // Every event was delivered or counted lost.
        let lost = b.hub.lost_events(0);
        assert!(lost > 0);
        assert_eq!(lost + got.len() as u64 - 1, 40);
        assert_eq!(b.hub.lost_events_driver(), lost);
    }

    #[test]
    fn a_grab_keeps_every_event_for_the_grabber() {
        let mut b = Bench::new(4096, 1);
        let text = b.hub.open(0, true).unwrap();
        let grabber = b.hub.open_events(0, true).unwrap();
        let other = b.hub.open_events(0, true).unwrap();
        let one = 1i32.to_ne_bytes();
        let (a, _) = b.hub.ioctl_events(grabber, evio::EVIOCGRAB, &one, 0);
        assert!(a.is_ok());
        assert_eq!(b.hub.ioctl_events(other, evio::EVIOCGRAB, &one, 0).0, Err(Errno(libc::EBUSY)));
        assert_eq!(b.hub.ioctl_events(grabber, evio::EVIOCGRAB, &one, 0).0, Err(Errno(libc::EBUSY)));
        assert_eq!(b.hub.ioctl_events(other, evio::EVIOCGRAB, &0i32.to_ne_bytes(), 0).0, Err(Errno::EINVAL));
        assert_eq!(b.type_text(0, "x"), [grabber]);
        // Closing the grabber ends the grab.
        b.hub.close(grabber);
        assert_eq!(b.type_text(0, "y"), [text, other]);
        let r = b.read(text, 10);
        assert_eq!(b.answer(r), Some(Ok(b"y".to_vec())));
    }

    #[test]
    fn new_repeat_settings_reach_every_reader() {
        let mut b = Bench::new(4096, 1);
        let h1 = b.hub.open_events(0, true).unwrap();
        let h2 = b.hub.open_events(0, true).unwrap();
        let set = [400u32.to_ne_bytes(), 40u32.to_ne_bytes()].concat();
        let (a, woken) = b.hub.ioctl_events(h1, evio::EVIOCSREP, &set, 0);
        assert_eq!(a.unwrap().result, 0);
        assert_eq!(woken, [h1, h2]);
        let r = b.read(h2, 4096);
        assert_eq!(b.events(r), [(EV_REP, 0, 400), (EV_REP, 1, 40), (EV_SYN, SYN_REPORT, 0)]);
        let (a, _) = b.hub.ioctl_events(h2, evio::EVIOCGREP, &[], 8);
        assert_eq!(a.unwrap().out, set);
        // The same settings again: no events.
        assert!(b.hub.ioctl_events(h1, evio::EVIOCSREP, &set, 0).1.is_empty());
    }

    #[test]
    fn revoked_and_gone_evdev_handles_answer_enodev() {
        let mut b = Bench::new(4096, 1);
        let h = b.hub.open_events(0, true).unwrap();
        let other = b.hub.open_events(0, true).unwrap();
        let parked = b.read(h, 4096);
        let (a, woken) = b.hub.ioctl_events(h, evio::EVIOCREVOKE, &0i32.to_ne_bytes(), 0);
        assert!(a.is_ok());
        assert_eq!(woken, [h]);
        assert_eq!(b.answer(parked), Some(Err(Errno::ENODEV)));
        assert_eq!(b.hub.poll_state(h).map(|p| p.hung_up), Some(true));
        b.type_text(0, "q");
        let r = b.read(h, 4096);
        assert_eq!(b.answer(r), Some(Err(Errno::ENODEV)));
        // The kernel's evdev answers ENODEV at once for a gone device, even
        // with events pending.
        assert_eq!(b.hub.keyboard_gone(0), [h, other]);
        let r = b.read(other, 4096);
        assert_eq!(b.answer(r), Some(Err(Errno::ENODEV)));
        assert_eq!(b.hub.ioctl_events(other, evio::EVIOCGVERSION, &[], 4).0, Err(Errno::ENODEV));
        assert_eq!(b.hub.open_events(0, true), Err(Errno::ENODEV));
    }

    #[test]
    fn a_mirror_passes_its_sources_packets_and_other_events() {
        let mut identity = virtual_identity("mirror", Layout::Us);
        identity.caps.ev.set(EV_LED, true);
        identity.caps.led.set(LED_CAPSL, true);
        identity.caps.ev.set(EV_MSC, true);
        identity.caps.msc.set(ddf::input::MSC_SCAN, true);
        let mut hub: Hub<Probe> = Hub::new(4096, 64);
        hub.add_keyboard("mirror", Decoder::us(), Node::new(identity, Framing::Source));
        let mut b = Bench { hub, answers: Answers::default(), next_id: 0 };
        let h = b.hub.open_events(0, true).unwrap();
        let t = b.hub.open(0, true).unwrap();
        b.hub.deliver(
            0,
            &[
                InputEvent::new(EV_MSC, ddf::input::MSC_SCAN, 0x1e),
                InputEvent::key(KEY_A, KeyAction::Press),
                InputEvent::key(KEY_B, KeyAction::Press),
                InputEvent::syn(),
                InputEvent::new(EV_LED, LED_CAPSL, 1),
                InputEvent::new(EV_LED, LED_CAPSL, 1), // no change: dropped
                InputEvent::new(EV_LED, 5, 1),         // an LED it does not have
                InputEvent::syn(),
                InputEvent::key(KEY_A, KeyAction::Release),
            ],
        );
        let r = b.read(h, 4096);
        assert_eq!(
            b.events(r),
            [
                (EV_MSC, ddf::input::MSC_SCAN, 0x1e),
                (EV_KEY, KEY_A, 1),
                (EV_KEY, KEY_B, 1),
                (EV_SYN, SYN_REPORT, 0),
                (EV_LED, LED_CAPSL, 1),
                (EV_SYN, SYN_REPORT, 0),
            ],
            "the release waits for its packet's end"
        );
        let r = b.read(t, 10);
        assert_eq!(b.answer(r), Some(Ok(b"ab".to_vec())));
        let (a, _) = b.hub.ioctl_events(h, evio::eviocgled(8), &[], 8);
        assert_eq!(ddf::input::evnode::Bits::from_user(&a.unwrap().out, 15).iter().collect::<Vec<_>>(), [LED_CAPSL]);
    }
}
