//! The kernel's evdev ABI: the `EVIOC*` ioctls and their data.
//!
//! [`Request::decode`] matches a command number the way the kernel's
//! `drivers/input/evdev.c` does (`evdev_do_ioctl`): first the fixed-length
//! commands, whose number (with its size) must match exactly; then the
//! variable-length ones (`EVIOCGNAME(len)`, `EVIOCGKEY(len)`, ...), whose
//! length is part of the number and is the caller's buffer size; then the
//! numbered families (`EVIOCGBIT(ev, len)`, `EVIOCGABS(abs)`,
//! `EVIOCSABS(abs)`). Anything else is `None`, which the kernel answers
//! with `EINVAL` (so does an `EVIOCGVERSION` with a wrong size: it is no
//! command at all).
//!
//! The numbers are built with this architecture's `_IOC` encoding, as
//! `<asm-generic/ioctl.h>` (or the powerpc, mips and sparc variants)
//! define it; the structures have their 64-bit layout in host byte order.

/// `EVIOCGVERSION`'s answer: evdev protocol 1.0.1.
pub const EV_VERSION: i32 = 0x01_0001;

/// Event type: relative axes.
pub const EV_REL: u16 = 0x02;
/// Event type: absolute axes.
pub const EV_ABS: u16 = 0x03;
/// Event type: switches.
pub const EV_SW: u16 = 0x05;
/// Event type: sounds (beeps).
pub const EV_SND: u16 = 0x12;
/// Event type: force feedback.
pub const EV_FF: u16 = 0x15;
/// The number of event types (`EV_CNT`).
pub const EV_CNT: usize = 0x20;

/// The highest relative axis.
pub const REL_MAX: u16 = 0x0f;
/// The highest absolute axis.
pub const ABS_MAX: u16 = 0x3f;
/// The highest miscellaneous code.
pub const MSC_MAX: u16 = 0x07;
/// The highest switch.
pub const SW_MAX: u16 = 0x10;
/// The highest sound.
pub const SND_MAX: u16 = 0x07;
/// The highest force-feedback code.
pub const FF_MAX: u16 = 0x7f;
/// The highest autorepeat code.
pub const REP_MAX: u16 = 0x01;
/// The highest device property (`INPUT_PROP_MAX`).
pub const INPUT_PROP_MAX: u16 = 0x1f;

/// [`super::EV_REP`] code: the delay before a held key repeats, in ms.
pub const REP_DELAY: u16 = 0x00;
/// [`super::EV_REP`] code: the time between repeats, in ms.
pub const REP_PERIOD: u16 = 0x01;
/// LED number of Scroll Lock.
pub const LED_SCROLLL: u16 = 0x02;

/// `input_id.bustype`: a USB device.
pub const BUS_USB: u16 = 0x03;
/// `input_id.bustype`: a virtual device.
pub const BUS_VIRTUAL: u16 = 0x06;
/// `input_id.bustype`: a device behind an i8042 (PS/2) controller.
pub const BUS_I8042: u16 = 0x11;

/// `EVIOCSCLOCKID` argument: wall-clock time (the default).
pub const CLOCK_REALTIME: i32 = 0;
/// `EVIOCSCLOCKID` argument: monotonic time.
pub const CLOCK_MONOTONIC: i32 = 1;
/// `EVIOCSCLOCKID` argument: monotonic time including suspend.
pub const CLOCK_BOOTTIME: i32 = 7;

/// The `_IOC` encoding of this architecture.
mod ioc {
    /// powerpc, mips and sparc have 13 size bits and 3 direction bits (and
    /// other direction values); the others follow `<asm-generic/ioctl.h>`.
    const WIDE_DIR: bool = cfg!(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ));
    pub const SIZEBITS: u32 = if WIDE_DIR { 13 } else { 14 };
    pub const NONE: u32 = if WIDE_DIR { 1 } else { 0 };
    pub const READ: u32 = 2;
    pub const WRITE: u32 = if WIDE_DIR { 4 } else { 1 };
    pub const NRSHIFT: u32 = 0;
    pub const TYPESHIFT: u32 = 8;
    pub const SIZESHIFT: u32 = 16;
    pub const DIRSHIFT: u32 = SIZESHIFT + SIZEBITS;
    pub const SIZEMASK: u32 = (1 << SIZEBITS) - 1;
}

