//! The PS/2 keyboard controller (Intel 8042) over libIO, scancode set 1.
//!
//! The controller has two byte-wide ports: the status register at `0x64`
//! (read; writes there are controller commands) and the data port at `0x60`.
//! When bit 0 of the status (output buffer full) is set, a byte from the
//! keyboard waits at `0x60`; bit 5 says it came from the auxiliary (mouse)
//! port instead, and such bytes are thrown away. [`I8042`] drains the
//! controller this way through any [`PortIo`] and decodes the bytes with
//! [`Set1Decoder`] into key events. With no interrupts in user space,
//! [`Poller`] runs it on a thread every few milliseconds and hands the
//! events to the driver's runtime through a channel, waking the runtime
//! (its [`Waker`](ddf::driver::Waker)) only when there are some.
//!
//! Two port backends:
//! - the emulated port space, with an [`EmulatedI8042`] registered at `0x60`
//!   and `0x64` and fed scan codes by the driver (tests, demos): the default;
//! - the real ports, only with `ports=real`, which needs `CAP_SYS_RAWIO`
//!   and a machine where the kernel's own i8042 driver does not hold the
//!   controller (both would steal bytes from each other). The controller is
//!   only read; it is not reset or reconfigured.
//!
//! Scancode set 1 (what the controller delivers with translation on, the
//! PC default): a key's make code `c` (0x01-0x58), its break code
//! `c | 0x80`; extended keys send `0xE0` first; Pause sends
//! `E1 1D 45 E1 9D C5` on press and nothing on release. A make code of a
//! key already down is the keyboard's autorepeat.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ddf::input::*;
use ddf::io::{IoError, Port, PortDevice, PortIo, PortRange, PortSpace, RealPorts, Width};
use log::{debug, error, warn};

/// The data port: keyboard bytes in, keyboard commands out.
pub const DATA_PORT: Port = 0x60;
/// The status register (read) and command register (write).
pub const STATUS_PORT: Port = 0x64;
/// Status bit: a byte waits in the data port.
pub const STATUS_OUTPUT_FULL: u8 = 0x01;
/// Status bit: the system flag, set once the controller passed its self test.
pub const STATUS_SYSTEM: u8 = 0x04;
/// Status bit: the waiting byte is from the auxiliary (mouse) port.
pub const STATUS_AUX_DATA: u8 = 0x20;
/// A keyboard's answer to a command: acknowledged.
pub const KBD_ACK: u8 = 0xfa;

/// At most this many bytes are taken per poll, so that a controller stuck
/// with its output-full bit set cannot hold the poller forever.
const MAX_BYTES_PER_POLL: usize = 64;

/// What can go wrong with the controller.
#[derive(Debug, thiserror::Error)]
pub enum I8042Error {
    /// A port access failed.
    #[error("port access failed")]
    Io(#[from] IoError),
    /// The status register reads all ones: no controller answers there.
    #[error("no i8042 controller: status port {STATUS_PORT:#x} reads {status:#04x}")]
    NoController {
        /// What the status port read.
        status: u8,
    },
    /// The polling thread could not be started.
    #[error("cannot start the i8042 polling thread")]
    Spawn(#[source] std::io::Error),
    /// The polling thread ended before it reported its start.
    #[error("the i8042 polling thread died while starting")]
    Died,
}

/// The prefix state of a set-1 byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Prefix {
    #[default]
    None,
    /// After `0xE0`.
    Extended,
    /// After `0xE1` (Pause).
    Pause,
    /// After `0xE1` and one more byte.
    PauseSecond(u8),
}

/// Decodes scancode set 1 into key events (unstamped).
#[derive(Debug, Clone, Default)]
pub struct Set1Decoder {
    prefix: Prefix,
    /// Keys down, by key code (all codes this decoder makes are below 128).
    down: u128,
}

impl Set1Decoder {
    /// A decoder with no key down.
    pub fn new() -> Set1Decoder {
        Set1Decoder::default()
    }

