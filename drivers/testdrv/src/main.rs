//! `ddf-testdrv`: a driver that misbehaves on purpose, for tests.
//!
//! It is not started by default; a test (or a user checking the DDM) loads it
//! with a manifest. Its device `stall` (name set by the `name` parameter)
//! parks every read and never answers it: only a cancel (the reader was
//! signalled) or the close of the handle ends such a read. It shows that one
//! stuck driver holds up nothing else.
//!
//! Its second device, `stall.info`, reads as `incarnation N`: the driver
//! counts its own starts in the DDM's state store, so N shows that state
//! survives a restart. Writing `remove` to it removes it, before the write
//! is answered.
//!
//! It also serves devices the plugin manager hands it (a manifest with a
//! `[match]` table): each reads as `bound NAME by INSTANCE`, once per open.
//!
//! Parameters: `name` (device name), `panic_on_init = "true"` (crash at every
//! start: a crash loop), `hang_on_init = "true"` (never become ready),
//! `no_own_devices = "true"` (register only devices it is handed), `probe =
//! "PATH"` (try to open PATH at start; `stall.info` says whether it could:
//! a check of the driver's sandbox).
//! Other faults are injected at run time with `ddmctl inject`, which works
//! on every driver.

use std::collections::HashMap;
use std::process::ExitCode;

use ddf::driver::{self, Context, Driver, ReadReply, WriteReply};
use ddf::proto::{BoundDevice, DeviceClass, DeviceId, DeviceSpec, Errno, Handle, OpenFlags, RequestId};
use serde::Deserialize;

/// The parameters (see the crate documentation).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    name: Option<String>,
    panic_on_init: bool,
    hang_on_init: bool,
    no_own_devices: bool,
    probe: Option<String>,
}

#[derive(Debug, Default)]
struct TestDriver {
    config: Config,
    stall: DeviceId,
    info: DeviceId,
    incarnation: u64,
    next_handle: Handle,
    /// Reads parked forever, by request id, with the handle they belong to.
    parked: HashMap<RequestId, (Handle, ReadReply)>,
    /// Open handles: their device and how far the handle has read.
    handles: HashMap<Handle, (DeviceId, usize)>,
    /// Devices handed over by the plugin manager: device number to (path, text).
    bound: HashMap<DeviceId, (String, String)>,
    /// What opening the `probe` path gave.
    probe: Option<String>,
}

impl Driver for TestDriver {
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        if self.config.panic_on_init {
            panic!("panic_on_init is set: crashing at start, as asked");
        }
        if self.config.hang_on_init {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        let boots =
            ctx.state("boots").and_then(|s| s.bytes.as_slice().try_into().ok()).map(u64::from_le_bytes).unwrap_or(0);
        self.incarnation = boots + 1;
        if let Some(path) = &self.config.probe {
            let outcome = match std::fs::File::open(path) {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("denied ({e})"),
            };
            self.probe = Some(format!("probe {path}: {outcome}\n"));
        }
        ctx.save_state("boots", &self.incarnation.to_le_bytes(), &[])?;
        if self.config.no_own_devices {
            self.stall = DeviceId(u32::MAX);
            self.info = DeviceId(u32::MAX);
            return Ok(());
        }
        let name = self.config.name.clone().unwrap_or_else(|| "stall".to_owned());
        self.stall = ctx.add_device(&name, DeviceClass::Char, 0)?;
        self.info = ctx.add_device(&format!("{name}.info"), DeviceClass::Char, 0)?;
        Ok(())
    }

    fn bind(&mut self, ctx: &mut Context, dev: &BoundDevice) -> Result<(), Errno> {
        let mut spec = DeviceSpec::new(DeviceId(0), &dev.name, DeviceClass::Char, 0);
        spec.serves = Some(dev.path.clone());
        let id = ctx.add(spec)?;
        let text = format!("bound {} by {}\n", dev.name, ctx.instance());
        self.bound.insert(id, (dev.path.clone(), text));
        Ok(())
    }

    fn unbind(&mut self, ctx: &mut Context, path: &str) {
        let ids: Vec<DeviceId> = self.bound.iter().filter(|(_, (p, _))| p == path).map(|(i, _)| *i).collect();
        for id in ids {
            self.bound.remove(&id);
            let _ = ctx.remove_device(id);
        }
    }

    fn open(&mut self, _ctx: &mut Context, device: DeviceId, _flags: OpenFlags) -> Result<Handle, Errno> {
        if device != self.stall && device != self.info && !self.bound.contains_key(&device) {
            return Err(Errno::ENXIO);
        }
        self.next_handle.0 += 1;
        self.handles.insert(self.next_handle, (device, 0));
        Ok(self.next_handle)
    }

    fn close(&mut self, _ctx: &mut Context, handle: Handle) {
        self.handles.remove(&handle);
        let ids: Vec<RequestId> = self.parked.iter().filter(|(_, (h, _))| *h == handle).map(|(id, _)| *id).collect();
        for id in ids {
            if let Some((_, reply)) = self.parked.remove(&id) {
                reply.error(Errno::EBADF);
            }
        }
    }

    fn read(&mut self, _ctx: &mut Context, handle: Handle, _offset: u64, len: u32, reply: ReadReply) {
        if let Some((dev, pos)) = self.handles.get_mut(&handle) {
            // The bound and info devices read as a text, then end of file,
            // in reads of any size (the device is a stream: the handle
            // keeps the position).
            let text = match self.bound.get(dev) {
                Some((_, text)) => Some(text.clone()),
                None if *dev == self.info => {
                    Some(format!("incarnation {}\n{}", self.incarnation, self.probe.as_deref().unwrap_or("")))
                }
                None => None,
            };
            if let Some(text) = text {
                let bytes = text.as_bytes();
                let start = (*pos).min(bytes.len());
                let end = (start + len as usize).min(bytes.len());
                *pos = end;
                reply.data(&bytes[start..end]);
                return;
            }
        }
        if reply.nonblocking() {
            reply.error(Errno::EAGAIN);
            return;
        }
        log::debug!("parking read {} of handle {handle}", reply.id().0);
        self.parked.insert(reply.id(), (handle, reply));
    }

    fn write(&mut self, ctx: &mut Context, handle: Handle, _offset: u64, data: &[u8], reply: WriteReply) {
        // `remove` written to the info device removes that very device
        // before the write is answered (the writer holds the file meanwhile).
        if data.trim_ascii() == b"remove" && self.handles.get(&handle).is_some_and(|(d, _)| *d == self.info) {
            if let Err(e) = ctx.remove_device(self.info) {
                return reply.error(e);
            }
        }
        reply.written(data.len() as u32);
    }

    fn cancel(&mut self, _ctx: &mut Context, id: RequestId) {
        if let Some((_, reply)) = self.parked.remove(&id) {
            reply.error(Errno::EINTR);
        }
    }
}

fn main() -> ExitCode {
    driver::init_logging();
    driver::run(|info| Ok::<_, ddf::params::ParamError>(TestDriver { config: info.config()?, ..TestDriver::default() }))
}
