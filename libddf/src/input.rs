//! Keyboard input: Linux evdev records, key codes, layouts, and evdev nodes.
//!
//! Everything a keyboard driver and its clients share:
//!
//! - [`InputEvent`], the Linux evdev `struct input_event` with its 64-bit
//!   layout (24 bytes, host byte order, as `read(2)` on `/dev/input/event*`
//!   returns it), and [`InputEvent::parse_records`] for a byte stream of them.
//! - The event types and key codes of `linux/input-event-codes.h` that a
//!   keyboard uses ([`EV_KEY`], [`KEY_A`], ...).
//! - [`layout`]: keyboard layouts (US, German). A [`Decoder`] turns key
//!   events into text with Shift, AltGr, Caps Lock, Ctrl and dead keys;
//!   its reverse, [`Layout::text_to_events`] (and [`text_to_events`] for
//!   US), turns text into the key presses that type it (what `ddmctl type`
//!   sends to a virtual keyboard).
//! - [`keyboard`]: the ioctl ABI of the `ddf-keyboard` text devices (raw
//!   mode, loss counters, layout), so programs need not depend on the driver.
//! - [`evio`]: the kernel's evdev ABI (the `EVIOC*` ioctls, matched the way
//!   the kernel matches them, `struct input_id`, bitmaps, clocks).
//! - [`evnode`]: serving evdev nodes as the kernel's `evdev.c` does: a
//!   device's identity and state, each open file's event queue (packets,
//!   `SYN_DROPPED`, clocks, masks), and the answers to every ioctl.
//! - [`evdev`]: finding and reading the kernel's keyboards under `/dev/input`.
//!
//! 32-bit hosts, where `struct input_event` is 16 bytes, are not supported.

use std::time::{SystemTime, UNIX_EPOCH};

/// Event type: separates groups of events ([`SYN_REPORT`]).
pub const EV_SYN: u16 = 0x00;
/// Event type: a key or button changed state.
pub const EV_KEY: u16 = 0x01;
/// Event type: miscellaneous (`MSC_SCAN` carries scan codes).
pub const EV_MSC: u16 = 0x04;
/// Event type: LEDs (Caps Lock, Num Lock, ...).
pub const EV_LED: u16 = 0x11;
/// Event type: autorepeat settings.
pub const EV_REP: u16 = 0x14;
/// The highest event type.
pub const EV_MAX: u16 = 0x1f;

/// [`EV_SYN`] code: end of one group of events.
pub const SYN_REPORT: u16 = 0;
/// [`EV_SYN`] code: the kernel's buffer overflowed and events were lost.
pub const SYN_DROPPED: u16 = 3;
/// [`EV_MSC`] code: the raw scan code of the next key event.
pub const MSC_SCAN: u16 = 4;

/// LED number of Num Lock.
pub const LED_NUML: u16 = 0x00;
/// LED number of Caps Lock.
pub const LED_CAPSL: u16 = 0x01;
/// The highest LED number.
pub const LED_MAX: u16 = 0x0f;

/// `value` of an [`EV_KEY`] event: the key went up.
pub const KEY_RELEASE: i32 = 0;
/// `value` of an [`EV_KEY`] event: the key went down.
pub const KEY_PRESS: i32 = 1;
/// `value` of an [`EV_KEY`] event: the key is held and autorepeats.
pub const KEY_REPEAT: i32 = 2;

macro_rules! key_codes {
    ($($name:ident = $value:expr;)*) => {
        $(
            #[doc = concat!("Key code `", stringify!($name), "` (linux/input-event-codes.h).")]
            pub const $name: u16 = $value;
        )*
    };
}

key_codes! {
    KEY_RESERVED = 0;
    KEY_ESC = 1;
    KEY_1 = 2;
    KEY_2 = 3;
    KEY_3 = 4;
    KEY_4 = 5;
    KEY_5 = 6;
    KEY_6 = 7;
    KEY_7 = 8;
    KEY_8 = 9;
    KEY_9 = 10;
    KEY_0 = 11;
    KEY_MINUS = 12;
    KEY_EQUAL = 13;
    KEY_BACKSPACE = 14;
    KEY_TAB = 15;
    KEY_Q = 16;
    KEY_W = 17;
    KEY_E = 18;
    KEY_R = 19;
    KEY_T = 20;
    KEY_Y = 21;
    KEY_U = 22;
    KEY_I = 23;
    KEY_O = 24;
    KEY_P = 25;
    KEY_LEFTBRACE = 26;
    KEY_RIGHTBRACE = 27;
    KEY_ENTER = 28;
    KEY_LEFTCTRL = 29;
    KEY_A = 30;
    KEY_S = 31;
    KEY_D = 32;
    KEY_F = 33;
    KEY_G = 34;
    KEY_H = 35;
    KEY_J = 36;
    KEY_K = 37;
    KEY_L = 38;
    KEY_SEMICOLON = 39;
    KEY_APOSTROPHE = 40;
    KEY_GRAVE = 41;
    KEY_LEFTSHIFT = 42;
    KEY_BACKSLASH = 43;
    KEY_Z = 44;
    KEY_X = 45;
    KEY_C = 46;
    KEY_V = 47;
    KEY_B = 48;
    KEY_N = 49;
    KEY_M = 50;
    KEY_COMMA = 51;
    KEY_DOT = 52;
    KEY_SLASH = 53;
    KEY_RIGHTSHIFT = 54;
    KEY_KPASTERISK = 55;
    KEY_LEFTALT = 56;
    KEY_SPACE = 57;
    KEY_CAPSLOCK = 58;
    KEY_F1 = 59;
    KEY_F2 = 60;
    KEY_F3 = 61;
    KEY_F4 = 62;
    KEY_F5 = 63;
    KEY_F6 = 64;
    KEY_F7 = 65;
    KEY_F8 = 66;
    KEY_F9 = 67;
    KEY_F10 = 68;
    KEY_NUMLOCK = 69;
    KEY_SCROLLLOCK = 70;
    KEY_KP7 = 71;
    KEY_KP8 = 72;
    KEY_KP9 = 73;
    KEY_KPMINUS = 74;
    KEY_KP4 = 75;
    KEY_KP5 = 76;
    KEY_KP6 = 77;
    KEY_KPPLUS = 78;
    KEY_KP1 = 79;
    KEY_KP2 = 80;
    KEY_KP3 = 81;
    KEY_KP0 = 82;
    KEY_KPDOT = 83;
    KEY_102ND = 86;
    KEY_F11 = 87;
    KEY_F12 = 88;
    KEY_KPENTER = 96;
    KEY_RIGHTCTRL = 97;
    KEY_KPSLASH = 98;
    KEY_SYSRQ = 99;
    KEY_RIGHTALT = 100;
    KEY_HOME = 102;
    KEY_UP = 103;
    KEY_PAGEUP = 104;
    KEY_LEFT = 105;
    KEY_RIGHT = 106;
    KEY_END = 107;
    KEY_DOWN = 108;
    KEY_PAGEDOWN = 109;
    KEY_INSERT = 110;
    KEY_DELETE = 111;
    KEY_PAUSE = 119;
    KEY_LEFTMETA = 125;
    KEY_RIGHTMETA = 126;
    KEY_COMPOSE = 127;
    KEY_MAX = 0x2ff;
}