    /// Takes one byte from the keyboard; returns the key event it
    /// completes, if any.
    pub fn feed(&mut self, byte: u8) -> Option<InputEvent> {
        match self.prefix {
            Prefix::Pause => {
                self.prefix = Prefix::PauseSecond(byte);
                None
            }
            Prefix::PauseSecond(first) => {
                self.prefix = Prefix::None;
                if (first & 0x7f, byte & 0x7f) == (0x1d, 0x45) {
                    self.key(KEY_PAUSE, first & 0x80 == 0)
                } else {
                    debug!("i8042: unknown E1 sequence {first:#04x} {byte:#04x}");
                    None
                }
            }
            Prefix::Extended => match byte {
                0xe0 => None,
                0xe1 => {
                    self.prefix = Prefix::Pause;
                    None
                }
                _ => {
                    self.prefix = Prefix::None;
                    let code = extended_key(byte & 0x7f)?;
                    self.key(code, byte & 0x80 == 0)
                }
            },
            Prefix::None => match byte {
                0xe0 => {
                    self.prefix = Prefix::Extended;
                    None
                }
                0xe1 => {
                    self.prefix = Prefix::Pause;
                    None
                }
                // Error or overrun, acknowledge, resend, echo: not keys.
                0x00 | 0xff | KBD_ACK | 0xfe | 0xee => None,
                _ => {
                    let code = base_key(byte & 0x7f)?;
                    self.key(code, byte & 0x80 == 0)
                }
            },
        }
    }

