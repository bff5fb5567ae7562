//! libIO: port I/O behind a trait.
//!
//! A driver that talks to an x86 I/O-port device (the paper's Minix keyboard
//! driver, a PS/2 controller, a UART, ...) is written against [`PortIo`]: a
//! width-typed `in`/`out` interface (`inb`/`outb`, `inw`/`outw`,
//! `inl`/`outl`). Two backends implement it:
//!
//! - [`RealPorts`]: the hardware, through the `x86` crate's `in`/`out`
//!   instructions. It only exists as proof of rights: the one way to get one
//!   is [`RealPorts::acquire`], an `unsafe fn` that asks the kernel for the
//!   range with `ioperm(2)` (x86-64 Linux only; elsewhere it fails with
//!   [`IoError::Unsupported`]). Every access is checked against the granted
//!   range, so a driver bug is an [`IoError::NotGranted`], not a `SIGSEGV`.
//!   `ioperm` rights belong to the calling *thread*, so a `RealPorts` is
//!   neither `Send` nor `Sync`: acquire it on the thread that uses it.
//! - [`PortSpace`]: an emulated port space. Emulated devices implement
//!   [`PortDevice`] and are registered for port ranges; an access is routed
//!   to the device whose range holds its first port. As on a PC, a port
//!   nobody claims reads as all ones and ignores writes. Two registrations
//!   may not overlap. Tests and emulated devices use this backend; **tests
//!   never touch real I/O ports.**
//!
//! Values travel as `u32` in [`PortIo::read`]/[`PortIo::write`] and are
//! masked to the access [`Width`]; the typed helpers do the conversions.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

/// An I/O port number (the x86 port space is 64 Ki ports).
pub type Port = u16;

/// The width of one port access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    /// 8 bits (`inb`/`outb`).
    Byte,
    /// 16 bits (`inw`/`outw`).
    Word,
    /// 32 bits (`inl`/`outl`).
    Dword,
}

impl Width {
    /// How many consecutive ports an access of this width covers.
    pub const fn bytes(self) -> u16 {
        match self {
            Width::Byte => 1,
            Width::Word => 2,
            Width::Dword => 4,
        }
    }

    /// The bits a value of this width may use (also what an unclaimed port
    /// reads as).
    pub const fn mask(self) -> u32 {
        match self {
            Width::Byte => 0xff,
            Width::Word => 0xffff,
            Width::Dword => 0xffff_ffff,
        }
    }
}

impl fmt::Display for Width {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Width::Byte => "byte",
            Width::Word => "word",
            Width::Dword => "dword",
        })
    }
}

/// A non-empty run of consecutive ports, `start .. start + len`, inside the
/// 64 Ki port space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    start: Port,
    len: u16,
}

impl PortRange {
    /// The range of `len` ports from `start`. Fails if `len` is zero or the
    /// range runs past port `0xffff`.
    pub fn new(start: Port, len: u16) -> Result<PortRange, IoError> {
        if len == 0 || u32::from(start) + u32::from(len) > 0x1_0000 {
            return Err(IoError::InvalidRange { start, len });
        }
        Ok(PortRange { start, len })
    }

    /// The first port.
    pub const fn start(self) -> Port {
        self.start
    }

    /// How many ports (never zero).
    #[allow(clippy::len_without_is_empty)] // a range is never empty
    pub const fn len(self) -> u16 {
        self.len
    }

    /// One past the last port (may be `0x10000`, hence `u32`).
    pub const fn end(self) -> u32 {
        self.start as u32 + self.len as u32
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: Port) -> bool {
        (u32::from(self.start)..self.end()).contains(&u32::from(port))
    }

    /// Whether every port an access of `width` at `port` touches is in the
    /// range.
    pub fn contains_access(self, port: Port, width: Width) -> bool {
        self.contains(port) && u32::from(port) + u32::from(width.bytes()) <= self.end()
    }

    /// Whether the two ranges share a port.
    pub fn overlaps(self, other: PortRange) -> bool {
        u32::from(self.start) < other.end() && u32::from(other.start) < self.end()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.end() - 1)
    }
}