/// `_IOC(dir, type, nr, size)`; `size` is cut to the bits the encoding has.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << ioc::DIRSHIFT)
        | (((size as u32) & ioc::SIZEMASK) << ioc::SIZESHIFT)
        | ((ty as u32) << ioc::TYPESHIFT)
        | ((nr as u32) << ioc::NRSHIFT)
}

/// `_IOC_DIR`: [`DIR_NONE`], [`DIR_READ`], [`DIR_WRITE`] or both.
pub const fn ioc_dir(cmd: u32) -> u32 {
    cmd >> ioc::DIRSHIFT
}

/// `_IOC_TYPE`.
pub const fn ioc_type(cmd: u32) -> u8 {
    (cmd >> ioc::TYPESHIFT) as u8
}

/// `_IOC_NR`.
pub const fn ioc_nr(cmd: u32) -> u8 {
    (cmd >> ioc::NRSHIFT) as u8
}

/// `_IOC_SIZE`: the argument's size in bytes.
pub const fn ioc_size(cmd: u32) -> usize {
    ((cmd >> ioc::SIZESHIFT) & ioc::SIZEMASK) as usize
}

/// `_IOC_NONE`.
pub const DIR_NONE: u32 = ioc::NONE;
/// `_IOC_READ`: the kernel writes the argument.
pub const DIR_READ: u32 = ioc::READ;
/// `_IOC_WRITE`: the kernel reads the argument.
pub const DIR_WRITE: u32 = ioc::WRITE;

const fn ior(nr: u8, size: usize) -> u32 {
    ioc(DIR_READ, b'E', nr, size)
}

const fn iow(nr: u8, size: usize) -> u32 {
    ioc(DIR_WRITE, b'E', nr, size)
}

/// `sizeof(struct input_keymap_entry)`.
pub const KEYMAP_ENTRY_SIZE: usize = 40;
/// `sizeof(struct ff_effect)` on a 64-bit host.
pub const FF_EFFECT_SIZE: usize = 48;

/// `_IOR('E', 0x01, int)`: the protocol version.
pub const EVIOCGVERSION: u32 = ior(0x01, 4);
/// `_IOR('E', 0x02, struct input_id)`: the device's ids.
pub const EVIOCGID: u32 = ior(0x02, InputId::SIZE);
/// `_IOR('E', 0x03, unsigned int[2])`: the autorepeat delay and period.
pub const EVIOCGREP: u32 = ior(0x03, 8);
/// `_IOW('E', 0x03, unsigned int[2])`: set the autorepeat delay and period.
pub const EVIOCSREP: u32 = iow(0x03, 8);
/// `_IOR('E', 0x04, unsigned int[2])`: the key code of a scan code.
pub const EVIOCGKEYCODE: u32 = ior(0x04, 8);
/// `_IOR('E', 0x04, struct input_keymap_entry)`.
pub const EVIOCGKEYCODE_V2: u32 = ior(0x04, KEYMAP_ENTRY_SIZE);
/// `_IOW('E', 0x04, unsigned int[2])`: map a scan code to a key code.
pub const EVIOCSKEYCODE: u32 = iow(0x04, 8);
/// `_IOW('E', 0x04, struct input_keymap_entry)`.
pub const EVIOCSKEYCODE_V2: u32 = iow(0x04, KEYMAP_ENTRY_SIZE);
/// `_IOW('E', 0x80, struct ff_effect)`: upload a force-feedback effect.
pub const EVIOCSFF: u32 = iow(0x80, FF_EFFECT_SIZE);
/// `_IOW('E', 0x81, int)`: erase a force-feedback effect (the argument is
/// the effect's number, not a pointer).
pub const EVIOCRMFF: u32 = iow(0x81, 4);
/// `_IOR('E', 0x84, int)`: how many effects the device plays at once.
pub const EVIOCGEFFECTS: u32 = ior(0x84, 4);
/// `_IOW('E', 0x90, int)`: grab (argument non-zero) or release the device.
/// The argument is a number, not a pointer.
pub const EVIOCGRAB: u32 = iow(0x90, 4);
/// `_IOW('E', 0x91, int)`: revoke this file's access (argument 0).
pub const EVIOCREVOKE: u32 = iow(0x91, 4);
/// `_IOR('E', 0x92, struct input_mask)`: read this file's event mask.
pub const EVIOCGMASK: u32 = ior(0x92, InputMask::SIZE);
/// `_IOW('E', 0x93, struct input_mask)`: set this file's event mask.
pub const EVIOCSMASK: u32 = iow(0x93, InputMask::SIZE);
/// `_IOW('E', 0xa0, int)`: the clock of this file's time stamps.
pub const EVIOCSCLOCKID: u32 = iow(0xa0, 4);