    fn key(&mut self, code: u16, make: bool) -> Option<InputEvent> {
        let bit = 1u128.checked_shl(u32::from(code))?;
        let was_down = self.down & bit != 0;
        let action = match (make, was_down) {
            (true, false) => KeyAction::Press,
            (true, true) => KeyAction::Repeat,
            (false, true) => KeyAction::Release,
            // A break of a key that is not down (say, 0xAA after a reset,
            // which is also Left Shift's break code): nothing happened.
            (false, false) => return None,
        };
        if make {
            self.down |= bit;
        } else {
            self.down &= !bit;
        }
        Some(InputEvent::key(code, action))
    }
}

/// The key of a set-1 make code without prefix.
fn base_key(make: u8) -> Option<u16> {
    Some(match make {
        // 0x01 (Esc) to 0x53 (keypad .) are the Linux key codes themselves.
        0x01..=0x53 => u16::from(make),
        0x54 => KEY_SYSRQ,
        0x56 => KEY_102ND,
        0x57 => KEY_F11,
        0x58 => KEY_F12,
        _ => return None,
    })
}

/// The key of a set-1 make code after `0xE0`.
fn extended_key(make: u8) -> Option<u16> {
    Some(match make {
        0x1c => KEY_KPENTER,
        0x1d => KEY_RIGHTCTRL,
        0x35 => KEY_KPSLASH,
        0x37 => KEY_SYSRQ,
        0x38 => KEY_RIGHTALT,
        0x47 => KEY_HOME,
        0x48 => KEY_UP,
        0x49 => KEY_PAGEUP,
        0x4b => KEY_LEFT,
        0x4d => KEY_RIGHT,
        0x4f => KEY_END,
        0x50 => KEY_DOWN,
        0x51 => KEY_PAGEDOWN,
        0x52 => KEY_INSERT,
        0x53 => KEY_DELETE,
        0x5b => KEY_LEFTMETA,
        0x5c => KEY_RIGHTMETA,
        0x5d => KEY_COMPOSE,
        // 0x2a and 0x36 are the "fake shifts" around Print Screen and the
        // navigation keys; others are multimedia keys we do not map.
        _ => return None,
    })
}

/// Every key code a [`Set1Decoder`] makes (what an i8042 keyboard's
/// evdev node says it has).
pub fn keys() -> Vec<u16> {
    let mut keys: Vec<u16> = (0..0x80u8).flat_map(|b| [base_key(b), extended_key(b)]).flatten().collect();
    keys.push(KEY_PAUSE);
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// A PS/2 controller driven through `P`.
#[derive(Debug)]
pub struct I8042<P> {
    io: P,
    decoder: Set1Decoder,
}

impl<P: PortIo> I8042<P> {
    /// Checks that a controller answers (its status is not all ones) and
    /// returns the driver for it.
    pub fn probe(mut io: P) -> Result<I8042<P>, I8042Error> {
        let status = io.inb(STATUS_PORT)?;
        if status == 0xff {
            return Err(I8042Error::NoController { status });
        }
        Ok(I8042 { io, decoder: Set1Decoder::new() })
    }

    /// Takes every byte the controller holds (at most 64) and appends the
    /// key events they make to `out`, stamped now. Returns how many bytes
    /// were read.
    pub fn poll(&mut self, out: &mut Vec<InputEvent>) -> Result<usize, I8042Error> {
        let mut taken = 0;
        while taken < MAX_BYTES_PER_POLL {
            let status = self.io.inb(STATUS_PORT)?;
            if status == 0xff || status & STATUS_OUTPUT_FULL == 0 {
                break;
            }
            let byte = self.io.inb(DATA_PORT)?;
            taken += 1;
            if status & STATUS_AUX_DATA != 0 {
                continue;
            }
            if let Some(ev) = self.decoder.feed(byte) {
                out.push(ev.stamped_now());
            }
        }
        Ok(taken)
    }
}

/// The most bytes an [`EmulatedI8042`] holds; more are refused.
pub const EMULATED_QUEUE_MAX: usize = 64 * 1024;

/// An emulated PS/2 controller with a keyboard behind it, for the emulated
/// port space.
///
/// Bytes given to [`EmulatedI8042::push`] come out of the data port one at
/// a time, with the status register's output-full bit set while any wait.
/// Reading the data port with nothing waiting repeats the last byte, as the
/// hardware does. A write to the data port (a keyboard command) is
/// acknowledged with [`KBD_ACK`]; controller commands (writes to `0x64`)
/// are ignored.
#[derive(Debug, Default)]
pub struct EmulatedI8042 {
    output: VecDeque<u8>,
    last: u8,
}

impl EmulatedI8042 {
    /// A controller with nothing to say.
    pub fn new() -> EmulatedI8042 {
        EmulatedI8042::default()
    }

    /// Registers a new controller at `0x60` and `0x64` of `space`; returns
    /// the handle to feed it with.
    pub fn install(space: &mut PortSpace) -> Result<Arc<Mutex<EmulatedI8042>>, IoError> {
        let dev = Arc::new(Mutex::new(EmulatedI8042::new()));
        space.register(PortRange::new(DATA_PORT, 1)?, dev.clone())?;
        space.register(PortRange::new(STATUS_PORT, 1)?, dev.clone())?;
        Ok(dev)
    }

    /// Queues bytes as if the keyboard sent them; returns how many were
    /// taken (fewer once [`EMULATED_QUEUE_MAX`] bytes wait).
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let room = EMULATED_QUEUE_MAX.saturating_sub(self.output.len());
        let n = bytes.len().min(room);
        self.output.extend(&bytes[..n]);
        n
    }

    /// Bytes waiting.
    pub fn pending(&self) -> usize {
        self.output.len()
    }
}

impl PortDevice for EmulatedI8042 {
    fn read(&mut self, port: Port, _width: Width) -> u32 {
        match port {
            DATA_PORT => {
                if let Some(byte) = self.output.pop_front() {
                    self.last = byte;
                }
                u32::from(self.last)
            }
            STATUS_PORT => {
                let full = if self.output.is_empty() { 0 } else { STATUS_OUTPUT_FULL };
                u32::from(STATUS_SYSTEM | full)
            }
            _ => 0xff,
        }
    }