/// Size in bytes of one [`InputEvent`] record on the wire.
pub const EVENT_SIZE: usize = 24;

/// What can be wrong with input data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// [`InputEvent::parse_records`]: the bytes are not whole records.
    #[error("{len} bytes are not a whole number of {EVENT_SIZE}-byte input events")]
    PartialRecord {
        /// How many bytes there were.
        len: usize,
    },
    /// [`Layout::text_to_events`]: a character no key of the layout types.
    #[error("{ch:?} (at byte {at}) cannot be typed on a {layout} keyboard")]
    Untypeable {
        /// The character.
        ch: char,
        /// Its byte offset in the text.
        at: usize,
        /// The layout.
        layout: Layout,
    },
}

/// What a key did, from the `value` of an [`EV_KEY`] event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAction {
    /// Went up ([`KEY_RELEASE`]).
    Release,
    /// Went down ([`KEY_PRESS`]).
    Press,
    /// Held down, autorepeating ([`KEY_REPEAT`]).
    Repeat,
}

impl KeyAction {
    /// The `value` of the event.
    pub const fn value(self) -> i32 {
        match self {
            KeyAction::Release => KEY_RELEASE,
            KeyAction::Press => KEY_PRESS,
            KeyAction::Repeat => KEY_REPEAT,
        }
    }

    /// The action for an event `value`, if it is one.
    pub const fn from_value(value: i32) -> Option<KeyAction> {
        match value {
            KEY_RELEASE => Some(KeyAction::Release),
            KEY_PRESS => Some(KeyAction::Press),
            KEY_REPEAT => Some(KeyAction::Repeat),
            _ => None,
        }
    }
}

/// One Linux input event (`struct input_event`, 64-bit layout).
///
/// On the wire ([`InputEvent::to_bytes`]) it is 24 bytes in host byte order:
///
/// | offset | size | field |
/// |--------|------|-------|
/// | 0      | 8    | `time.tv_sec` (i64) |
/// | 8      | 8    | `time.tv_usec` (i64) |
/// | 16     | 2    | `type` (u16) |
/// | 18     | 2    | `code` (u16) |
/// | 20     | 4    | `value` (i32) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InputEvent {
    /// Seconds of the time stamp (`CLOCK_REALTIME` for evdev by default).
    pub sec: i64,
    /// Microseconds of the time stamp.
    pub usec: i64,
    /// Event type ([`EV_KEY`], [`EV_SYN`], ...); `type` in C.
    pub ev_type: u16,
    /// Event code (a key code for [`EV_KEY`]).
    pub code: u16,
    /// Event value (a [`KeyAction`] value for [`EV_KEY`]).
    pub value: i32,
}

impl InputEvent {
    /// An event with no time stamp.
    pub const fn new(ev_type: u16, code: u16, value: i32) -> InputEvent {
        InputEvent { sec: 0, usec: 0, ev_type, code, value }
    }

    /// A key event with no time stamp.
    pub const fn key(code: u16, action: KeyAction) -> InputEvent {
        InputEvent::new(EV_KEY, code, action.value())
    }

    /// `SYN_REPORT`, with no time stamp.
    pub const fn syn() -> InputEvent {
        InputEvent::new(EV_SYN, SYN_REPORT, 0)
    }

    /// This event stamped with `time` (`CLOCK_REALTIME` as evdev uses it).
    pub fn stamped(self, time: SystemTime) -> InputEvent {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        InputEvent {
            sec: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            usec: i64::from(since.subsec_micros()),
            ..self
        }
    }

    /// This event stamped with the current time.
    pub fn stamped_now(self) -> InputEvent {
        self.stamped(SystemTime::now())
    }

    /// The key code and action, if this is an [`EV_KEY`] event with a
    /// press, release or repeat value.
    pub fn key_action(&self) -> Option<(u16, KeyAction)> {
        if self.ev_type != EV_KEY {
            return None;
        }
        KeyAction::from_value(self.value).map(|a| (self.code, a))
    }