/// `EVIOCGNAME(len)`: the device's name.
pub const fn eviocgname(len: usize) -> u32 {
    ior(0x06, len)
}
/// `EVIOCGPHYS(len)`: where the device is attached.
pub const fn eviocgphys(len: usize) -> u32 {
    ior(0x07, len)
}
/// `EVIOCGUNIQ(len)`: the device's unique identifier.
pub const fn eviocguniq(len: usize) -> u32 {
    ior(0x08, len)
}
/// `EVIOCGPROP(len)`: the device's properties.
pub const fn eviocgprop(len: usize) -> u32 {
    ior(0x09, len)
}
/// `EVIOCGMTSLOTS(len)`: multi-touch slot values.
pub const fn eviocgmtslots(len: usize) -> u32 {
    ior(0x0a, len)
}
/// `EVIOCGKEY(len)`: the keys down now.
pub const fn eviocgkey(len: usize) -> u32 {
    ior(0x18, len)
}
/// `EVIOCGLED(len)`: the LEDs lit now.
pub const fn eviocgled(len: usize) -> u32 {
    ior(0x19, len)
}
/// `EVIOCGSND(len)`: the sounds playing now.
pub const fn eviocgsnd(len: usize) -> u32 {
    ior(0x1a, len)
}
/// `EVIOCGSW(len)`: the switches on now.
pub const fn eviocgsw(len: usize) -> u32 {
    ior(0x1b, len)
}
/// `EVIOCGBIT(ev, len)`: the codes of event type `ev` the device has
/// (`ev` 0: the event types).
pub const fn eviocgbit(ev: u16, len: usize) -> u32 {
    ior(0x20 + (ev as u8 & 0x1f), len)
}
/// `EVIOCGABS(abs)`: an absolute axis's `struct input_absinfo`.
pub const fn eviocgabs(abs: u16) -> u32 {
    ior(0x40 + (abs as u8 & 0x3f), AbsInfo::SIZE)
}
/// `EVIOCSABS(abs)`: set an absolute axis's `struct input_absinfo`.
pub const fn eviocsabs(abs: u16) -> u32 {
    iow(0xc0 + (abs as u8 & 0x3f), AbsInfo::SIZE)
}

/// One evdev ioctl, as the kernel tells them apart. `size` is the
/// argument size the command carries (the caller's buffer for the
/// variable-length commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `EVIOCGVERSION`.
    GetVersion,
    /// `EVIOCGID`.
    GetId,
    /// `EVIOCGREP`.
    GetRep,
    /// `EVIOCSREP`.
    SetRep,
    /// `EVIOCRMFF`.
    RemoveFf,
    /// `EVIOCGEFFECTS`.
    GetEffects,
    /// `EVIOCGRAB`.
    Grab,
    /// `EVIOCREVOKE`.
    Revoke,
    /// `EVIOCGMASK`.
    GetMask,
    /// `EVIOCSMASK`.
    SetMask,
    /// `EVIOCSCLOCKID`.
    SetClockId,
    /// `EVIOCGKEYCODE`.
    GetKeycode,
    /// `EVIOCSKEYCODE`.
    SetKeycode,
    /// `EVIOCGKEYCODE_V2`.
    GetKeycodeV2,
    /// `EVIOCSKEYCODE_V2`.
    SetKeycodeV2,
    /// `EVIOCGPROP(size)`.
    GetProp {
        /// The caller's buffer.
        size: usize,
    },
    /// `EVIOCGMTSLOTS(size)`.
    GetMtSlots {
        /// The caller's buffer.
        size: usize,
    },
    /// `EVIOCGKEY(size)`, `EVIOCGLED(size)`, `EVIOCGSND(size)`,
    /// `EVIOCGSW(size)`: the state of event type `ev`.
    GetState {
        /// [`super::EV_KEY`], [`super::EV_LED`], [`EV_SND`] or [`EV_SW`].
        ev: u16,
        /// The caller's buffer.
        size: usize,
    },
    /// `EVIOCGNAME(size)`.
    GetName {
        /// The caller's buffer.
        size: usize,
    },
    /// `EVIOCGPHYS(size)`.
    GetPhys {
        /// The caller's buffer.
        size: usize,
    },
    /// `EVIOCGUNIQ(size)`.
    GetUniq {
        /// The caller's buffer.
        size: usize,
    },
    /// `EVIOCSFF` with any size.
    SetFf {
        /// The argument's size.
        size: usize,
    },
    /// `EVIOCGBIT(ev, size)`.
    GetBit {
        /// The event type (0: the types).
        ev: u16,
        /// The caller's buffer.
        size: usize,
    },
    /// `EVIOCGABS(abs)` with any size.
    GetAbs {
        /// The axis.
        abs: u16,
        /// The caller's buffer.
        size: usize,
    },
    /// `EVIOCSABS(abs)` with any size.
    SetAbs {
        /// The axis.
        abs: u16,
        /// The argument's size.
        size: usize,
    },
}