    fn write(&mut self, port: Port, _width: Width, value: u32) {
        match port {
            DATA_PORT => {
                debug!("emulated i8042: keyboard command {value:#04x}, acknowledged");
                self.push(&[KBD_ACK]);
            }
            _ => debug!("emulated i8042: controller command {value:#04x} ignored"),
        }
    }
}

/// The real controller's two ports, each granted on its own (so that the
/// ports between them, like the speaker control at `0x61`, stay out of
/// reach).
#[derive(Debug)]
pub struct RealI8042Ports {
    data: RealPorts,
    status: RealPorts,
}

impl RealI8042Ports {
    /// Asks the kernel for `0x60` and `0x64` on the calling thread.
    ///
    /// # Safety
    ///
    /// As for [`RealPorts::acquire`]: the controller must be this driver's
    /// (no kernel driver bound to it) for as long as the value lives.
    pub unsafe fn acquire() -> Result<RealI8042Ports, IoError> {
        // SAFETY: the caller vouches that the controller is ours; the i8042
        // does no DMA, and this driver only reads its status and data.
        let data = unsafe { RealPorts::acquire(PortRange::new(DATA_PORT, 1)?) }?;
        // SAFETY: as above.
        let status = unsafe { RealPorts::acquire(PortRange::new(STATUS_PORT, 1)?) }?;
        Ok(RealI8042Ports { data, status })
    }
}

impl PortIo for RealI8042Ports {
    fn read(&mut self, port: Port, width: Width) -> Result<u32, IoError> {
        if port == DATA_PORT {
            self.data.read(port, width)
        } else {
            self.status.read(port, width)
        }
    }

    fn write(&mut self, port: Port, width: Width, value: u32) -> Result<(), IoError> {
        if port == DATA_PORT {
            self.data.write(port, width, value)
        } else {
            self.status.write(port, width, value)
        }
    }
}

/// Runs an [`I8042`] on its own thread, polling every `interval`.
#[derive(Debug)]
pub struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    events: Receiver<InputEvent>,
}

