//! Serving evdev nodes: what the kernel's `drivers/input/evdev.c` does for
//! each open file of `/dev/input/event*`, for a driver that serves such a
//! node itself (`/ddf/input/event0`), so that evtest, libevdev and
//! python-evdev work on it unchanged.
//!
//! - [`Identity`]: what a device says it is (name, `phys`, `uniq`,
//!   `struct input_id`, properties, the capability bitmaps of every event
//!   type, absolute axes), and [`State`]: what is down, lit and on now,
//!   and the autorepeat settings.
//! - [`Client`]: one open file's event queue, with the kernel's rules: a
//!   ring of a fixed size; events are readable a whole packet at a time
//!   (up to its `SYN_REPORT`); an empty `SYN_REPORT` is dropped; when the
//!   ring overflows every unread event is dropped and `SYN_DROPPED` takes
//!   their place (followed by the newest event), and the loss is counted;
//!   time stamps on the clock `EVIOCSCLOCKID` chose (changing it discards
//!   what is queued and queues `SYN_DROPPED`); the event masks of
//!   `EVIOCSMASK`; `EVIOCGKEY` and friends flush the queued events of
//!   their type.
//! - [`ioctl`]: the answer to every evdev ioctl ([`Request`]), with the
//!   kernel's return values and errors. What concerns more than one file
//!   (a grab, new autorepeat settings, new axis limits) comes back as an
//!   [`Effect`] for the caller to apply.
//!
//! # What reaches a driver through FUSE
//!
//! A FUSE file system only receives "restricted" ioctls: the kernel copies
//! `_IOC_SIZE` bytes from the argument (for `_IOW`) before it sends the
//! request, and copies the answer back (for `_IOR`). So a driver sees the
//! argument's bytes, never the pointer, and the commands whose argument is
//! a plain number (`EVIOCGRAB`, `EVIOCREVOKE`, `EVIOCRMFF`) fail with
//! `EFAULT` in the kernel before the request is sent. The input bytes of
//! [`ioctl`] are what the kernel copied; on the direct client path
//! (`ddf::driver::Client::ioctl`) the caller gives them itself, and there:
//!
//! - `EVIOCGRAB`, `EVIOCREVOKE` take the number as a 4-byte `int`;
//! - `EVIOCSMASK` takes `struct input_mask` followed by the `codes_size`
//!   bytes of codes, and `EVIOCGMASK` takes `struct input_mask` and answers
//!   the `codes_size` bytes of codes.
//!
//! Through FUSE, `EVIOCSMASK` works where the kernel would read nothing
//! behind `codes_ptr` (an unknown type, a `codes_size` that is not a
//! multiple of 8, or 0 bytes, which masks out every code of the type), and
//! `EVIOCGMASK` (whose struct the kernel does not copy in) cannot be
//! answered; both answer `EINVAL` otherwise, as a kernel without masks does.
//!
//! 32-bit (compat) callers, whose records are 16 bytes, are not supported.

use std::collections::BTreeMap;

use super::evio::*;
use super::*;
use crate::proto::Errno;

// ---------------------------------------------------------------------------
// Bitmaps.

/// A bitmap of codes `0..=max` as the kernel keeps it: an array of
/// `unsigned long` (64-bit words, bit `n` in word `n / 64`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bits {
    words: Vec<u64>,
}

/// `BITS_TO_LONGS(n)` of the kernel: words needed for `n` bits.
fn bits_to_longs(n: usize) -> usize {
    n.div_ceil(64)
}

impl Bits {
    /// An empty bitmap for codes `0..=max`.
    pub fn new(max: u16) -> Bits {
        Bits { words: vec![0; usize::from(max) / 64 + 1] }
    }

    /// A bitmap for codes `0..=max` with `codes` set (codes above `max`
    /// are left out).
    pub fn with(max: u16, codes: impl IntoIterator<Item = u16>) -> Bits {
        let mut b = Bits::new(max);
        for c in codes {
            b.set(c, true);
        }
        b
    }

    /// The highest code it holds.
    fn capacity(&self) -> usize {
        self.words.len() * 64
    }