impl Request {
    /// The request `cmd` names, matched as the kernel matches it; `None`
    /// for a command the kernel's evdev answers `EINVAL` at once.
    pub fn decode(cmd: u32) -> Option<Request> {
        // Fixed-length commands: the whole number, size included.
        let fixed = match cmd {
            EVIOCGVERSION => Some(Request::GetVersion),
            EVIOCGID => Some(Request::GetId),
            EVIOCGREP => Some(Request::GetRep),
            EVIOCSREP => Some(Request::SetRep),
            EVIOCRMFF => Some(Request::RemoveFf),
            EVIOCGEFFECTS => Some(Request::GetEffects),
            EVIOCGRAB => Some(Request::Grab),
            EVIOCREVOKE => Some(Request::Revoke),
            EVIOCGMASK => Some(Request::GetMask),
            EVIOCSMASK => Some(Request::SetMask),
            EVIOCSCLOCKID => Some(Request::SetClockId),
            EVIOCGKEYCODE => Some(Request::GetKeycode),
            EVIOCSKEYCODE => Some(Request::SetKeycode),
            EVIOCGKEYCODE_V2 => Some(Request::GetKeycodeV2),
            EVIOCSKEYCODE_V2 => Some(Request::SetKeycodeV2),
            _ => None,
        };
        if fixed.is_some() {
            return fixed;
        }
        // Variable-length commands: the number without its size.
        let size = ioc_size(cmd);
        let sizeless = cmd & !(ioc::SIZEMASK << ioc::SIZESHIFT);
        let variable = match sizeless {
            c if c == eviocgprop(0) => Some(Request::GetProp { size }),
            c if c == eviocgmtslots(0) => Some(Request::GetMtSlots { size }),
            c if c == eviocgkey(0) => Some(Request::GetState { ev: super::EV_KEY, size }),
            c if c == eviocgled(0) => Some(Request::GetState { ev: super::EV_LED, size }),
            c if c == eviocgsnd(0) => Some(Request::GetState { ev: EV_SND, size }),
            c if c == eviocgsw(0) => Some(Request::GetState { ev: EV_SW, size }),
            c if c == eviocgname(0) => Some(Request::GetName { size }),
            c if c == eviocgphys(0) => Some(Request::GetPhys { size }),
            c if c == eviocguniq(0) => Some(Request::GetUniq { size }),
            c if c == EVIOCSFF & !(ioc::SIZEMASK << ioc::SIZESHIFT) => Some(Request::SetFf { size }),
            _ => None,
        };
        if variable.is_some() {
            return variable;
        }
        // Numbered families.
        if ioc_type(cmd) != b'E' {
            return None;
        }
        let nr = ioc_nr(cmd);
        match ioc_dir(cmd) {
            DIR_READ if nr & !0x1f == 0x20 => Some(Request::GetBit { ev: u16::from(nr & 0x1f), size }),
            DIR_READ if nr & !0x3f == 0x40 => Some(Request::GetAbs { abs: u16::from(nr & 0x3f), size }),
            DIR_WRITE if nr & !0x3f == 0xc0 => Some(Request::SetAbs { abs: u16::from(nr & 0x3f), size }),
            _ => None,
        }
    }
}

/// `struct input_id`: who made the device and how it is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputId {
    /// `BUS_*`.
    pub bustype: u16,
    /// Vendor id.
    pub vendor: u16,
    /// Product id.
    pub product: u16,
    /// Version.
    pub version: u16,
}

impl InputId {
    /// Size of the encoded form.
    pub const SIZE: usize = 8;