/// What can go wrong with port I/O.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A port range with no ports, or one past `0xffff`.
    #[error("invalid port range: {len} ports from {start:#x}")]
    InvalidRange {
        /// First port asked for.
        start: Port,
        /// Number of ports asked for.
        len: u16,
    },
    /// [`PortSpace::register`]: the range overlaps one already registered.
    #[error("ports {range} overlap ports {existing}, already registered")]
    Overlap {
        /// The range being registered.
        range: PortRange,
        /// The registered range it collides with.
        existing: PortRange,
    },
    /// [`PortSpace::unregister`]: no device is registered for exactly this range.
    #[error("no device registered for ports {0}")]
    NotRegistered(PortRange),
    /// [`RealPorts`]: an access outside the granted range (a driver bug; the
    /// access was not made).
    #[error("{width} access to port {port:#x} is outside the granted ports {granted}")]
    NotGranted {
        /// The port accessed.
        port: Port,
        /// The access width.
        width: Width,
        /// What was granted.
        granted: PortRange,
    },
    /// [`RealPorts::acquire`]: this thread already holds a grant that
    /// overlaps the range (dropping either would revoke the other's ports).
    #[error("ports {range} overlap ports {held}, already granted to this thread")]
    AlreadyGranted {
        /// The range asked for.
        range: PortRange,
        /// The grant it collides with.
        held: PortRange,
    },
    /// [`RealPorts::acquire`]: `ioperm(2)` refused (`EPERM` without
    /// `CAP_SYS_RAWIO`).
    #[error("ioperm for ports {range} failed")]
    Ioperm {
        /// The range asked for.
        range: PortRange,
        /// The error from the kernel.
        #[source]
        source: std::io::Error,
    },
    /// Real port I/O only exists on x86-64 Linux; use the emulated
    /// [`PortSpace`] elsewhere.
    #[error("real port I/O needs x86-64 Linux (ioperm); use the emulated port space")]
    Unsupported,
}

/// Width-typed access to I/O ports.
///
/// Implementors provide [`PortIo::read`] and [`PortIo::write`]; the typed
/// helpers (`inb`, `outw`, ...) are built on them. Values wider than the
/// access are masked.
pub trait PortIo {
    /// Reads `width` at `port`; the result fits in `width`.
    fn read(&mut self, port: Port, width: Width) -> Result<u32, IoError>;

    /// Writes the low `width` bits of `value` to `port`.
    fn write(&mut self, port: Port, width: Width, value: u32) -> Result<(), IoError>;

    /// Reads a byte (`inb`).
    fn inb(&mut self, port: Port) -> Result<u8, IoError> {
        Ok((self.read(port, Width::Byte)? & Width::Byte.mask()) as u8)
    }

    /// Writes a byte (`outb`).
    fn outb(&mut self, port: Port, value: u8) -> Result<(), IoError> {
        self.write(port, Width::Byte, u32::from(value))
    }

    /// Reads a 16-bit word (`inw`).
    fn inw(&mut self, port: Port) -> Result<u16, IoError> {
        Ok((self.read(port, Width::Word)? & Width::Word.mask()) as u16)
    }

    /// Writes a 16-bit word (`outw`).
    fn outw(&mut self, port: Port, value: u16) -> Result<(), IoError> {
        self.write(port, Width::Word, u32::from(value))
    }

    /// Reads a 32-bit double word (`inl`).
    fn inl(&mut self, port: Port) -> Result<u32, IoError> {
        self.read(port, Width::Dword)
    }

    /// Writes a 32-bit double word (`outl`).
    fn outl(&mut self, port: Port, value: u32) -> Result<(), IoError> {
        self.write(port, Width::Dword, value)
    }
}

impl<T: PortIo + ?Sized> PortIo for &mut T {
    fn read(&mut self, port: Port, width: Width) -> Result<u32, IoError> {
        (**self).read(port, width)
    }