    /// Sets or clears `code`; a code out of range is ignored.
    pub fn set(&mut self, code: u16, on: bool) {
        if let Some(w) = self.words.get_mut(usize::from(code) / 64) {
            let bit = 1u64 << (code % 64);
            if on {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }

    /// Whether `code` is set.
    pub fn test(&self, code: u16) -> bool {
        self.words.get(usize::from(code) / 64).is_some_and(|w| w & (1 << (code % 64)) != 0)
    }

    /// Whether no code is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// The codes set, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.capacity()).filter_map(|c| u16::try_from(c).ok()).filter(|c| self.test(*c))
    }

    /// The codes set in both.
    pub fn and(&self, other: &Bits) -> Bits {
        Bits { words: self.words.iter().zip(&other.words).map(|(a, b)| a & b).collect() }
    }

    /// What `bits_to_user(bits, maxbit, ...)` copies at most: the first
    /// `BITS_TO_LONGS(maxbit)` words, host byte order.
    pub fn to_user(&self, maxbit: u16) -> Vec<u8> {
        let words = bits_to_longs(usize::from(maxbit));
        (0..words).flat_map(|i| self.words.get(i).copied().unwrap_or(0).to_ne_bytes()).collect()
    }

    /// A bitmap for `0..=max` from the kernel's layout (`EVIOCGBIT`'s
    /// answer, or mask bytes); missing bytes are 0, extra ones ignored.
    pub fn from_user(bytes: &[u8], max: u16) -> Bits {
        let mut b = Bits::new(max);
        for (i, w) in b.words.iter_mut().enumerate() {
            let mut word = [0u8; 8];
            for (j, byte) in word.iter_mut().enumerate() {
                *byte = bytes.get(i * 8 + j).copied().unwrap_or(0);
            }
            *w = u64::from_ne_bytes(word);
        }
        b
    }
}

/// `evdev_get_mask_cnt`: how many codes the mask of `ev_type` has (0 for
/// types that cannot be masked). Type 0's mask is the mask of types.
pub fn mask_count(ev_type: u32) -> usize {
    match u16::try_from(ev_type) {
        Ok(EV_SYN) => EV_CNT,
        Ok(EV_KEY) => usize::from(KEY_MAX) + 1,
        Ok(EV_REL) => usize::from(REL_MAX) + 1,
        Ok(EV_ABS) => usize::from(ABS_MAX) + 1,
        Ok(EV_MSC) => usize::from(MSC_MAX) + 1,
        Ok(EV_SW) => usize::from(SW_MAX) + 1,
        Ok(EV_LED) => usize::from(LED_MAX) + 1,
        Ok(EV_SND) => usize::from(SND_MAX) + 1,
        Ok(EV_FF) => usize::from(FF_MAX) + 1,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------
// Identity and state.

/// The capability bitmaps of a device: which event types it has, and for
/// each type which codes (`EVIOCGBIT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    /// Event types (`EVIOCGBIT(0)`).
    pub ev: Bits,
    /// Keys and buttons.
    pub key: Bits,
    /// Relative axes.
    pub rel: Bits,
    /// Absolute axes.
    pub abs: Bits,
    /// Miscellaneous codes.
    pub msc: Bits,
    /// LEDs.
    pub led: Bits,
    /// Sounds.
    pub snd: Bits,
    /// Force feedback.
    pub ff: Bits,
    /// Switches.
    pub sw: Bits,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            ev: Bits::new(EV_MAX),
            key: Bits::new(KEY_MAX),
            rel: Bits::new(REL_MAX),
            abs: Bits::new(ABS_MAX),
            msc: Bits::new(MSC_MAX),
            led: Bits::new(LED_MAX),
            snd: Bits::new(SND_MAX),
            ff: Bits::new(FF_MAX),
            sw: Bits::new(SW_MAX),
        }
    }
}

impl Caps {
    /// The event types `EVIOCGBIT` answers, with their highest code.
    pub const TYPES: [(u16, u16); 9] = [
        (0, EV_MAX),
        (EV_KEY, KEY_MAX),
        (EV_REL, REL_MAX),
        (EV_ABS, ABS_MAX),
        (EV_MSC, MSC_MAX),
        (EV_LED, LED_MAX),
        (EV_SND, SND_MAX),
        (EV_FF, FF_MAX),
        (EV_SW, SW_MAX),
    ];

    /// The bitmap `EVIOCGBIT(ev_type)` answers, with its highest code;
    /// `None` for the types the kernel answers `EINVAL` for.
    pub fn for_type(&self, ev_type: u16) -> Option<(&Bits, u16)> {
        let bits = match ev_type {
            0 => &self.ev,
            EV_KEY => &self.key,
            EV_REL => &self.rel,
            EV_ABS => &self.abs,
            EV_MSC => &self.msc,
            EV_LED => &self.led,
            EV_SND => &self.snd,
            EV_FF => &self.ff,
            EV_SW => &self.sw,
            _ => return None,
        };
        Caps::TYPES.iter().find(|(t, _)| *t == ev_type).map(|&(_, max)| (bits, max))
    }

    /// The bitmap of `ev_type`, to fill in.
    pub fn for_type_mut(&mut self, ev_type: u16) -> Option<&mut Bits> {
        Some(match ev_type {
            0 => &mut self.ev,
            EV_KEY => &mut self.key,
            EV_REL => &mut self.rel,
            EV_ABS => &mut self.abs,
            EV_MSC => &mut self.msc,
            EV_LED => &mut self.led,
            EV_SND => &mut self.snd,
            EV_FF => &mut self.ff,
            EV_SW => &mut self.sw,
            _ => return None,
        })
    }