    /// The ioctl's bytes.
    pub fn to_bytes(&self) -> [u8; InputId::SIZE] {
        let mut b = [0u8; InputId::SIZE];
        for (chunk, v) in b.chunks_exact_mut(2).zip([self.bustype, self.vendor, self.product, self.version]) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// Decodes the ioctl's bytes.
    pub fn from_bytes(b: &[u8; InputId::SIZE]) -> InputId {
        let half = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        InputId { bustype: half(0), vendor: half(2), product: half(4), version: half(6) }
    }
}

/// `struct input_absinfo`: an absolute axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AbsInfo {
    /// The current value.
    pub value: i32,
    /// Smallest value.
    pub minimum: i32,
    /// Largest value.
    pub maximum: i32,
    /// Noise filter.
    pub fuzz: i32,
    /// Dead zone.
    pub flat: i32,
    /// Units per millimetre (or radian).
    pub resolution: i32,
}

impl AbsInfo {
    /// Size of the encoded form.
    pub const SIZE: usize = 24;

    /// The ioctl's bytes.
    pub fn to_bytes(&self) -> [u8; AbsInfo::SIZE] {
        let mut b = [0u8; AbsInfo::SIZE];
        let fields = [self.value, self.minimum, self.maximum, self.fuzz, self.flat, self.resolution];
        for (chunk, v) in b.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// Decodes the ioctl's bytes; missing fields are 0.
    pub fn from_bytes(b: &[u8]) -> AbsInfo {
        let word = |i: usize| b.get(i * 4..i * 4 + 4).and_then(|w| <[u8; 4]>::try_from(w).ok()).map(i32::from_ne_bytes);
        let f = |i| word(i).unwrap_or(0);
        AbsInfo { value: f(0), minimum: f(1), maximum: f(2), fuzz: f(3), flat: f(4), resolution: f(5) }
    }
}

/// `struct input_mask`: the argument of `EVIOCGMASK` and `EVIOCSMASK`.
/// The codes themselves are behind `codes_ptr`, in the caller's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputMask {
    /// The event type (0: the mask of types).
    pub ev_type: u32,
    /// Bytes at `codes_ptr`.
    pub codes_size: u32,
    /// The caller's buffer of mask bits.
    pub codes_ptr: u64,
}

impl InputMask {
    /// Size of the encoded form.
    pub const SIZE: usize = 16;

    /// The ioctl's bytes.
    pub fn to_bytes(&self) -> [u8; InputMask::SIZE] {
        let mut b = [0u8; InputMask::SIZE];
        b[0..4].copy_from_slice(&self.ev_type.to_ne_bytes());
        b[4..8].copy_from_slice(&self.codes_size.to_ne_bytes());
        b[8..16].copy_from_slice(&self.codes_ptr.to_ne_bytes());
        b
    }