    fn write(&mut self, port: Port, width: Width, value: u32) -> Result<(), IoError> {
        (**self).write(port, width, value)
    }
}

impl<T: PortIo + ?Sized> PortIo for Box<T> {
    fn read(&mut self, port: Port, width: Width) -> Result<u32, IoError> {
        (**self).read(port, width)
    }

    fn write(&mut self, port: Port, width: Width, value: u32) -> Result<(), IoError> {
        (**self).write(port, width, value)
    }
}

// ---------------------------------------------------------------------------
// The real backend.

thread_local! {
    /// The ranges this thread holds through live [`RealPorts`] values.
    static GRANTED: RefCell<Vec<PortRange>> = const { RefCell::new(Vec::new()) };
}

/// Proof that the calling thread may access a range of real I/O ports, and
/// the way to access them.
///
/// Obtained only from [`RealPorts::acquire`]; dropping it gives the ports
/// back (`ioperm(..., 0)`). Not `Send`: `ioperm` rights belong to one thread.
#[derive(Debug)]
pub struct RealPorts {
    range: PortRange,
    /// `ioperm` grants are per thread: keep the token on its thread.
    _per_thread: PhantomData<*const ()>,
}

impl RealPorts {
    /// Asks the kernel (`ioperm(2)`) for access to `range` on the calling
    /// thread and returns the token that performs it. Needs
    /// `CAP_SYS_RAWIO`.
    ///
    /// # Safety
    ///
    /// Port I/O can make a device do anything, including DMA over memory this
    /// process or the kernel owns. The caller promises that:
    /// - the ports in `range` belong to a device this driver drives, and that
    ///   device cannot be made to write memory by the accesses the driver
    ///   makes;
    /// - no one else drives the device meanwhile (for example a kernel
    ///   driver still bound to it);
    /// - nothing else on this thread revokes the rights (calls `ioperm` with
    ///   `turn_on = 0` on these ports) while the token lives.
    pub unsafe fn acquire(range: PortRange) -> Result<RealPorts, IoError> {
        let held = GRANTED.with(|g| g.borrow().iter().copied().find(|r| r.overlaps(range)));
        if let Some(held) = held {
            return Err(IoError::AlreadyGranted { range, held });
        }
        ioperm(range, true)?;
        GRANTED.with(|g| g.borrow_mut().push(range));
        log::debug!("io: ports {range} granted to this thread");
        Ok(RealPorts { range, _per_thread: PhantomData })
    }

    /// The ports this token grants.
    pub fn range(&self) -> PortRange {
        self.range
    }

    fn check(&self, port: Port, width: Width) -> Result<(), IoError> {
        if self.range.contains_access(port, width) {
            Ok(())
        } else {
            Err(IoError::NotGranted { port, width, granted: self.range })
        }
    }
}