    /// Whether the device has events of `ev_type` with `code`. For types
    /// without a code bitmap (`EV_SYN`, `EV_REP`, ...) the type is enough.
    pub fn supports(&self, ev_type: u16, code: u16) -> bool {
        if !self.ev.test(ev_type) {
            return false;
        }
        match self.for_type(ev_type) {
            Some((bits, _)) if ev_type != 0 => bits.test(code),
            _ => true,
        }
    }
}

/// What a device says it is, answered by the identity ioctls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// `EVIOCGNAME`.
    pub name: String,
    /// `EVIOCGPHYS`; `None` answers `ENOENT`, as the kernel does for a
    /// device without one.
    pub phys: Option<String>,
    /// `EVIOCGUNIQ`; `None` answers `ENOENT`.
    pub uniq: Option<String>,
    /// `EVIOCGID`.
    pub id: InputId,
    /// `EVIOCGPROP`.
    pub props: Bits,
    /// `EVIOCGBIT`.
    pub caps: Caps,
    /// `EVIOCGABS` for the axes the device has (an axis without an entry
    /// answers zeros, if the device has [`EV_ABS`]).
    pub absinfo: BTreeMap<u16, AbsInfo>,
}

impl Identity {
    /// An identity named `name` with `id`, the types and keys given, and
    /// nothing else.
    pub fn new(name: &str, id: InputId) -> Identity {
        Identity {
            name: name.to_owned(),
            phys: None,
            uniq: None,
            id,
            props: Bits::new(INPUT_PROP_MAX),
            caps: Caps::default(),
            absinfo: BTreeMap::new(),
        }
    }

    /// Whether the device has absolute axes (the kernel allocates their
    /// `absinfo` then).
    pub fn has_abs(&self) -> bool {
        self.caps.ev.test(EV_ABS)
    }
}

/// The kernel's default autorepeat delay and period (ms), as the input
/// core sets them for a device with [`EV_REP`] and no settings of its own.
pub const DEFAULT_REP: [u32; 2] = [250, 33];

/// What is down, lit and on, as `EVIOCGKEY`, `EVIOCGLED`, `EVIOCGSND`,
/// `EVIOCGSW` and `EVIOCGREP` answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Keys down.
    pub key: Bits,
    /// LEDs lit.
    pub led: Bits,
    /// Sounds playing.
    pub snd: Bits,
    /// Switches on.
    pub sw: Bits,
    /// Autorepeat delay and period, ms.
    pub rep: [u32; 2],
}

impl Default for State {
    fn default() -> State {
        State {
            key: Bits::new(KEY_MAX),
            led: Bits::new(LED_MAX),
            snd: Bits::new(SND_MAX),
            sw: Bits::new(SW_MAX),
            rep: DEFAULT_REP,
        }
    }
}

impl State {
    /// The state bitmap of `ev_type` and its highest code.
    pub fn for_type(&self, ev_type: u16) -> Option<(&Bits, u16)> {
        match ev_type {
            EV_KEY => Some((&self.key, KEY_MAX)),
            EV_LED => Some((&self.led, LED_MAX)),
            EV_SND => Some((&self.snd, SND_MAX)),
            EV_SW => Some((&self.sw, SW_MAX)),
            _ => None,
        }
    }

    /// The input core's bookkeeping for an event that is not a key (keys
    /// are the caller's, see the keyboard driver's hub): applies `ev` and
    /// says whether it goes on to the clients. LEDs, sounds and switches
    /// pass when they change the state, `EV_MSC` and `EV_SYN` always, the
    /// autorepeat settings when they change (a negative value is
    /// ignored); anything the device does not have is dropped.
    pub fn apply(&mut self, caps: &Caps, ev: &InputEvent) -> bool {
        if ev.ev_type == EV_SYN {
            return true;
        }
        if !caps.supports(ev.ev_type, ev.code) {
            return false;
        }
        let bits = match ev.ev_type {
            EV_LED => &mut self.led,
            EV_SND => &mut self.snd,
            EV_SW => &mut self.sw,
            EV_REP => {
                let Some(slot) = self.rep.get_mut(usize::from(ev.code)) else {
                    return false;
                };
                let Ok(value) = u32::try_from(ev.value) else {
                    return false;
                };
                let changed = *slot != value;
                *slot = value;
                return changed;
            }
            _ => return true,
        };
        let on = ev.value != 0;
        let changed = bits.test(ev.code) != on;
        bits.set(ev.code, on);
        changed
    }
}
// ---------------------------------------------------------------------------
// Time and open files.