    /// Decodes the first [`InputMask::SIZE`] bytes, if there are that many.
    pub fn from_bytes(b: &[u8]) -> Option<InputMask> {
        let b: &[u8; InputMask::SIZE] = b.get(..InputMask::SIZE)?.try_into().ok()?;
        Some(InputMask {
            ev_type: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            codes_size: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            codes_ptr: u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{EV_KEY, EV_LED};
    use super::*;

    /// The numbers `<linux/input.h>` gives on x86-64 (from a C program
    /// printing them).
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn numbers_are_the_kernels() {
        assert_eq!(EVIOCGVERSION, 0x8004_4501);
        assert_eq!(EVIOCGID, 0x8008_4502);
        assert_eq!(EVIOCGREP, 0x8008_4503);
        assert_eq!(EVIOCSREP, 0x4008_4503);
        assert_eq!(EVIOCGKEYCODE_V2, 0x8028_4504);
        assert_eq!(eviocgname(256), 0x8100_4506);
        assert_eq!(eviocgbit(0, 4), 0x8004_4520);
        assert_eq!(eviocgbit(EV_KEY, 96), 0x8060_4521);
        assert_eq!(eviocgkey(96), 0x8060_4518);
        assert_eq!(eviocgabs(0x35), 0x8018_4575);
        assert_eq!(eviocsabs(0), 0x4018_45c0);
        assert_eq!(EVIOCSFF, 0x4030_4580);
        assert_eq!(EVIOCGRAB, 0x4004_4590);
        assert_eq!(EVIOCGMASK, 0x8010_4592);
        assert_eq!(EVIOCSMASK, 0x4010_4593);
        assert_eq!(EVIOCSCLOCKID, 0x4004_45a0);
    }

    #[test]
    fn fixed_commands_need_their_exact_size() {
        assert_eq!(Request::decode(EVIOCGVERSION), Some(Request::GetVersion));
        assert_eq!(Request::decode(ior(0x01, 8)), None, "EVIOCGVERSION with 8 bytes is no command");
        assert_eq!(Request::decode(EVIOCSCLOCKID), Some(Request::SetClockId));
        assert_eq!(Request::decode(iow(0xa0, 8)), None);
        assert_eq!(Request::decode(EVIOCGKEYCODE), Some(Request::GetKeycode));
        assert_eq!(Request::decode(EVIOCGKEYCODE_V2), Some(Request::GetKeycodeV2));
        assert_eq!(Request::decode(ior(0x04, 12)), None);
    }

    #[test]
    fn variable_commands_carry_the_buffer_size() {
        assert_eq!(Request::decode(eviocgname(7)), Some(Request::GetName { size: 7 }));
        assert_eq!(Request::decode(eviocgname(0)), Some(Request::GetName { size: 0 }));
        assert_eq!(Request::decode(eviocgled(8)), Some(Request::GetState { ev: EV_LED, size: 8 }));
        assert_eq!(Request::decode(eviocgsw(1)), Some(Request::GetState { ev: EV_SW, size: 1 }));
        assert_eq!(Request::decode(eviocgbit(EV_KEY, 3)), Some(Request::GetBit { ev: EV_KEY, size: 3 }));
        assert_eq!(Request::decode(eviocgbit(0x1f, 3)), Some(Request::GetBit { ev: 0x1f, size: 3 }));
        assert_eq!(Request::decode(ioc(DIR_READ, b'E', 0x45, 2)), Some(Request::GetAbs { abs: 5, size: 2 }));
        assert_eq!(Request::decode(ioc(DIR_WRITE, b'E', 0xc1, 24)), Some(Request::SetAbs { abs: 1, size: 24 }));
        assert_eq!(Request::decode(iow(0x80, 12)), Some(Request::SetFf { size: 12 }));
        // The length bits are ignored, not the direction: a write-direction
        // EVIOCGNAME is nothing.
        assert_eq!(Request::decode(iow(0x06, 8)), None);
    }

    #[test]
    fn other_commands_are_none() {
        for cmd in [
            0,
            0x5401,                        // TCGETS
            ioc(DIR_READ, b'D', 2, 4),     // the keyboard's GET_MODE
            ioc(DIR_READ, b'E', 0x10, 4),  // unassigned
            ioc(DIR_NONE, b'E', 0x20, 0),  // EVIOCGBIT's number, no direction
            ioc(DIR_WRITE, b'E', 0x21, 8), // EVIOCGBIT's number, written
            ioc(DIR_READ, b'E', 0xc0, 24), // EVIOCSABS's number, read
            u32::MAX,
        ] {
            assert_eq!(Request::decode(cmd), None, "{cmd:#x}");
        }
    }

    #[test]
    fn fields_split_and_join() {
        let c = eviocgbit(EV_KEY, 96);
        assert_eq!((ioc_dir(c), ioc_type(c), ioc_nr(c), ioc_size(c)), (DIR_READ, b'E', 0x21, 96));
        // Sizes are cut to the encoding's bits, as _IOC does.
        assert_eq!(ioc_size(eviocgname(1 << 20)), 0);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn structures_are_pinned() {
        let id = InputId { bustype: BUS_VIRTUAL, vendor: 0x1234, product: 1, version: 0x0102 };
        assert_eq!(id.to_bytes(), [6, 0, 0x34, 0x12, 1, 0, 2, 1]);
        assert_eq!(InputId::from_bytes(&id.to_bytes()), id);
        let abs = AbsInfo { value: -1, minimum: 0, maximum: 255, fuzz: 0, flat: 15, resolution: 3 };
        assert_eq!(AbsInfo::from_bytes(&abs.to_bytes()), abs);
        assert_eq!(AbsInfo::from_bytes(&abs.to_bytes()[..8]), AbsInfo { value: -1, ..AbsInfo::default() });
        let m = InputMask { ev_type: 1, codes_size: 96, codes_ptr: 0x7fff_0000_1000 };
        assert_eq!(&m.to_bytes()[..8], &[1, 0, 0, 0, 96, 0, 0, 0]);
        assert_eq!(InputMask::from_bytes(&m.to_bytes()), Some(m));
        assert_eq!(InputMask::from_bytes(&[0; 15]), None);
    }
}