impl Drop for RealPorts {
    fn drop(&mut self) {
        let range = self.range;
        GRANTED.with(|g| g.borrow_mut().retain(|r| *r != range));
        if let Err(e) = ioperm(range, false) {
            log::warn!("io: giving back ports {range}: {e}");
        }
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn ioperm(range: PortRange, on: bool) -> Result<(), IoError> {
    // SAFETY: ioperm only changes this thread's I/O permission bitmap; it
    // reads and writes no memory of ours.
    let rc = unsafe {
        libc::ioperm(libc::c_ulong::from(range.start()), libc::c_ulong::from(range.len()), libc::c_int::from(on))
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(IoError::Ioperm { range, source: std::io::Error::last_os_error() })
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn ioperm(_range: PortRange, _on: bool) -> Result<(), IoError> {
    Err(IoError::Unsupported)
}

impl PortIo for RealPorts {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn read(&mut self, port: Port, width: Width) -> Result<u32, IoError> {
        self.check(port, width)?;
        // SAFETY: `check` proved every port of the access lies in the range
        // this thread holds through `self` (ioperm succeeded in `acquire` and
        // is revoked only when `self` drops); `acquire`'s caller vouched for
        // what the device does on access.
        let value = unsafe {
            match width {
                Width::Byte => u32::from(x86::io::inb(port)),
                Width::Word => u32::from(x86::io::inw(port)),
                Width::Dword => x86::io::inl(port),
            }
        };
        Ok(value)
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn write(&mut self, port: Port, width: Width, value: u32) -> Result<(), IoError> {
        self.check(port, width)?;
        // SAFETY: as in `read`: the access lies in the range held through
        // `self`, and `acquire`'s caller vouched for the device.
        unsafe {
            match width {
                Width::Byte => x86::io::outb(port, value as u8),
                Width::Word => x86::io::outw(port, value as u16),
                Width::Dword => x86::io::outl(port, value),
            }
        }
        Ok(())
    }

    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    fn read(&mut self, port: Port, width: Width) -> Result<u32, IoError> {
        self.check(port, width)?;
        Err(IoError::Unsupported)
    }

    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    fn write(&mut self, port: Port, width: Width, _value: u32) -> Result<(), IoError> {
        self.check(port, width)?;
        Err(IoError::Unsupported)
    }
}

// ---------------------------------------------------------------------------
// The emulated backend.

/// An emulated device on the port space.
///
/// It sees the absolute port number (so one device registered for several
/// ranges, like a PS/2 controller at `0x60` and `0x64`, can tell them apart)
/// and the access width. The value it returns is masked to the width.
pub trait PortDevice: Send {
    /// A read of `width` at `port`.
    fn read(&mut self, port: Port, width: Width) -> u32;

    /// A write of `value` (already masked to `width`) to `port`.
    fn write(&mut self, port: Port, width: Width, value: u32);
}

/// A device as the port space holds it: shared, so that the code that
/// created it can keep a handle (to feed it input, to inspect it in tests),
/// and so that one device can sit at several ranges.
pub type SharedPortDevice = Arc<Mutex<dyn PortDevice>>;

/// An emulated x86 port space: [`PortDevice`]s registered for port ranges.
///
/// An access goes to the device whose range holds its first port (a wide
/// access that runs past the end of that range is still the device's to
/// answer). Unclaimed ports read as all ones and ignore writes, as on a PC.
/// Never fails.
#[derive(Default)]
pub struct PortSpace {
    /// Registered ranges by their first port.
    devices: BTreeMap<Port, (PortRange, SharedPortDevice)>,
}

impl fmt::Debug for PortSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortSpace").field("ranges", &self.ranges().map(|r| r.to_string()).collect::<Vec<_>>()).finish()
    }
}

impl PortSpace {
    /// An empty port space: every port reads all ones.
    pub fn new() -> PortSpace {
        PortSpace::default()
    }

    /// Routes accesses to `range` to `device`. Fails if `range` overlaps a
    /// range already registered.
    pub fn register(&mut self, range: PortRange, device: SharedPortDevice) -> Result<(), IoError> {
        if let Some((existing, _)) = self.devices.values().find(|(r, _)| r.overlaps(range)) {
            return Err(IoError::Overlap { range, existing: *existing });
        }
        self.devices.insert(range.start(), (range, device));
        Ok(())
    }

    /// Removes the device registered for exactly `range` and returns it.
    pub fn unregister(&mut self, range: PortRange) -> Result<SharedPortDevice, IoError> {
        match self.devices.get(&range.start()) {
            Some((r, _)) if *r == range => {}
            _ => return Err(IoError::NotRegistered(range)),
        }
        self.devices.remove(&range.start()).map(|(_, d)| d).ok_or(IoError::NotRegistered(range))
    }

    /// The registered ranges, in port order.
    pub fn ranges(&self) -> impl Iterator<Item = PortRange> + '_ {
        self.devices.values().map(|(r, _)| *r)
    }

    fn device_at(&self, port: Port) -> Option<&SharedPortDevice> {
        self.devices.range(..=port).next_back().filter(|(_, (r, _))| r.contains(port)).map(|(_, (_, d))| d)
    }
}

impl PortIo for PortSpace {
    fn read(&mut self, port: Port, width: Width) -> Result<u32, IoError> {
        Ok(match self.device_at(port) {
            Some(dev) => {
                let mut dev = dev.lock().unwrap_or_else(PoisonError::into_inner);
                dev.read(port, width) & width.mask()
            }
            None => width.mask(),
        })
    }

    fn write(&mut self, port: Port, width: Width, value: u32) -> Result<(), IoError> {
        if let Some(dev) = self.device_at(port) {
            let mut dev = dev.lock().unwrap_or_else(PoisonError::into_inner);
            dev.write(port, width, value & width.mask());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Remembers every access; reads answer `0x5a00_0000 | port`.
    #[derive(Debug, Default)]
    struct Recorder {
        writes: Vec<(Port, Width, u32)>,
        reads: Vec<(Port, Width)>,
    }

    impl PortDevice for Recorder {
        fn read(&mut self, port: Port, width: Width) -> u32 {
            self.reads.push((port, width));
            0x5a00_0000 | u32::from(port)
        }

        fn write(&mut self, port: Port, width: Width, value: u32) {
            self.writes.push((port, width, value));
        }
    }

    fn range(start: Port, len: u16) -> PortRange {
        PortRange::new(start, len).unwrap()
    }

    #[test]
    fn ranges_are_validated() {
        assert!(PortRange::new(0x60, 0).is_err());
        assert!(PortRange::new(0xffff, 2).is_err());
        let top = range(0xffff, 1);
        assert_eq!(top.end(), 0x1_0000);
        assert!(top.contains(0xffff));
        assert!(!top.contains_access(0xffff, Width::Word));
        assert_eq!(range(0x60, 5).to_string(), "0x60-0x64");
    }

    #[test]
    fn range_overlap_and_containment() {
        let a = range(0x60, 4); // 0x60-0x63
        assert!(a.overlaps(range(0x63, 1)));
        assert!(a.overlaps(range(0x50, 0x20)));
        assert!(!a.overlaps(range(0x64, 1)));
        assert!(!a.overlaps(range(0x5f, 1)));
        assert!(a.contains_access(0x60, Width::Dword));
        assert!(!a.contains_access(0x61, Width::Dword));
        assert!(a.contains_access(0x62, Width::Word));
    }

    #[test]
    fn unclaimed_ports_read_all_ones_and_ignore_writes() {
        let mut space = PortSpace::new();
        assert_eq!(space.inb(0x80).unwrap(), 0xff);
        assert_eq!(space.inw(0x80).unwrap(), 0xffff);
        assert_eq!(space.inl(0x80).unwrap(), 0xffff_ffff);
        space.outb(0x80, 0x12).unwrap();
        space.outl(0xfffc, 0x1234_5678).unwrap();
        assert_eq!(space.inb(0x80).unwrap(), 0xff);
    }

    #[test]
    fn accesses_reach_the_device_with_absolute_port_and_width() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut space = PortSpace::new();
        space.register(range(0x3f8, 8), dev.clone()).unwrap();
        assert_eq!(space.inb(0x3f8).unwrap(), 0xf8);
        assert_eq!(space.inw(0x3fa).unwrap(), 0x03fa);
        assert_eq!(space.inl(0x3fc).unwrap(), 0x5a00_03fc);
        space.outb(0x3ff, 0xab).unwrap();
        space.outw(0x3f9, 0xbeef).unwrap();
        space.outl(0x3fc, 0xdead_beef).unwrap();
        // Outside the range: not the device's.
        assert_eq!(space.inb(0x400).unwrap(), 0xff);
        assert_eq!(space.inb(0x3f7).unwrap(), 0xff);
        let dev = dev.lock().unwrap();
        assert_eq!(dev.reads, [(0x3f8, Width::Byte), (0x3fa, Width::Word), (0x3fc, Width::Dword)]);
        assert_eq!(
            dev.writes,
            [(0x3ff, Width::Byte, 0xab), (0x3f9, Width::Word, 0xbeef), (0x3fc, Width::Dword, 0xdead_beef)]
        );
    }

    #[test]
    fn values_are_masked_to_the_width() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut space = PortSpace::new();
        space.register(range(0x10, 1), dev.clone()).unwrap();
        space.write(0x10, Width::Byte, 0x1234).unwrap();
        assert_eq!(space.read(0x10, Width::Byte).unwrap(), 0x10);
        assert_eq!(dev.lock().unwrap().writes, [(0x10, Width::Byte, 0x34)]);
    }

    #[test]
    fn one_device_at_two_ranges() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut space = PortSpace::new();
        space.register(range(0x60, 1), dev.clone()).unwrap();
        space.register(range(0x64, 1), dev.clone()).unwrap();
        space.outb(0x64, 0xaa).unwrap();
        space.outb(0x60, 0xf4).unwrap();
        space.outb(0x62, 0x00).unwrap();
        assert_eq!(dev.lock().unwrap().writes, [(0x64, Width::Byte, 0xaa), (0x60, Width::Byte, 0xf4)]);
    }

    #[test]
    fn overlapping_registration_is_refused() {
        let mut space = PortSpace::new();
        let dev: SharedPortDevice = Arc::new(Mutex::new(Recorder::default()));
        space.register(range(0x60, 5), dev.clone()).unwrap();
        for (start, len) in [(0x60, 5), (0x64, 1), (0x5f, 2), (0x00, 0x100), (0x61, 1)] {
            match space.register(range(start, len), dev.clone()) {
                Err(IoError::Overlap { existing, .. }) => assert_eq!(existing, range(0x60, 5)),
                other => panic!("{start:#x}+{len}: {other:?}"),
            }
        }
        // Adjacent is fine.
        space.register(range(0x65, 1), dev.clone()).unwrap();
        space.register(range(0x5f, 1), dev.clone()).unwrap();
        assert_eq!(space.ranges().collect::<Vec<_>>(), [range(0x5f, 1), range(0x60, 5), range(0x65, 1)]);
    }

    #[test]
    fn unregister_frees_the_range() {
        let mut space = PortSpace::new();
        let dev: SharedPortDevice = Arc::new(Mutex::new(Recorder::default()));
        space.register(range(0x70, 2), dev.clone()).unwrap();
        assert!(matches!(space.unregister(range(0x70, 1)), Err(IoError::NotRegistered(_))));
        space.unregister(range(0x70, 2)).unwrap();
        assert_eq!(space.inb(0x70).unwrap(), 0xff);
        space.register(range(0x70, 1), dev).unwrap();
    }

    #[test]
    fn helpers_work_through_references_and_boxes() {
        fn probe(io: &mut dyn PortIo) -> u8 {
            io.inb(0x1234).unwrap()
        }
        let mut space = PortSpace::new();
        assert_eq!(probe(&mut space), 0xff);
        let mut boxed: Box<dyn PortIo> = Box::new(PortSpace::new());
        assert_eq!(boxed.inw(0).unwrap(), 0xffff);
        fn owned<P: PortIo>(mut io: P) -> u32 {
            io.inl(0).unwrap()
        }
        assert_eq!(owned(&mut space), 0xffff_ffff);
    }

    #[test]
    fn real_ports_refuse_accesses_outside_the_grant() {
        // Built by hand, without ioperm: every access below fails the range
        // check before any instruction could touch a port.
        let mut ports = RealPorts { range: range(0x60, 1), _per_thread: PhantomData };
        assert!(matches!(ports.inb(0x64), Err(IoError::NotGranted { port: 0x64, .. })));
        assert!(matches!(ports.outw(0x60, 0), Err(IoError::NotGranted { width: Width::Word, .. })));
        // Never granted, so nothing to give back.
        std::mem::forget(ports);
    }

    #[test]
    fn errors_say_what_failed() {
        let e = IoError::NotGranted { port: 0x61, width: Width::Word, granted: range(0x60, 1) };
        assert_eq!(e.to_string(), "word access to port 0x61 is outside the granted ports 0x60-0x60");
    }
}