impl Poller {
    /// Starts the thread. `open` runs on it and makes the port backend (on
    /// that thread, because `ioperm` rights are per thread); the controller
    /// is probed before this returns. Each poll that yields events sends
    /// them, then calls `wake` (the driver passes its runtime's `Waker`).
    pub fn spawn<P, F, W>(open: F, interval: Duration, wake: W) -> Result<Poller, I8042Error>
    where
        P: PortIo,
        F: FnOnce() -> Result<P, IoError> + Send + 'static,
        W: Fn() + Send + 'static,
    {
        let (tx, events) = mpsc::channel();
        let (started_tx, started) = mpsc::sync_channel::<Result<(), I8042Error>>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::Builder::new()
            .name("i8042".into())
            .spawn(move || {
                let controller = open().map_err(I8042Error::from).and_then(I8042::probe);
                let mut controller = match controller {
                    Ok(c) => {
                        let _ = started_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let mut batch = Vec::new();
                while !stopping.load(Ordering::Relaxed) {
                    if let Err(e) = controller.poll(&mut batch) {
                        error!("i8042: {e}; polling stops");
                        return;
                    }
                    if !batch.is_empty() {
                        for ev in batch.drain(..) {
                            if tx.send(ev).is_err() {
                                return;
                            }
                        }
                        wake();
                    }
                    thread::sleep(interval);
                }
            })
            .map_err(I8042Error::Spawn)?;
        let mut poller = Poller { stop, thread: Some(thread), events };
        match started.recv() {
            Ok(Ok(())) => Ok(poller),
            Ok(Err(e)) => {
                poller.stop();
                Err(e)
            }
            Err(_) => {
                poller.stop();
                Err(I8042Error::Died)
            }
        }
    }

    /// Moves the events decoded so far into `out`.
    pub fn drain(&self, out: &mut Vec<InputEvent>) {
        out.extend(self.events.try_iter());
    }

    /// Stops the thread and waits for it (at most one poll interval).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("i8042: the polling thread panicked");
            }
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// "Hello, World!\n" in scancode set 1, Shift made and broken around the
    /// capitals and the `!`.
    const HELLO_WORLD: &[u8] = &[
        0x2a, 0x23, 0xa3, 0xaa, // Shift down, h, h up, Shift up: "H"
        0x12, 0x92, // e
        0x26, 0xa6, // l
        0x26, 0xa6, // l
        0x18, 0x98, // o
        0x33, 0xb3, // ,
        0x39, 0xb9, // space
        0x36, 0x11, 0x91, 0xb6, // Right Shift, w: "W"
        0x18, 0x98, // o
        0x13, 0x93, // r
        0x26, 0xa6, // l
        0x20, 0xa0, // d
        0x2a, 0x02, 0x82, 0xaa, // Shift, 1: "!"
        0x1c, 0x9c, // Enter
    ];

    fn decode_all(bytes: &[u8]) -> Vec<InputEvent> {
        let mut d = Set1Decoder::new();
        bytes.iter().filter_map(|b| d.feed(*b)).collect()
    }

    #[test]
    fn hello_world_through_the_emulated_port_space() {
        let mut space = PortSpace::new();
        let kbd = EmulatedI8042::install(&mut space).unwrap();
        kbd.lock().unwrap().push(HELLO_WORLD);
        let mut controller = I8042::probe(&mut space).unwrap();
        let mut events = Vec::new();
        // 64 bytes at most per poll: all of it in one go here.
        assert_eq!(controller.poll(&mut events).unwrap(), HELLO_WORLD.len());
        assert_eq!(controller.poll(&mut events).unwrap(), 0);
        assert_eq!(kbd.lock().unwrap().pending(), 0);
        assert!(events.iter().all(|e| e.sec > 0));
        assert_eq!(Decoder::us().decode(&events), b"Hello, World!\n");
    }

    #[test]
    fn make_break_and_repeat() {
        let events = decode_all(&[0x1e, 0x1e, 0x1e, 0x9e, 0x9e]);
        let actions: Vec<_> = events.iter().filter_map(InputEvent::key_action).collect();
        assert_eq!(
            actions,
            [
                (KEY_A, KeyAction::Press),
                (KEY_A, KeyAction::Repeat),
                (KEY_A, KeyAction::Repeat),
                (KEY_A, KeyAction::Release)
            ]
        );
    }

    #[test]
    fn extended_keys_and_fake_shifts() {
        // Right Ctrl, Up with the fake shift a keyboard adds in Num Lock
        // mode, keypad Enter; then plain Left Ctrl and keypad 8.
        let events = decode_all(&[
            0xe0, 0x1d, 0xe0, 0x9d, // Right Ctrl
            0xe0, 0x2a, 0xe0, 0x48, 0xe0, 0xc8, 0xe0, 0xaa, // Up
            0xe0, 0x1c, 0xe0, 0x9c, // keypad Enter
            0x1d, 0x9d, // Left Ctrl
            0x48, 0xc8, // keypad 8
        ]);
        let actions: Vec<_> = events.iter().filter_map(InputEvent::key_action).collect();
        assert_eq!(
            actions,
            [
                (KEY_RIGHTCTRL, KeyAction::Press),
                (KEY_RIGHTCTRL, KeyAction::Release),
                (KEY_UP, KeyAction::Press),
                (KEY_UP, KeyAction::Release),
                (KEY_KPENTER, KeyAction::Press),
                (KEY_KPENTER, KeyAction::Release),
                (KEY_LEFTCTRL, KeyAction::Press),
                (KEY_LEFTCTRL, KeyAction::Release),
                (KEY_KP8, KeyAction::Press),
                (KEY_KP8, KeyAction::Release),
            ]
        );
    }

    #[test]
    fn pause_and_noise() {
        let events = decode_all(&[
            0xfa, 0xaa, 0x00, 0xff, 0xee, 0xfe, // ack, BAT, errors, echo, resend
            0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5, // Pause
            0x55, 0x59, 0x7f, 0xe0, 0x10, // unmapped keys
            0xe1, 0x00, 0x00, // a broken E1 sequence
            0x39, // space: the stream recovered
        ]);
        let actions: Vec<_> = events.iter().filter_map(InputEvent::key_action).collect();
        assert_eq!(
            actions,
            [(KEY_PAUSE, KeyAction::Press), (KEY_PAUSE, KeyAction::Release), (KEY_SPACE, KeyAction::Press)]
        );
    }

    #[test]
    fn every_byte_stream_is_safe() {
        // All bytes in every prefix state: no panic, codes in range.
        let mut d = Set1Decoder::new();
        for first in 0..=255u8 {
            for second in 0..=255u8 {
                for b in [first, second, 0xe0, second, 0xe1, first, second] {
                    if let Some(ev) = d.feed(b) {
                        assert!(ev.code < 128);
                    }
                }
            }
        }
    }

    #[test]
    fn mouse_bytes_are_skipped() {
        /// A controller whose every byte comes from the mouse port.
        #[derive(Debug, Default)]
        struct MouseOnly(usize);
        impl PortDevice for MouseOnly {
            fn read(&mut self, port: Port, _width: Width) -> u32 {
                if port == STATUS_PORT {
                    let full = if self.0 < 3 { STATUS_OUTPUT_FULL } else { 0 };
                    u32::from(STATUS_SYSTEM | STATUS_AUX_DATA | full)
                } else {
                    self.0 += 1;
                    0x1e
                }
            }
            fn write(&mut self, _port: Port, _width: Width, _value: u32) {}
        }
        let mut space = PortSpace::new();
        let dev = Arc::new(Mutex::new(MouseOnly::default()));
        space.register(PortRange::new(0x60, 5).unwrap(), dev).unwrap();
        let mut controller = I8042::probe(space).unwrap();
        let mut events = Vec::new();
        assert_eq!(controller.poll(&mut events).unwrap(), 3);
        assert!(events.is_empty());
    }

    #[test]
    fn a_missing_controller_is_reported() {
        match I8042::probe(PortSpace::new()) {
            Err(I8042Error::NoController { status: 0xff }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stuck_controller_does_not_hold_the_poller() {
        let mut space = PortSpace::new();
        let kbd = EmulatedI8042::install(&mut space).unwrap();
        kbd.lock().unwrap().push(&[0x1e; 200]);
        let mut controller = I8042::probe(&mut space).unwrap();
        let mut events = Vec::new();
        assert_eq!(controller.poll(&mut events).unwrap(), MAX_BYTES_PER_POLL);
        assert_eq!(kbd.lock().unwrap().pending(), 200 - MAX_BYTES_PER_POLL);
    }

    #[test]
    fn keyboard_commands_are_acknowledged() {
        let mut space = PortSpace::new();
        let kbd = EmulatedI8042::install(&mut space).unwrap();
        space.outb(DATA_PORT, 0xf4).unwrap(); // enable scanning
        space.outb(STATUS_PORT, 0xae).unwrap(); // controller: enable port 1
        assert_eq!(space.inb(STATUS_PORT).unwrap() & STATUS_OUTPUT_FULL, 1);
        assert_eq!(space.inb(DATA_PORT).unwrap(), KBD_ACK);
        assert_eq!(space.inb(STATUS_PORT).unwrap() & STATUS_OUTPUT_FULL, 0);
        // An empty data port repeats its last byte.
        assert_eq!(space.inb(DATA_PORT).unwrap(), KBD_ACK);
        assert_eq!(kbd.lock().unwrap().pending(), 0);
        // The queue is bounded.
        let big = vec![0u8; EMULATED_QUEUE_MAX + 10];
        assert_eq!(kbd.lock().unwrap().push(&big), EMULATED_QUEUE_MAX);
    }

    #[test]
    fn the_poller_thread_delivers_and_stops() {
        use std::sync::atomic::AtomicUsize;
        let mut space = PortSpace::new();
        let kbd = EmulatedI8042::install(&mut space).unwrap();
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = wakes.clone();
        let wake = move || {
            counter.fetch_add(1, Ordering::Relaxed);
        };
        let mut poller = Poller::spawn(move || Ok(space), Duration::from_millis(1), wake).unwrap();
        thread::sleep(Duration::from_millis(20));
        assert_eq!(wakes.load(Ordering::Relaxed), 0, "an idle controller wakes no one");
        kbd.lock().unwrap().push(HELLO_WORLD);
        let mut events = Vec::new();
        for _ in 0..2000 {
            poller.drain(&mut events);
            if Decoder::us().decode(&events) == b"Hello, World!\n" {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(Decoder::us().decode(&events), b"Hello, World!\n");
        assert!(wakes.load(Ordering::Relaxed) > 0);
        poller.stop();
    }

    #[test]
    fn the_poller_reports_a_missing_controller() {
        let err = Poller::spawn(|| Ok(PortSpace::new()), Duration::from_millis(1), || {});
        assert!(matches!(err, Err(I8042Error::NoController { .. })));
    }
}