    /// The 24-byte record (see the type's documentation).
    pub fn to_bytes(&self) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        b[0..8].copy_from_slice(&self.sec.to_ne_bytes());
        b[8..16].copy_from_slice(&self.usec.to_ne_bytes());
        b[16..18].copy_from_slice(&self.ev_type.to_ne_bytes());
        b[18..20].copy_from_slice(&self.code.to_ne_bytes());
        b[20..24].copy_from_slice(&self.value.to_ne_bytes());
        b
    }

    /// Decodes one record. Every 24-byte array is a record; what its
    /// fields mean is for the caller to judge.
    pub fn from_bytes(b: &[u8; EVENT_SIZE]) -> InputEvent {
        let [s0, s1, s2, s3, s4, s5, s6, s7, u0, u1, u2, u3, u4, u5, u6, u7, t0, t1, c0, c1, v0, v1, v2, v3] = *b;
        InputEvent {
            sec: i64::from_ne_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
            usec: i64::from_ne_bytes([u0, u1, u2, u3, u4, u5, u6, u7]),
            ev_type: u16::from_ne_bytes([t0, t1]),
            code: u16::from_ne_bytes([c0, c1]),
            value: i32::from_ne_bytes([v0, v1, v2, v3]),
        }
    }

    /// Decodes a run of whole records; fails (decoding nothing) unless
    /// `bytes` is a multiple of [`EVENT_SIZE`] long.
    pub fn parse_records(bytes: &[u8]) -> Result<Vec<InputEvent>, InputError> {
        if bytes.len() % EVENT_SIZE != 0 {
            return Err(InputError::PartialRecord { len: bytes.len() });
        }
        Ok(records(bytes).map(InputEvent::from_bytes).collect())
    }

    /// Encodes events as consecutive records.
    pub fn encode_records(events: &[InputEvent]) -> Vec<u8> {
        events.iter().flat_map(|e| e.to_bytes()).collect()
    }
}

/// The whole records at the start of `bytes` (a partial one at the end is
/// left out).
fn records(bytes: &[u8]) -> impl Iterator<Item = &[u8; EVENT_SIZE]> {
    bytes.chunks_exact(EVENT_SIZE).filter_map(|c| <&[u8; EVENT_SIZE]>::try_from(c).ok())
}

// ---------------------------------------------------------------------------
// Layouts.

pub mod evio;
pub mod evnode;
pub mod layout;

pub use layout::{Decoder, Layout};

/// The key events that type `text` on a US keyboard: see
/// [`Layout::text_to_events`].
pub fn text_to_events(text: &str) -> Result<Vec<InputEvent>, InputError> {
    Layout::Us.text_to_events(text)
}

/// Encodes an ioctl request number (`_IOC`), the arch-specific way.
macro_rules! ioc {
    (read, $ty:expr, $nr:expr, $size:expr) => {
        nix::request_code_read!($ty, $nr, $size)
    };
    (write, $ty:expr, $nr:expr, $size:expr) => {
        nix::request_code_write!($ty, $nr, $size)
    };
}

// ---------------------------------------------------------------------------

pub mod keyboard {
    //! The device ABI of `ddf-keyboard` (`/ddf/keyboard0`, ...): its ioctls
    //! and their data. The ioctl numbers carry their argument size (`_IOW`,
    //! `_IOR`), as FUSE needs to forward them.
    //!
    //! | request | number (x86-64) | argument | what |
    //! |---------|-----------------|----------|------|
    //! | [`SET_MODE`]  | `0x40044401` `_IOW('D', 1, u32)` | `u32` in: [`MODE_TEXT`] or [`MODE_RAW`] | switch this handle's read format; pending bytes are discarded when the mode changes |
    //! | [`GET_MODE`]  | `0x80044402` `_IOR('D', 2, u32)` | `u32` out | this handle's mode |
    //! | [`GET_STATS`] | `0x80204403` `_IOR('D', 3, [u64; 4])` | [`Stats`] out | loss counters |
    //! | [`GET_LAYOUT`] | `0x80044404` `_IOR('D', 4, u32)` | `u32` out: [`Layout::as_u32`](super::Layout::as_u32) | the keyboard's layout (what `ddmctl type` types with) |
    //!
    //! The argument is a pointer, as for any `_IOW`/`_IOR` request: in C,
    //! `uint32_t m = 1; ioctl(fd, 0x40044401, &m);`.

    /// Reads give the typed text (the default).
    pub const MODE_TEXT: u32 = 0;
    /// Reads give whole 24-byte [`super::InputEvent`] records, one per key
    /// press, release or repeat.
    pub const MODE_RAW: u32 = 1;

    /// `_IOW('D', 1, u32)`: set the handle's mode.
    pub const SET_MODE: u32 = ioc!(write, b'D', 1, 4) as u32;
    /// `_IOR('D', 2, u32)`: get the handle's mode.
    pub const GET_MODE: u32 = ioc!(read, b'D', 2, 4) as u32;
    /// `_IOR('D', 3, [u64; 4])`: get the loss counters ([`Stats`]).
    pub const GET_STATS: u32 = ioc!(read, b'D', 3, Stats::SIZE) as u32;
    /// `_IOR('D', 4, u32)`: get the keyboard's layout
    /// ([`Layout::from_u32`](super::Layout::from_u32)).
    pub const GET_LAYOUT: u32 = ioc!(read, b'D', 4, 4) as u32;

    /// The layout of the keyboard open as `file`, asked with [`GET_LAYOUT`]:
    /// `None` if the device does not say (an evdev node, another driver,
    /// an older keyboard driver) or names a layout this library does not
    /// know.
    pub fn layout_of(file: &std::fs::File) -> Option<super::Layout> {
        use std::os::fd::AsRawFd;
        let mut n = 0u32;
        // SAFETY: GET_LAYOUT encodes a 4-byte argument, so the kernel
        // writes at most 4 bytes into `n`, which is live for the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), GET_LAYOUT as _, &mut n as *mut u32) };
        if rc < 0 {
            return None;
        }
        super::Layout::from_u32(n)
    }