mod client;

pub use client::{Client, ClockId, Stamp, MIN_QUEUE};

// ---------------------------------------------------------------------------
// Ioctls.

/// What an ioctl asks of more than the one file it was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing more.
    None,
    /// `EVIOCGRAB` with a non-zero argument: this file wants every event
    /// to itself (`EBUSY` if another has them).
    Grab,
    /// `EVIOCGRAB` with 0: release a grab (`EINVAL` if this file has none).
    Ungrab,
    /// `EVIOCREVOKE`: the file was revoked; end its waiting reads with
    /// `ENODEV` and release its grab.
    Revoke,
    /// `EVIOCSREP`: new autorepeat delay and period, to apply as the input
    /// core does ([`State::apply`] with `EV_REP` events, which every client
    /// receives).
    SetRep {
        /// `REP_DELAY`.
        delay: u32,
        /// `REP_PERIOD`.
        period: u32,
    },
    /// `EVIOCSABS`: new limits of an axis.
    SetAbs {
        /// The axis.
        abs: u16,
        /// Its limits.
        info: AbsInfo,
    },
}

/// A successful ioctl: `ioctl(2)`'s return value, the bytes the kernel
/// would copy back to the caller, and what else must happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The return value.
    pub result: i32,
    /// The output bytes (at most the caller's buffer).
    pub out: Vec<u8>,
    /// What the caller must apply.
    pub effect: Effect,
}

impl Answer {
    fn ok(out: Vec<u8>) -> Answer {
        Answer { result: 0, out, effect: Effect::None }
    }

    fn effect(effect: Effect) -> Answer {
        Answer { result: 0, out: Vec::new(), effect }
    }

    /// An answer that copies `bytes`, cut to `size`, and returns how many.
    fn copied(mut bytes: Vec<u8>, size: usize) -> Answer {
        bytes.truncate(size);
        let result = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        Answer { result, out: bytes, effect: Effect::None }
    }
}

const EFAULT: Errno = Errno(libc::EFAULT);
const ENOENT: Errno = Errno(libc::ENOENT);

/// The `int` argument of a `_IOW(..., int)` command.
fn int_arg(input: &[u8]) -> Result<i32, Errno> {
    let b: [u8; 4] = input.get(..4).and_then(|b| b.try_into().ok()).ok_or(EFAULT)?;
    Ok(i32::from_ne_bytes(b))
}

/// `str_to_user`: the string and its NUL, cut to `size`; `ENOENT` for none.
fn string(s: Option<&str>, size: usize) -> Result<Answer, Errno> {
    let s = s.ok_or(ENOENT)?;
    let mut bytes = s.as_bytes().to_vec();
    bytes.push(0);
    Ok(Answer::copied(bytes, size))
}

