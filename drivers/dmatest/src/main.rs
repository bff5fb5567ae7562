//! `ddf-dmatest`: a user of DMA memory, for tests and for trying it.
//!
//! Its manifest asks ddm for DMA memory (`[dma]`, see `manifest.toml`). At
//! start it takes the region ddm granted ([`Context::dma`]) and fills it,
//! through its own mapping, with a pattern that depends on the offset alone
//! (byte `i` is [`pattern`]`(i)`), unless the region already holds it: the
//! memory of an earlier incarnation, which a restart keeps. Its device
//! (`dma0`, or the `name` parameter) reads as a report, one `key value`
//! pair a line, then one line per segment:
//!
//! ```text
//! bytes 4194304
//! page_size 2097152
//! pinned yes
//! mapping 0x7f3c40000000
//! incarnation 1
//! pattern written
//! segment 0 0x4d6200000 2097152
//! segment 2097152 0x4d6a00000 2097152
//! ```
//!
//! `mapping` is where this process mapped the region (for a check against
//! `/proc/PID/pagemap`), `pattern` is `written` (the region was new) or
//! `kept` (it held the pattern already), and each segment is its offset in
//! the region, its bus address and its length. The physical addresses are
//! privileged information: the device is root's alone (mode 0600).
//!
//! Parameters: `name` (device name).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use ddf::driver::{self, Context, Driver, ReadReply};
use ddf::proto::{DeviceClass, DeviceId, Errno, Handle, OpenFlags};
use log::{error, info};
use serde::Deserialize;

/// The parameters (see the crate documentation).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    name: Option<String>,
}

/// Byte `offset` of the pattern the driver writes: a function of the offset
/// alone, different in every page, so that a page out of place shows.
pub fn pattern(offset: usize) -> u8 {
    ((offset / 4096) as u8).wrapping_mul(37) ^ (offset as u8).wrapping_mul(11) ^ 0xa5
}

#[derive(Debug, Default)]
struct DmaTest {
    config: Config,
    device: DeviceId,
    report: String,
    next: u64,
    /// How far each open handle has read.
    handles: HashMap<Handle, usize>,
}

/// Whether `region` holds the pattern throughout.
fn holds_pattern(region: &ddf::mem::DmaRegion) -> bool {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < region.len() {
        let n = chunk.len().min(region.len() - off);
        if region.read_at(off, &mut chunk[..n]).is_err() {
            return false;
        }
        if chunk[..n].iter().enumerate().any(|(i, b)| *b != pattern(off + i)) {
            return false;
        }
        off += n;
    }
    true
}

/// Fills `region` with the pattern.
fn fill(region: &mut ddf::mem::DmaRegion) -> Result<(), ddf::mem::MemError> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < region.len() {
        let n = chunk.len().min(region.len() - off);
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = pattern(off + i);
        }
        region.write_at(off, &chunk[..n])?;
        off += n;
    }
    Ok(())
}

impl Driver for DmaTest {
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        let boots = ctx.state("boots").and_then(|s| s.bytes.as_slice().try_into().ok()).map(u64::from_le_bytes);
        let incarnation = boots.unwrap_or(0) + 1;
        ctx.save_state("boots", &incarnation.to_le_bytes(), &[])?;
        let instance = ctx.instance().to_owned();
        let Some(region) = ctx.dma_mut() else {
            error!("{instance}: no DMA memory was granted; its manifest needs a [dma] table");
            return Err(Errno(libc::ENOMEM));
        };
        let kept = holds_pattern(region);
        if !kept {
            fill(region).map_err(|e| {
                error!("{instance}: cannot fill its DMA memory: {e}");
                Errno::EIO
            })?;
        }
        // Every page is one contiguous run, as promised.
        for s in region.segments() {
            if !region.bus_addr(s.offset).is_ok_and(|a| a == s.addr)
                || !region.is_contiguous(s.offset, s.len).unwrap_or(false)
            {
                error!("{instance}: segment at offset {} does not translate as listed", s.offset);
                return Err(Errno::EIO);
            }
        }
        let mut r = String::new();
        let _ = writeln!(r, "bytes {}", region.len());
        let _ = writeln!(r, "page_size {}", region.page_size());
        let _ = writeln!(r, "pinned {}", if region.is_pinned() { "yes" } else { "no" });
        let _ = writeln!(r, "mapping {:#x}", region.as_ptr() as usize);
        let _ = writeln!(r, "incarnation {incarnation}");
        let _ = writeln!(r, "pattern {}", if kept { "kept" } else { "written" });
        for s in region.segments() {
            let _ = writeln!(r, "segment {} {:#x} {}", s.offset, s.addr, s.len);
        }
        info!(
            "{instance}: {} bytes of DMA memory in {} segments; pattern {}",
            region.len(),
            region.segments().len(),
            if kept { "kept" } else { "written" }
        );
        self.report = r;
        let name = self.config.name.clone().unwrap_or_else(|| "dma0".to_owned());
        self.device = ctx.add_device(&name, DeviceClass::Char, 0)?;
        Ok(())
    }

    fn open(&mut self, _ctx: &mut Context, device: DeviceId, _flags: OpenFlags) -> Result<Handle, Errno> {
        if device != self.device {
            return Err(Errno::ENXIO);
        }
        self.next += 1;
        self.handles.insert(Handle(self.next), 0);
        Ok(Handle(self.next))
    }

    fn close(&mut self, _ctx: &mut Context, handle: Handle) {
        self.handles.remove(&handle);
    }

    fn read(&mut self, _ctx: &mut Context, handle: Handle, _offset: u64, len: u32, reply: ReadReply) {
        let Some(pos) = self.handles.get_mut(&handle) else {
            return reply.error(Errno::EBADF);
        };
        let bytes = self.report.as_bytes();
        let start = (*pos).min(bytes.len());
        let end = (start + len as usize).min(bytes.len());
        *pos = end;
        reply.data(&bytes[start..end]);
    }
}

fn main() -> ExitCode {
    driver::init_logging();
    driver::run(|info| Ok::<_, ddf::params::ParamError>(DmaTest { config: info.config()?, ..DmaTest::default() }))
}