    /// How a handle's reads are formatted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub enum Mode {
        /// Typed text ([`MODE_TEXT`]).
        #[default]
        Text,
        /// Raw event records ([`MODE_RAW`]).
        Raw,
    }

    impl Mode {
        /// The mode for an ioctl argument, if it names one.
        pub fn from_u32(value: u32) -> Option<Mode> {
            match value {
                MODE_TEXT => Some(Mode::Text),
                MODE_RAW => Some(Mode::Raw),
                _ => None,
            }
        }

        /// The ioctl argument for this mode.
        pub fn as_u32(self) -> u32 {
            match self {
                Mode::Text => MODE_TEXT,
                Mode::Raw => MODE_RAW,
            }
        }
    }

    /// The loss counters [`GET_STATS`] returns: four `u64` in host byte
    /// order, in field order. Counts are bytes: text bytes in text mode,
    /// 24 per record in raw mode.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Stats {
        /// Bytes this handle lost because its buffer was full.
        pub lost: u64,
        /// Bytes every handle of this device lost, since the driver started.
        pub lost_device: u64,
        /// Bytes every handle of every device of this driver lost.
        pub lost_driver: u64,
        /// Bytes waiting in this handle's buffer now.
        pub pending: u64,
    }

    impl Stats {
        /// Size of the encoded form.
        pub const SIZE: usize = 32;

        /// The ioctl's output bytes.
        pub fn to_bytes(&self) -> [u8; Stats::SIZE] {
            let mut b = [0u8; Stats::SIZE];
            for (chunk, v) in b.chunks_exact_mut(8).zip([self.lost, self.lost_device, self.lost_driver, self.pending]) {
                chunk.copy_from_slice(&v.to_ne_bytes());
            }
            b
        }

        /// Decodes the ioctl's output bytes.
        pub fn from_bytes(b: &[u8; Stats::SIZE]) -> Stats {
            let word = |i: usize| {
                b.get(i * 8..i * 8 + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()).map_or(0, u64::from_ne_bytes)
            };
            Stats { lost: word(0), lost_device: word(1), lost_driver: word(2), pending: word(3) }
        }
    }
}

// ---------------------------------------------------------------------------

pub mod evdev {
    //! Keyboards of the Linux input subsystem (`/dev/input/event*`).
    //!
    //! [`find_keyboards`] opens every event device that looks like a
    //! keyboard; an [`EvdevDevice`] is read without `EVIOCGRAB`, so the rest
    //! of the system (a desktop, a console) still gets every key: ddf only
    //! snoops. Reading needs read access to the device nodes (root, or the
    //! `input` group).