/// Answers ioctl `cmd` made on `client`, a file of the device `identity`
/// in `state`, as the kernel's evdev does. `input` is what the kernel
/// copied from the argument, `out_len` how much the caller takes back.
/// Errors are the kernel's, `ENOSYS` among them (for autorepeat on a device
/// without [`EV_REP`] and for force feedback), which FUSE hands the caller
/// as `ENOTTY`: the kernel translates it from any FUSE file system.
pub fn ioctl(
    identity: &Identity,
    state: &State,
    client: &mut Client,
    cmd: u32,
    input: &[u8],
    out_len: usize,
    now: &Stamp,
) -> Result<Answer, Errno> {
    if client.revoked() {
        return Err(Errno::ENODEV);
    }
    let Some(request) = Request::decode(cmd) else {
        return Err(Errno::EINVAL);
    };
    let has_rep = identity.caps.ev.test(EV_REP);
    match request {
        Request::GetVersion => Ok(Answer::ok(EV_VERSION.to_ne_bytes().to_vec())),
        Request::GetId => Ok(Answer::ok(identity.id.to_bytes().to_vec())),
        Request::GetRep if !has_rep => Err(Errno::ENOSYS),
        Request::GetRep => Ok(Answer::ok(state.rep.iter().flat_map(|v| v.to_ne_bytes()).collect())),
        Request::SetRep if !has_rep => Err(Errno::ENOSYS),
        Request::SetRep => {
            let delay = int_arg(input)?;
            let period = int_arg(input.get(4..).unwrap_or_default())?;
            Ok(Answer::effect(Effect::SetRep { delay: delay as u32, period: period as u32 }))
        }
        // No force feedback here: input_ff_erase and input_ff_upload say
        // ENOSYS for a device without EV_FF.
        Request::RemoveFf => Err(Errno::ENOSYS),
        Request::SetFf { size } if size != FF_EFFECT_SIZE => Err(EFAULT),
        Request::SetFf { .. } => Err(Errno::ENOSYS),
        Request::GetEffects => Ok(Answer::ok(0i32.to_ne_bytes().to_vec())),
        Request::Grab => {
            let on = int_arg(input)? != 0;
            Ok(Answer::effect(if on { Effect::Grab } else { Effect::Ungrab }))
        }
        Request::Revoke => {
            if int_arg(input)? != 0 {
                return Err(Errno::EINVAL);
            }
            client.revoke();
            Ok(Answer::effect(Effect::Revoke))
        }
        Request::GetMask => {
            // The kernel reads the struct from the caller: only the direct
            // path brings it (FUSE copies nothing in for an _IOR command).
            let mask = InputMask::from_bytes(input).ok_or(Errno::EINVAL)?;
            let cnt = mask_count(mask.ev_type);
            let want = mask.codes_size as usize;
            if out_len < want {
                return Err(EFAULT);
            }
            let xfer = want.min(bits_to_longs(cnt) * 8);
            let mut out = match (cnt, client.mask(mask.ev_type)) {
                (0, _) => Vec::new(),
                (_, Some(bits)) => {
                    let mut b = bits.to_user(u16::try_from(cnt - 1).unwrap_or(KEY_MAX));
                    b.truncate(xfer);
                    b
                }
                // No mask: every code passes.
                (_, None) => vec![0xff; xfer],
            };
            out.resize(want, 0);
            Ok(Answer::ok(out))
        }
        Request::SetMask => {
            let mask = InputMask::from_bytes(input).ok_or(EFAULT)?;
            let cnt = mask_count(mask.ev_type);
            if cnt == 0 {
                return Ok(Answer::ok(Vec::new()));
            }
            let size = mask.codes_size as usize;
            if size % 8 != 0 {
                return Err(Errno::EINVAL);
            }
            let len = (bits_to_longs(cnt - 1) * 8).min(size);
            // The codes are behind codes_ptr: only the direct path brings
            // them (after the struct); through FUSE only an empty mask can
            // be set.
            let codes = input.get(InputMask::SIZE..InputMask::SIZE + len).ok_or(Errno::EINVAL)?;
            client.set_mask(mask.ev_type, codes);
            Ok(Answer::ok(Vec::new()))
        }
        Request::SetClockId => {
            let clock = ClockId::from_raw(int_arg(input)?).ok_or(Errno::EINVAL)?;
            client.set_clock(clock, now);
            Ok(Answer::ok(Vec::new()))
        }
        // No scan-code map: the input core's default answers EINVAL.
        Request::GetKeycode | Request::SetKeycode | Request::GetKeycodeV2 | Request::SetKeycodeV2 => Err(Errno::EINVAL),
        Request::GetProp { size } => Ok(Answer::copied(identity.props.to_user(INPUT_PROP_MAX), size)),
        // No multi-touch slots.
        Request::GetMtSlots { .. } => Err(Errno::EINVAL),
        Request::GetState { ev, size } => {
            let (bits, max) = state.for_type(ev).ok_or(Errno::EINVAL)?;
            let (have, _) = identity.caps.for_type(ev).ok_or(Errno::EINVAL)?;
            client.flush_type(ev);
            Ok(Answer::copied(bits.and(have).to_user(max), size))
        }
        Request::GetName { size } => string(Some(&identity.name), size),
        Request::GetPhys { size } => string(identity.phys.as_deref(), size),
        Request::GetUniq { size } => string(identity.uniq.as_deref(), size),
        Request::GetBit { ev, size } => {
            let (bits, max) = identity.caps.for_type(ev).ok_or(Errno::EINVAL)?;
            Ok(Answer::copied(bits.to_user(max), size))
        }
        Request::GetAbs { abs, size } => {
            if !identity.has_abs() {
                return Err(Errno::EINVAL);
            }
            let info = identity.absinfo.get(&abs).copied().unwrap_or_default();
            let mut out = info.to_bytes().to_vec();
            out.truncate(size);
            Ok(Answer::ok(out))
        }
        Request::SetAbs { abs, size } => {
            if !identity.has_abs() {
                return Err(Errno::EINVAL);
            }
            let n = size.min(AbsInfo::SIZE);
            let bytes = input.get(..n).ok_or(EFAULT)?;
            let mut info = AbsInfo::from_bytes(bytes);
            if size < AbsInfo::SIZE {
                info.resolution = 0;
            }
            // ABS_MT_SLOT: the number of slots cannot change.
            if abs == 0x2f {
                return Err(Errno::EINVAL);
            }
            Ok(Answer::effect(Effect::SetAbs { abs, info }))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keyboard() -> (Identity, State) {
        let mut id =
            Identity::new("test keyboard", InputId { bustype: BUS_VIRTUAL, vendor: 0, product: 1, version: 1 });
        for t in [EV_SYN, EV_KEY, EV_REP] {
            id.caps.ev.set(t, true);
        }
        for k in [KEY_A, KEY_B, KEY_LEFTSHIFT] {
            id.caps.key.set(k, true);
        }
        id.phys = Some("test/keyboard0".into());
        (id, State::default())
    }

    pub(super) fn at(sec: i64) -> Stamp {
        Stamp {
            real_ns: sec * 1_000_000_000,
            mono_ns: sec * 1_000_000_000 + 5_000,
            boot_ns: sec * 1_000_000_000 + 9_000,
        }
    }

    pub(super) fn key(code: u16, value: i32) -> InputEvent {
        InputEvent::new(EV_KEY, code, value)
    }

    pub(super) fn records(c: &mut Client) -> Vec<(u16, u16, i32)> {
        InputEvent::parse_records(&c.read(1 << 20)).unwrap().iter().map(|e| (e.ev_type, e.code, e.value)).collect()
    }

    fn call(id: &Identity, st: &State, c: &mut Client, cmd: u32, input: &[u8], out: usize) -> Result<Answer, Errno> {
        ioctl(id, st, c, cmd, input, out, &at(100))
    }

    #[test]
    fn masks_filter_types_and_codes() {
        let (id, st) = keyboard();
        let mut c = Client::new(64);
        // Only KEY_B of the keys.
        let mut set = InputMask { ev_type: u32::from(EV_KEY), codes_size: 96, codes_ptr: 0 }.to_bytes().to_vec();
        set.extend(Bits::with(KEY_MAX, [KEY_B]).to_user(KEY_MAX));
        call(&id, &st, &mut c, EVIOCSMASK, &set, 0).unwrap();
        c.push(&key(KEY_A, 1), &at(1));
        c.push(&InputEvent::syn(), &at(1));
        c.push(&key(KEY_B, 1), &at(1));
        c.push(&InputEvent::syn(), &at(1));
        assert_eq!(records(&mut c), [(EV_KEY, KEY_B, 1), (EV_SYN, SYN_REPORT, 0)]);
        // EVIOCGMASK (direct path) gives it back, zero-padded.
        let get = InputMask { ev_type: u32::from(EV_KEY), codes_size: 100, codes_ptr: 0 }.to_bytes();
        let a = call(&id, &st, &mut c, EVIOCGMASK, &get, 100).unwrap();
        assert_eq!(a.out.len(), 100);
        assert_eq!(Bits::from_user(&a.out, KEY_MAX).iter().collect::<Vec<_>>(), [KEY_B]);
        assert_eq!(&a.out[96..], [0; 4]);
        // An unset mask reads as all ones.
        let get = InputMask { ev_type: u32::from(EV_LED), codes_size: 8, codes_ptr: 0 }.to_bytes();
        assert_eq!(call(&id, &st, &mut c, EVIOCGMASK, &get, 8).unwrap().out, [0xff; 8]);
        // The type mask: no EV_KEY at all; EV_SYN always passes.
        let mut types = InputMask { ev_type: 0, codes_size: 8, codes_ptr: 0 }.to_bytes().to_vec();
        types.extend(Bits::with(EV_MAX, [EV_MSC]).to_user(EV_MAX));
        call(&id, &st, &mut c, EVIOCSMASK, &types, 0).unwrap();
        c.push(&key(KEY_B, 0), &at(2));
        c.push(&InputEvent::syn(), &at(2));
        assert!(c.read(4096).is_empty(), "an empty packet after filtering is dropped");
        // What FUSE brings: the struct alone.
        let bare = InputMask { ev_type: u32::from(EV_KEY), codes_size: 96, codes_ptr: 0x1000 }.to_bytes();
        assert_eq!(call(&id, &st, &mut c, EVIOCSMASK, &bare, 0), Err(Errno::EINVAL));
        assert_eq!(call(&id, &st, &mut c, EVIOCGMASK, &[], 16), Err(Errno::EINVAL));
        // ... which is enough for an empty mask, an odd size, an unknown type.
        let empty = InputMask { ev_type: u32::from(EV_KEY), codes_size: 0, codes_ptr: 0 }.to_bytes();
        assert!(call(&id, &st, &mut c, EVIOCSMASK, &empty, 0).is_ok());
        let odd = InputMask { ev_type: u32::from(EV_KEY), codes_size: 7, codes_ptr: 0 }.to_bytes();
        assert_eq!(call(&id, &st, &mut c, EVIOCSMASK, &odd, 0), Err(Errno::EINVAL));
        let unknown = InputMask { ev_type: 0x30, codes_size: 3, codes_ptr: 0 }.to_bytes();
        assert!(call(&id, &st, &mut c, EVIOCSMASK, &unknown, 0).is_ok());
    }

    #[test]
    fn identity_ioctls_answer_as_the_kernel() {
        let (id, st) = keyboard();
        let mut c = Client::new(64);
        let a = call(&id, &st, &mut c, EVIOCGVERSION, &[], 4).unwrap();
        assert_eq!((a.result, a.out), (0, EV_VERSION.to_ne_bytes().to_vec()));
        assert_eq!(call(&id, &st, &mut c, EVIOCGID, &[], 8).unwrap().out, id.id.to_bytes());
        // Strings: with their NUL, cut to the buffer, the length returned.
        let a = call(&id, &st, &mut c, eviocgname(256), &[], 256).unwrap();
        assert_eq!((a.result, a.out.as_slice()), (14, &b"test keyboard\0"[..]));
        let a = call(&id, &st, &mut c, eviocgname(4), &[], 4).unwrap();
        assert_eq!((a.result, a.out.as_slice()), (4, &b"test"[..]));
        assert_eq!(call(&id, &st, &mut c, eviocgphys(64), &[], 64).unwrap().result, 15);
        assert_eq!(call(&id, &st, &mut c, eviocguniq(64), &[], 64), Err(ENOENT));
        // Bitmaps: whole words, cut to the buffer.
        let a = call(&id, &st, &mut c, eviocgbit(0, 32), &[], 32).unwrap();
        assert_eq!(a.result, 8);
        assert_eq!(Bits::from_user(&a.out, EV_MAX).iter().collect::<Vec<_>>(), [EV_SYN, EV_KEY, EV_REP]);
        let a = call(&id, &st, &mut c, eviocgbit(EV_KEY, 200), &[], 200).unwrap();
        assert_eq!(a.result, 96);
        assert_eq!(Bits::from_user(&a.out, KEY_MAX).iter().collect::<Vec<_>>(), [KEY_A, KEY_LEFTSHIFT, KEY_B]);
        let a = call(&id, &st, &mut c, eviocgbit(EV_KEY, 4), &[], 4).unwrap();
        assert_eq!((a.result, a.out.len()), (4, 4));
        assert_eq!(call(&id, &st, &mut c, eviocgbit(EV_LED, 8), &[], 8).unwrap().out, [0; 8]);
        assert_eq!(call(&id, &st, &mut c, eviocgbit(EV_REP, 8), &[], 8), Err(Errno::EINVAL));
        assert_eq!(call(&id, &st, &mut c, eviocgprop(8), &[], 8).unwrap().out, [0; 8]);
        // No absolute axes, slots, keymap or force feedback.
        assert_eq!(call(&id, &st, &mut c, eviocgabs(0), &[], 24), Err(Errno::EINVAL));
        assert_eq!(call(&id, &st, &mut c, eviocsabs(0), &[0; 24], 0), Err(Errno::EINVAL));
        assert_eq!(call(&id, &st, &mut c, eviocgmtslots(8), &[], 8), Err(Errno::EINVAL));
        assert_eq!(call(&id, &st, &mut c, EVIOCGKEYCODE, &[], 8), Err(Errno::EINVAL));
        assert_eq!(call(&id, &st, &mut c, EVIOCSKEYCODE_V2, &[0; 40], 0), Err(Errno::EINVAL));
        assert_eq!(call(&id, &st, &mut c, EVIOCSFF, &[0; 48], 0), Err(Errno::ENOSYS));
        assert_eq!(call(&id, &st, &mut c, evio::ioc(DIR_WRITE, b'E', 0x80, 12), &[0; 12], 0), Err(EFAULT));
        assert_eq!(call(&id, &st, &mut c, EVIOCRMFF, &[0; 4], 0), Err(Errno::ENOSYS));
        assert_eq!(call(&id, &st, &mut c, EVIOCGEFFECTS, &[], 4).unwrap().out, [0; 4]);
        // Unknown and wrong-size commands.
        assert_eq!(call(&id, &st, &mut c, evio::ioc(DIR_READ, b'E', 0x01, 8), &[], 8), Err(Errno::EINVAL));
        assert_eq!(call(&id, &st, &mut c, 0x5401, &[], 0), Err(Errno::EINVAL));
    }

    #[test]
    fn state_ioctls_flush_and_mask_by_capability() {
        let (id, mut st) = keyboard();
        st.key.set(KEY_A, true);
        st.key.set(KEY_C, true); // not a key this device has
        let mut c = Client::new(64);
        c.push(&key(KEY_A, 1), &at(1));
        c.push(&InputEvent::syn(), &at(1));
        let a = call(&id, &st, &mut c, eviocgkey(96), &[], 96).unwrap();
        assert_eq!(a.result, 96);
        assert_eq!(Bits::from_user(&a.out, KEY_MAX).iter().collect::<Vec<_>>(), [KEY_A]);
        // The key events it reports are flushed; a leading SYN_REPORT stays,
        // as in the kernel.
        assert_eq!(records(&mut c), [(EV_SYN, SYN_REPORT, 0)]);
        assert_eq!(call(&id, &st, &mut c, eviocgled(8), &[], 8).unwrap().out, [0; 8]);
        assert_eq!(call(&id, &st, &mut c, eviocgsw(8), &[], 8).unwrap().result, 8);
        // Autorepeat.
        let a = call(&id, &st, &mut c, EVIOCGREP, &[], 8).unwrap();
        assert_eq!(a.out, [250u32.to_ne_bytes(), 33u32.to_ne_bytes()].concat());
        let set = [500u32.to_ne_bytes(), 20u32.to_ne_bytes()].concat();
        let a = call(&id, &st, &mut c, EVIOCSREP, &set, 0).unwrap();
        assert_eq!(a.effect, Effect::SetRep { delay: 500, period: 20 });
        let mut no_rep = id.clone();
        no_rep.caps.ev.set(EV_REP, false);
        assert_eq!(call(&no_rep, &st, &mut c, EVIOCGREP, &[], 8), Err(Errno::ENOSYS));
        // State bookkeeping for the other types.
        assert!(st.apply(&id.caps, &InputEvent::new(EV_REP, REP_DELAY, 300)));
        assert!(!st.apply(&id.caps, &InputEvent::new(EV_REP, REP_DELAY, 300)));
        assert!(!st.apply(&id.caps, &InputEvent::new(EV_REP, REP_PERIOD, -5)));
        assert!(!st.apply(&id.caps, &InputEvent::new(EV_LED, LED_CAPSL, 1)), "no LEDs on this device");
        assert_eq!(st.rep, [300, 33]);
    }

    #[test]
    fn clock_grab_and_revoke() {
        let (id, st) = keyboard();
        let mut c = Client::new(64);
        let mono = CLOCK_MONOTONIC.to_ne_bytes();
        call(&id, &st, &mut c, EVIOCSCLOCKID, &mono, 0).unwrap();
        assert_eq!(c.clock(), ClockId::Monotonic);
        assert_eq!(call(&id, &st, &mut c, EVIOCSCLOCKID, &0x7fff_ffffi32.to_ne_bytes(), 0), Err(Errno::EINVAL));
        assert_eq!(call(&id, &st, &mut c, EVIOCSCLOCKID, &[1], 0), Err(EFAULT));
        assert_eq!(call(&id, &st, &mut c, EVIOCGRAB, &1i32.to_ne_bytes(), 0).unwrap().effect, Effect::Grab);
        assert_eq!(call(&id, &st, &mut c, EVIOCGRAB, &0i32.to_ne_bytes(), 0).unwrap().effect, Effect::Ungrab);
        assert_eq!(call(&id, &st, &mut c, EVIOCREVOKE, &1i32.to_ne_bytes(), 0), Err(Errno::EINVAL));
        assert_eq!(call(&id, &st, &mut c, EVIOCREVOKE, &0i32.to_ne_bytes(), 0).unwrap().effect, Effect::Revoke);
        assert!(c.revoked());
        assert!(!c.push(&key(KEY_A, 1), &at(1)));
        assert_eq!(call(&id, &st, &mut c, EVIOCGVERSION, &[], 4), Err(Errno::ENODEV));
    }

    #[test]
    fn bitmaps_have_the_kernels_layout() {
        let b = Bits::with(KEY_MAX, [0, 1, 64, KEY_MAX, KEY_MAX + 1]);
        let bytes = b.to_user(KEY_MAX);
        assert_eq!(bytes.len(), 96);
        #[cfg(target_endian = "little")]
        assert_eq!((bytes[0], bytes[8], bytes[95]), (0b11, 1, 0x80));
        assert_eq!(Bits::from_user(&bytes, KEY_MAX), b);
        assert_eq!(b.iter().collect::<Vec<_>>(), [0, 1, 64, KEY_MAX]);
        assert_eq!(Bits::new(EV_MAX).to_user(EV_MAX).len(), 8);
        assert_eq!(Bits::new(SW_MAX).to_user(SW_MAX).len(), 8);
        assert_eq!(Bits::new(FF_MAX).to_user(FF_MAX).len(), 16);
        assert!(Bits::from_user(&[], LED_MAX).is_empty());
        assert_eq!(mask_count(u32::from(EV_KEY)), 0x300);
        assert_eq!(mask_count(u32::from(EV_REP)), 0);
        assert_eq!(mask_count(u32::MAX), 0);
    }
}