    use std::fs::File;
    use std::io::{ErrorKind, Read};
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};

    use super::evio::{self, AbsInfo, InputId, EV_FF, INPUT_PROP_MAX};
    use super::evnode::{Bits, Caps, Identity, State};
    use super::{InputEvent, EVENT_SIZE, EV_KEY, EV_MAX, KEY_ESC, KEY_MAX, KEY_S, LED_CAPSL, LED_MAX, LED_NUML};

    /// Where the kernel's event devices live.
    pub const INPUT_DIR: &str = "/dev/input";

    /// At most this many records are read per [`EvdevDevice::read_events`].
    const READ_BATCH: usize = 64;

    /// What can go wrong with an event device.
    #[derive(Debug, thiserror::Error)]
    pub enum EvdevError {
        /// Listing the input directory failed.
        #[error("cannot list {dir}")]
        List {
            /// The directory.
            dir: PathBuf,
            /// Why.
            #[source]
            source: std::io::Error,
        },
        /// Opening a device failed.
        #[error("cannot open {path}")]
        Open {
            /// The device.
            path: PathBuf,
            /// Why.
            #[source]
            source: std::io::Error,
        },
        /// An ioctl failed (the file is probably not an event device).
        #[error("{request} on {path} failed")]
        Ioctl {
            /// The device.
            path: PathBuf,
            /// The request (`EVIOCGBIT`, ...).
            request: &'static str,
            /// Why.
            #[source]
            source: std::io::Error,
        },
        /// Reading events failed.
        #[error("reading {path} failed")]
        Read {
            /// The device.
            path: PathBuf,
            /// Why.
            #[source]
            source: std::io::Error,
        },
        /// The device was unplugged (`ENODEV`).
        #[error("{path} is gone")]
        Gone {
            /// The device.
            path: PathBuf,
        },
    }

    /// Whether capability bitmaps describe a keyboard, the way udev decides
    /// `ID_INPUT_KEYBOARD`: the device reports [`EV_KEY`] and has every key
    /// from Escape to `S` (codes 1-31: the digits, the top letter row, `A`,
    /// `S`). Mice, power buttons and remote controls fail this.
    ///
    /// `ev_bits` is the `EVIOCGBIT(0)` bitmap, `key_bits` the
    /// `EVIOCGBIT(EV_KEY)` bitmap (bit `n` of byte `n / 8`, as the kernel
    /// lays them out on a little-endian host).
    pub fn looks_like_keyboard(ev_bits: &[u8], key_bits: &[u8]) -> bool {
        bit(ev_bits, EV_KEY) && (KEY_ESC..=KEY_S).all(|k| bit(key_bits, k))
    }

    fn bit(bits: &[u8], n: u16) -> bool {
        bits.get(usize::from(n / 8)).is_some_and(|b| b & (1 << (n % 8)) != 0)
    }

    /// An open event device.
    #[derive(Debug)]
    pub struct EvdevDevice {
        file: File,
        path: PathBuf,
        name: String,
    }

    impl EvdevDevice {
        /// Opens `path` for reading, non-blocking (for [`EvdevDevice::read_events`]
        /// from an event loop), and reads its name.
        pub fn open(path: &Path) -> Result<EvdevDevice, EvdevError> {
            let file = File::options()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map_err(|source| EvdevError::Open { path: path.to_owned(), source })?;
            let mut dev = EvdevDevice { file, path: path.to_owned(), name: String::new() };
            let mut name = [0u8; 256];
            let n = dev.ioctl_read("EVIOCGNAME", ioc!(read, b'E', 0x06, name.len()), &mut name)?;
            let name = name.get(..n).unwrap_or_default();
            let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            dev.name = String::from_utf8_lossy(&name[..end]).into_owned();
            Ok(dev)
        }

        /// The device node.
        pub fn path(&self) -> &Path {
            &self.path
        }

        /// The name the kernel gives the device ("AT Translated Set 2 keyboard").
        pub fn name(&self) -> &str {
            &self.name
        }

        /// Whether the device is a keyboard ([`looks_like_keyboard`]).
        pub fn is_keyboard(&self) -> Result<bool, EvdevError> {
            let mut ev_bits = [0u8; EV_MAX as usize / 8 + 1];
            self.ioctl_read("EVIOCGBIT(0)", ioc!(read, b'E', 0x20, ev_bits.len()), &mut ev_bits)?;
            let mut key_bits = [0u8; KEY_MAX as usize / 8 + 1];
            let request = ioc!(read, b'E', 0x20 + EV_KEY, key_bits.len());
            self.ioctl_read("EVIOCGBIT(EV_KEY)", request, &mut key_bits)?;
            Ok(looks_like_keyboard(&ev_bits, &key_bits))
        }

        /// The state of the Caps Lock and Num Lock LEDs (`EVIOCGLED`), to
        /// start a decoder in step with the keyboard.
        pub fn locks(&self) -> Result<(bool, bool), EvdevError> {
            let mut leds = [0u8; LED_MAX as usize / 8 + 1];
            self.ioctl_read("EVIOCGLED", ioc!(read, b'E', 0x19, leds.len()), &mut leds)?;
            Ok((bit(&leds, LED_CAPSL), bit(&leds, LED_NUML)))
        }

        /// What the device says it is, read with the ioctls its evdev node
        /// answers (name, `phys`, `uniq`, ids, properties, every
        /// capability bitmap, the absolute axes), for a node that mirrors
        /// it. Force feedback is left out: a mirror does not carry it.
        pub fn identity(&self) -> Result<Identity, EvdevError> {
            let mut id = [0u8; InputId::SIZE];
            self.ioctl_read("EVIOCGID", evio::EVIOCGID as _, &mut id)?;
            let mut identity = Identity::new(&self.name, InputId::from_bytes(&id));
            identity.phys = self.string("EVIOCGPHYS", evio::eviocgphys)?;
            identity.uniq = self.string("EVIOCGUNIQ", evio::eviocguniq)?;
            identity.props = self.bitmap("EVIOCGPROP", evio::eviocgprop, INPUT_PROP_MAX)?;
            let mut caps = Caps::default();
            for (ev, max) in Caps::TYPES {
                let bits = self.bitmap("EVIOCGBIT", |len| evio::eviocgbit(ev, len), max)?;
                if let Some(slot) = caps.for_type_mut(ev) {
                    *slot = bits;
                }
            }
            caps.ev.set(EV_FF, false);
            caps.ff = Bits::new(evio::FF_MAX);
            for abs in caps.abs.iter().collect::<Vec<_>>() {
                let mut info = [0u8; AbsInfo::SIZE];
                self.ioctl_read("EVIOCGABS", evio::eviocgabs(abs) as _, &mut info)?;
                identity.absinfo.insert(abs, AbsInfo::from_bytes(&info));
            }
            identity.caps = caps;
            Ok(identity)
        }

        /// What is down, lit and on now, and the autorepeat settings
        /// (`EVIOCGKEY`, `EVIOCGLED`, `EVIOCGSND`, `EVIOCGSW`, `EVIOCGREP`).
        pub fn state(&self) -> Result<State, EvdevError> {
            let mut state = State {
                key: self.bitmap("EVIOCGKEY", evio::eviocgkey, KEY_MAX)?,
                led: self.bitmap("EVIOCGLED", evio::eviocgled, LED_MAX)?,
                snd: self.bitmap("EVIOCGSND", evio::eviocgsnd, evio::SND_MAX)?,
                sw: self.bitmap("EVIOCGSW", evio::eviocgsw, evio::SW_MAX)?,
                ..State::default()
            };
            let mut rep = [0u8; 8];
            // A device without EV_REP answers ENOSYS: the defaults stay.
            if self.ioctl_read("EVIOCGREP", evio::EVIOCGREP as _, &mut rep).is_ok() {
                let word = |i: usize| u32::from_ne_bytes([rep[i], rep[i + 1], rep[i + 2], rep[i + 3]]);
                state.rep = [word(0), word(4)];
            }
            Ok(state)
        }

        /// A string ioctl; `ENOENT` (the device has none) is `None`.
        fn string(&self, what: &'static str, cmd: fn(usize) -> u32) -> Result<Option<String>, EvdevError> {
            let mut buf = [0u8; 256];
            match self.ioctl_read(what, cmd(buf.len()) as _, &mut buf) {
                Ok(n) => {
                    let got = buf.get(..n).unwrap_or_default();
                    let end = got.iter().position(|b| *b == 0).unwrap_or(got.len());
                    Ok(Some(String::from_utf8_lossy(&got[..end]).into_owned()))
                }
                Err(EvdevError::Ioctl { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => Ok(None),
                Err(e) => Err(e),
            }
        }

        /// A bitmap ioctl for codes `0..=max`.
        fn bitmap(&self, what: &'static str, cmd: impl Fn(usize) -> u32, max: u16) -> Result<Bits, EvdevError> {
            let mut buf = vec![0u8; Bits::new(max).to_user(max).len()];
            let n = self.ioctl_read(what, cmd(buf.len()) as _, &mut buf)?;
            Ok(Bits::from_user(buf.get(..n).unwrap_or_default(), max))
        }

        /// Appends the events waiting now (at most 64 per call) to `out`;
        /// never blocks. Returns how many were read. [`EvdevError::Gone`]
        /// means the device was unplugged.
        pub fn read_events(&mut self, out: &mut Vec<InputEvent>) -> Result<usize, EvdevError> {
            let mut buf = [0u8; READ_BATCH * EVENT_SIZE];
            let n = loop {
                match self.file.read(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(0),
                    Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                        return Err(EvdevError::Gone { path: self.path.clone() })
                    }
                    Err(source) => return Err(EvdevError::Read { path: self.path.clone(), source }),
                }
            };
            // evdev only ever returns whole records; anything else is dropped.
            let got = buf.get(..n).unwrap_or_default();
            if got.len() % EVENT_SIZE != 0 {
                log::warn!(
                    "{}: dropped a partial event record of {} bytes",
                    self.path.display(),
                    got.len() % EVENT_SIZE
                );
            }
            let before = out.len();
            out.extend(super::records(got).map(InputEvent::from_bytes));
            Ok(out.len() - before)
        }

        /// An `_IOC_READ` ioctl whose size field is `buf.len()`; returns
        /// what the kernel returns (bytes copied, for the string and bitmap
        /// requests used here).
        fn ioctl_read(
            &self,
            what: &'static str,
            request: nix::sys::ioctl::ioctl_num_type,
            buf: &mut [u8],
        ) -> Result<usize, EvdevError> {
            // SAFETY: every caller encodes `buf.len()` as the request's size,
            // so the kernel writes at most that many bytes into `buf`, which
            // is live and exclusively borrowed for the call.
            let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), request, buf.as_mut_ptr()) };
            usize::try_from(rc).map_err(|_| EvdevError::Ioctl {
                path: self.path.clone(),
                request: what,
                source: std::io::Error::last_os_error(),
            })
        }
    }

    impl AsRawFd for EvdevDevice {
        fn as_raw_fd(&self) -> RawFd {
            self.file.as_raw_fd()
        }
    }

    impl AsFd for EvdevDevice {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.file.as_fd()
        }
    }

    /// Opens every keyboard among the `event<N>` devices in `dir`, in the
    /// order of `N`. A missing directory means no keyboards; a device that
    /// cannot be opened or asked is logged and skipped.
    pub fn find_keyboards(dir: &Path) -> Result<Vec<EvdevDevice>, EvdevError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(EvdevError::List { dir: dir.to_owned(), source }),
        };
        let mut numbered: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let n = e.file_name().to_str()?.strip_prefix("event")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        numbered.sort();
        let mut found = Vec::new();
        for (_, path) in numbered {
            match EvdevDevice::open(&path).and_then(|d| d.is_keyboard().map(|k| (d, k))) {
                Ok((dev, true)) => {
                    log::info!("{}: keyboard {:?}", path.display(), dev.name());
                    found.push(dev);
                }
                Ok((dev, false)) => {
                    log::debug!("{}: {:?} is not a keyboard", path.display(), dev.name())
                }
                Err(e) => log::warn!("skipping {}: {e}", path.display()),
            }
        }
        Ok(found)
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used)]
        use std::io::Write;

        use super::super::{text_to_events, Decoder};
        use super::*;

        /// An "event device" that is a pipe: what read(2) gives is what
        /// was written.
        fn piped() -> (EvdevDevice, File) {
            let (r, w) = nix::unistd::pipe().unwrap();
            let flags = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_GETFL).unwrap();
            let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
            let dev = EvdevDevice { file: File::from(r), path: PathBuf::from("pipe"), name: "test".into() };
            (dev, File::from(w))
        }

        #[test]
        fn reads_whole_records_and_never_blocks() {
            let (mut dev, mut w) = piped();
            let mut out = Vec::new();
            assert_eq!(dev.read_events(&mut out).unwrap(), 0);
            let events = text_to_events("Hi!").unwrap();
            w.write_all(&InputEvent::encode_records(&events)).unwrap();
            let mut n = 0;
            while let Ok(got @ 1..) = dev.read_events(&mut out) {
                n += got;
            }
            assert_eq!(n, events.len());
            assert_eq!(out, events);
            assert_eq!(Decoder::us().decode(&out), b"Hi!");
            // A torn record (never from evdev) is dropped, not a panic.
            out.clear();
            let mut torn = InputEvent::syn().to_bytes().to_vec();
            torn.extend_from_slice(&[1, 2, 3]);
            w.write_all(&torn).unwrap();
            assert_eq!(dev.read_events(&mut out).unwrap(), 1);
            assert_eq!(out, [InputEvent::syn()]);
            // Not an event device: the ioctls fail cleanly.
            assert!(matches!(dev.is_keyboard(), Err(EvdevError::Ioctl { .. })));
            assert!(dev.locks().is_err());
            assert_eq!(dev.name(), "test");
            assert_eq!(dev.path(), Path::new("pipe"));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `KEY_A` pressed at 1700000000.123456, little-endian.
    #[cfg(target_endian = "little")]
    const KEY_A_PRESS: [u8; EVENT_SIZE] = [
        0x00, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, // tv_sec 1_700_000_000
        0x40, 0xe2, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, // tv_usec 123_456
        0x01, 0x00, // type EV_KEY
        0x1e, 0x00, // code KEY_A (30)
        0x01, 0x00, 0x00, 0x00, // value 1 (press)
    ];

    #[test]
    #[cfg(target_endian = "little")]
    fn event_layout_is_pinned() {
        let ev = InputEvent { sec: 1_700_000_000, usec: 123_456, ev_type: EV_KEY, code: KEY_A, value: KEY_PRESS };
        assert_eq!(ev.to_bytes(), KEY_A_PRESS);
        assert_eq!(InputEvent::from_bytes(&KEY_A_PRESS), ev);
        // A negative value and a large code survive the trip.
        let odd = InputEvent::new(EV_MSC, 0xfffe, -2);
        assert_eq!(
            odd.to_bytes(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0xfe, 0xff, 0xfe, 0xff, 0xff, 0xff]
        );
        assert_eq!(InputEvent::from_bytes(&odd.to_bytes()), odd);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn records_are_parsed_whole_or_not_at_all() {
        let mut two = KEY_A_PRESS.to_vec();
        two.extend_from_slice(&InputEvent::syn().to_bytes());
        let events = InputEvent::parse_records(&two).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].key_action(), Some((KEY_A, KeyAction::Press)));
        assert_eq!(events[1], InputEvent::syn());
        assert_eq!(InputEvent::encode_records(&events), two);
        assert_eq!(InputEvent::parse_records(&[]).unwrap(), []);
        for len in [1, 23, 25, 47] {
            assert_eq!(InputEvent::parse_records(&two[..len.min(two.len())]), Err(InputError::PartialRecord { len }));
        }
    }

    #[test]
    fn stamping() {
        let t = UNIX_EPOCH + std::time::Duration::new(5, 6_007_000);
        let ev = InputEvent::key(KEY_B, KeyAction::Repeat).stamped(t);
        assert_eq!((ev.sec, ev.usec, ev.value), (5, 6_007, KEY_REPEAT));
        assert!(InputEvent::syn().stamped_now().sec > 1_600_000_000);
    }

    fn keys(seq: &[(u16, i32)]) -> Vec<InputEvent> {
        seq.iter().map(|&(c, v)| InputEvent::new(EV_KEY, c, v)).collect()
    }

    #[test]
    fn decodes_hello_world_typed_by_hand() {
        const P: i32 = KEY_PRESS;
        const R: i32 = KEY_RELEASE;
        let mut events = keys(&[
            (KEY_LEFTSHIFT, P),
            (KEY_H, P),
            (KEY_H, R),
            (KEY_LEFTSHIFT, R),
            (KEY_E, P),
            (KEY_E, R),
            (KEY_L, P),
            (KEY_L, R),
            (KEY_L, P),
            (KEY_L, R),
            (KEY_O, P),
            (KEY_O, R),
            (KEY_COMMA, P),
            (KEY_COMMA, R),
            (KEY_SPACE, P),
            (KEY_SPACE, R),
            (KEY_RIGHTSHIFT, P),
            (KEY_W, P),
            (KEY_W, R),
            (KEY_RIGHTSHIFT, R),
            (KEY_O, P),
            (KEY_O, R),
            (KEY_R, P),
            (KEY_R, R),
            (KEY_L, P),
            (KEY_L, R),
            (KEY_D, P),
            (KEY_D, R),
            (KEY_LEFTSHIFT, P),
            (KEY_1, P),
            (KEY_1, R),
            (KEY_LEFTSHIFT, R),
            (KEY_ENTER, P),
            (KEY_ENTER, R),
        ]);
        // Noise a real keyboard sends: scan codes and reports.
        events.insert(1, InputEvent::new(EV_MSC, MSC_SCAN, 0x2a));
        events.insert(3, InputEvent::syn());
        let mut d = Decoder::us();
        assert_eq!(d.decode(&events), b"Hello, World!\n");
        assert!(!d.shift() && !d.caps_lock());
    }

    #[test]
    fn text_round_trips_through_the_decoder() {
        let text = "Hello, World!\n";
        let events = text_to_events(text).unwrap();
        assert_eq!(Decoder::us().decode(&events), text.as_bytes());
        // Through the wire format too.
        let bytes = InputEvent::encode_records(&events);
        assert_eq!(bytes.len(), events.len() * EVENT_SIZE);
        let back = InputEvent::parse_records(&bytes).unwrap();
        assert_eq!(Decoder::us().decode(&back), text.as_bytes());
    }

    #[test]
    fn every_ascii_byte_round_trips() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let events = text_to_events(&all).unwrap();
        let typed = Decoder::us().decode(&events);
        assert_eq!(typed, all.as_bytes());
    }

    #[test]
    fn the_encoder_output_is_pinned() {
        // "A": shift down, a down, a up, shift up, each with a SYN_REPORT.
        let events = text_to_events("A").unwrap();
        let expect: Vec<InputEvent> =
            [(KEY_LEFTSHIFT, KEY_PRESS), (KEY_A, KEY_PRESS), (KEY_A, KEY_RELEASE), (KEY_LEFTSHIFT, KEY_RELEASE)]
                .iter()
                .flat_map(|&(c, v)| [InputEvent::new(EV_KEY, c, v), InputEvent::syn()])
                .collect();
        assert_eq!(events, expect);
        // Ctrl-C: ctrl around a plain c.
        let cc = text_to_events("\x03").unwrap();
        let codes: Vec<_> = cc.iter().filter_map(InputEvent::key_action).collect();
        assert_eq!(
            codes,
            [
                (KEY_LEFTCTRL, KeyAction::Press),
                (KEY_C, KeyAction::Press),
                (KEY_C, KeyAction::Release),
                (KEY_LEFTCTRL, KeyAction::Release)
            ]
        );
    }

    #[test]
    fn untypeable_text_is_refused() {
        assert_eq!(text_to_events("ok é"), Err(InputError::Untypeable { ch: 'é', at: 3, layout: Layout::Us }));
        assert!(text_to_events("\u{80}").is_err());
    }

    #[test]
    fn caps_lock_affects_letters_only() {
        let mut d = Decoder::us();
        let typed = d.decode(&keys(&[
            (KEY_CAPSLOCK, KEY_PRESS),
            (KEY_CAPSLOCK, KEY_REPEAT), // held: no second toggle
            (KEY_CAPSLOCK, KEY_RELEASE),
            (KEY_A, KEY_PRESS),
            (KEY_1, KEY_PRESS),
            (KEY_SLASH, KEY_PRESS),
            (KEY_LEFTSHIFT, KEY_PRESS),
            (KEY_A, KEY_PRESS),
            (KEY_1, KEY_PRESS),
            (KEY_LEFTSHIFT, KEY_RELEASE),
            (KEY_CAPSLOCK, KEY_PRESS),
            (KEY_A, KEY_PRESS),
        ]));
        assert_eq!(typed, b"A1/a!a");
    }

    #[test]
    fn both_shifts_count_until_both_are_up() {
        let mut d = Decoder::us();
        let typed = d.decode(&keys(&[
            (KEY_LEFTSHIFT, KEY_PRESS),
            (KEY_RIGHTSHIFT, KEY_PRESS),
            (KEY_LEFTSHIFT, KEY_RELEASE),
            (KEY_X, KEY_PRESS),
            (KEY_RIGHTSHIFT, KEY_RELEASE),
            (KEY_X, KEY_PRESS),
        ]));
        assert_eq!(typed, b"Xx");
    }

    #[test]
    fn punctuation_with_and_without_shift() {
        let plain = [
            KEY_MINUS,
            KEY_EQUAL,
            KEY_LEFTBRACE,
            KEY_RIGHTBRACE,
            KEY_SEMICOLON,
            KEY_APOSTROPHE,
            KEY_GRAVE,
            KEY_BACKSLASH,
            KEY_COMMA,
            KEY_DOT,
            KEY_SLASH,
            KEY_0,
            KEY_9,
        ];
        let press = |shift: bool| {
            let mut d = Decoder::us();
            d.set_caps_lock(true); // no effect on any of these
            if shift {
                d.feed(&InputEvent::key(KEY_RIGHTSHIFT, KeyAction::Press), &mut Vec::new());
            }
            let mut out = Vec::new();
            for &k in &plain {
                d.feed(&InputEvent::key(k, KeyAction::Press), &mut out);
            }
            out
        };
        assert_eq!(press(false), b"-=[];'`\\,./09");
        assert_eq!(press(true), b"_+{}:\"~|<>?)(");
    }

    #[test]
    fn control_keys_and_ctrl_codes() {
        let mut d = Decoder::us();
        let typed = d.decode(&keys(&[
            (KEY_ENTER, KEY_PRESS),
            (KEY_TAB, KEY_PRESS),
            (KEY_BACKSPACE, KEY_PRESS),
            (KEY_BACKSPACE, KEY_REPEAT),
            (KEY_SPACE, KEY_PRESS),
            (KEY_RIGHTCTRL, KEY_PRESS),
            (KEY_C, KEY_PRESS),
            (KEY_LEFTBRACE, KEY_PRESS),
            (KEY_SPACE, KEY_PRESS),
            (KEY_5, KEY_PRESS),
            (KEY_RIGHTCTRL, KEY_RELEASE),
            (KEY_C, KEY_PRESS),
        ]));
        assert_eq!(typed, b"\n\t\x08\x08 \x03\x1b\x005c");
    }

    #[test]
    fn keys_without_characters_and_other_events_type_nothing() {
        let mut d = Decoder::us();
        let mut events = keys(&[
            (KEY_F1, KEY_PRESS),
            (KEY_UP, KEY_PRESS),
            (KEY_LEFTALT, KEY_PRESS),
            (KEY_KP7, KEY_PRESS), // Num Lock off
            (KEY_MAX, KEY_PRESS),
            (0xffff, KEY_PRESS),
            (KEY_A, 7), // not a key action
        ]);
        events.push(InputEvent::new(EV_LED, LED_CAPSL, 1));
        events.push(InputEvent::new(EV_MSC, KEY_A, KEY_PRESS));
        assert_eq!(d.decode(&events), b"");
        assert!(d.alt());
        // Alt does not change characters.
        assert_eq!(d.decode(&[InputEvent::key(KEY_Q, KeyAction::Press)]), b"q");
    }

    #[test]
    fn num_lock_turns_on_keypad_digits() {
        let mut d = Decoder::us();
        let typed = d.decode(&keys(&[
            (KEY_KP1, KEY_PRESS),
            (KEY_KPPLUS, KEY_PRESS),
            (KEY_NUMLOCK, KEY_PRESS),
            (KEY_NUMLOCK, KEY_RELEASE),
            (KEY_KP1, KEY_PRESS),
            (KEY_KPDOT, KEY_PRESS),
            (KEY_KPENTER, KEY_PRESS),
        ]));
        assert_eq!(typed, b"+1.\n");
        assert!(d.num_lock());
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn keyboard_ioctl_numbers_are_pinned() {
        assert_eq!(keyboard::SET_MODE, 0x4004_4401);
        assert_eq!(keyboard::GET_MODE, 0x8004_4402);
        assert_eq!(keyboard::GET_STATS, 0x8020_4403);
        assert_eq!(keyboard::GET_LAYOUT, 0x8004_4404);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn keyboard_stats_layout_is_pinned() {
        let s = keyboard::Stats { lost: 1, lost_device: 0x0203, lost_driver: 4, pending: 5 };
        let b = s.to_bytes();
        assert_eq!(b, [1, 0, 0, 0, 0, 0, 0, 0, 3, 2, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(keyboard::Stats::from_bytes(&b), s);
        assert_eq!(keyboard::Mode::from_u32(1), Some(keyboard::Mode::Raw));
        assert_eq!(keyboard::Mode::from_u32(2), None);
        assert_eq!(keyboard::Mode::Text.as_u32(), keyboard::MODE_TEXT);
    }

    #[test]
    fn keyboard_capabilities() {
        use evdev::looks_like_keyboard;
        let ev = [1u8 << EV_KEY | 1 << EV_SYN, 0, 0, 0];
        let mut keys = [0u8; KEY_MAX as usize / 8 + 1];
        // Escape..S are bits 1..=31: bytes 0-3, all but bit 0.
        keys[..4].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff]);
        assert!(looks_like_keyboard(&ev, &keys));
        // No EV_KEY.
        assert!(!looks_like_keyboard(&[1, 0, 0, 0], &keys));
        // A power button: KEY_POWER (116) only.
        let mut power = [0u8; KEY_MAX as usize / 8 + 1];
        power[116 / 8] = 1 << (116 % 8);
        assert!(!looks_like_keyboard(&ev, &power));
        // One key missing from the block.
        keys[2] &= !0x10;
        assert!(!looks_like_keyboard(&ev, &keys));
        // Short bitmaps are not a panic.
        assert!(!looks_like_keyboard(&[], &[]));
    }

    #[test]
    fn finding_keyboards_in_a_missing_or_empty_directory() {
        let dir = std::env::temp_dir().join(format!("ddf-input-test-{}", std::process::id()));
        assert!(evdev::find_keyboards(&dir).unwrap().is_empty());
        std::fs::create_dir_all(&dir).unwrap();
        // Not event devices: skipped, not fatal.
        std::fs::write(dir.join("event0"), b"").unwrap();
        std::fs::write(dir.join("mouse0"), b"").unwrap();
        assert!(evdev::find_keyboards(&dir).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
