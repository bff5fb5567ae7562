//! `ddf-vbus`: a virtual bus, `/ddf/vbus`, whose devices are added and
//! removed at run time by writing commands to `/ddf/vbus/ctl`. It exists to
//! drive hotplug end to end (tests, demos): its devices carry whatever
//! identifiers a driver manifest matches on, and are offered to the plugin
//! manager like the PCI bus's.
//!
//! ## Parameters
//!
//! - `max_devices`: the most devices the bus holds besides `ctl` (default
//!   4096, at most 1,000,000). The built-in manifest sets 100,000 and lets
//!   the DDM take 200,000 nodes from it (its `max_devices`, which must stay
//!   above this one, or the DDM kills the bus for registering too much).
//!
//! ## The control file, `ctl`
//!
//! A character device on the bus, not offered to the plugin manager.
//! **Writing** takes lines of commands (words separated by white space;
//! blank lines and lines starting with `#` are skipped):
//!
//! | command | does |
//! |---------|------|
//! | `add NAME [key=value ...]` | adds device `NAME` |
//! | `remove NAME` | removes device `NAME` |
//! | `add-many PREFIX COUNT [key=value ...]` | adds `PREFIX0` ... `PREFIX<COUNT-1>`, each with the same `key=value`s |
//! | `remove-all` | removes every device |
//!
//! Among the `key=value` words three are the device's shape, not its
//! metadata:
//!
//! - `address=A`: its bus address (default: its name); addresses are unique
//!   on the bus, so `add-many` takes none;
//! - `devclass=char|block`: the file's class (default `char`);
//! - `size=N`: a block device's size, in bytes or with a binary suffix `K`,
//!   `M`, `G`, `T` (default 0; refused for a char device).
//!
//! Every other `key=value` is metadata, in the order given: matched by
//! manifests (`[match.ids] vendor = "12*"`) and shown as `user.ddf.<key>`
//! (`vendor=1234 device=0001 class=char`). Keys are ASCII letters, digits
//! and `_` (at most 64 bytes; the names the DDM shows as `user.ddf.*`);
//! values have no white space or control characters (at most 255 bytes)
//! and may be empty; a key may not repeat. The DDM does not show a key
//! that would shadow one of its own attributes (`class`, `driver`,
//! `state`, ...) as an attribute, but manifests still match it. Names are checked like file
//! names (not empty, at most 255 bytes, not `.` or `..`, no `/`) and may
//! not hold control characters nor be `ctl`.
//!
//! **A write is all or nothing**: its lines are applied to a copy of the
//! bus, and only if every line succeeds are the changes reported to the DDM
//! (in the order of the lines), saved, and the write answered with its full
//! length. Otherwise the write fails and nothing changes: `EINVAL` for a bad
//! line, a duplicate name or address, an unknown name; `ENOSPC` when the
//! bus would hold more than `max_devices` devices or its list would not
//! fit the state store ([`model::STATE_MAX`]: about 3,000 devices added
//! one by one with a few identifiers each; devices `add-many` made share
//! one line of the list while they stay alike, so 100,000 of them fit).
//! The reason is logged with its line
//! number. The unit is one `write(2)`, and each must hold whole lines (a
//! line split across two writes is two lines). Bash's `echo` and `printf`
//! write each line of their output separately, so `printf 'add a\nadd
//! b\n' > ctl` is two writes; to apply a batch at once, write it in one
//! call (`dd if=batch of=/ddf/vbus/ctl bs=128k`, up to 128 KiB).
//!
//! **Reading** `ctl` gives the current device list, one line per device in
//! name order, `NAME [address=A] [devclass=block [size=N]] [key=value ...]`,
//! then end of file. The list is taken at a handle's first read.
//!
//! ## The devices
//!
//! Each device is offered to the plugin manager; the driver whose manifest
//! matches it serves its node from then on. Until then (unbound), this
//! driver serves it: reading gives its description line (as `ctl` lists
//! it, with a newline) then end of file (for a block device: that text at
//! the offsets read, then end of file); writing answers `EINVAL`. A handle
//! on a device that was removed answers `ENODEV`.
//!
//! ## Restart
//!
//! After every change, before the write is answered, the device list is
//! saved in the DDM's state store (key [`model::STATE_KEY`], the format of
//! [`model::Model::encode_state`]); the next incarnation restores it at
//! `init`. The DDM handles a driver's messages in order, so an add that was
//! acknowledged survives a crash of the driver.

pub mod command;
pub mod model;

use std::collections::{BTreeMap, HashMap};

use ddf::driver::{Context, Driver, ReadReply, StartInfo, WriteReply};
use ddf::params::ParamError;
use ddf::proto::{BusId, DeviceClass, DeviceId, DeviceSpec, Errno, Handle, OpenFlags};
use log::{debug, info, warn};

use crate::command::{describe, CmdError, Desc, CTL_NAME, DEVICES_LIMIT, DEVICES_MAX};
use crate::model::{Effect, Model, STATE_KEY};
use serde::Deserialize;

/// Name and kind of the bus this driver creates.
pub const BUS_NAME: &str = "vbus";

/// What a handle is open on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ctl,
    Device(DeviceId),
}

/// An open file: its target, and the text it reads (taken at the first
/// read) with how far it has been read.
#[derive(Debug)]
struct OpenNode {
    target: Target,
    text: Option<Vec<u8>>,
    pos: usize,
}

/// The virtual bus driver.
#[derive(Debug, Default)]
pub struct VBus {
    bus: Option<BusId>,
    ctl: Option<DeviceId>,
    model: Model,
    /// Name → device number, of the devices reported.
    ids: BTreeMap<String, DeviceId>,
    /// Device number → name.
    names: HashMap<DeviceId, String>,
    handles: HashMap<Handle, OpenNode>,
    next_handle: Handle,
}

/// The driver's parameters (`[params]` of its manifest, `ddmctl load vbus
/// KEY=VALUE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The most devices the bus holds (besides `ctl`), from 1 to
    /// [`command::DEVICES_LIMIT`]. The DDM refuses a driver more devices
    /// than its manifest's `max_devices`, so that must be larger.
    pub max_devices: usize,
}

impl Default for Params {
    fn default() -> Params {
        Params { max_devices: DEVICES_MAX }
    }
}

impl Params {
    /// Reads the parameters, with defaults.
    pub fn from_start(info: &StartInfo) -> Result<Params, ParamError> {
        let p: Params = info.config()?;
        if !(1..=DEVICES_LIMIT).contains(&p.max_devices) {
            return Err(ParamError {
                instance: info.instance.clone(),
                key: Some("max_devices".into()),
                value: Some(p.max_devices.to_string()),
                reason: format!("a number from 1 to {DEVICES_LIMIT}"),
            });
        }
        Ok(p)
    }
}

impl VBus {
    /// An empty bus with default parameters; `init` restores saved devices.
    pub fn new() -> VBus {
        VBus::with_params(Params::default())
    }

    /// An empty bus; `init` restores saved devices.
    pub fn with_params(params: Params) -> VBus {
        VBus { next_handle: Handle(1), model: Model::with_limit(params.max_devices), ..VBus::default() }
    }

    /// Reports device `name` to the DDM.
    fn report(&mut self, ctx: &mut Context, name: &str, desc: &Desc) {
        let spec = DeviceSpec {
            device: DeviceId(0),
            name: name.to_owned(),
            class: desc.class,
            size: if desc.class == DeviceClass::Block { desc.size } else { 0 },
            bus: self.bus,
            address: Some(desc.address_of(name).to_owned()),
            meta: desc.meta.clone(),
            offer: true,
            serves: None,
        };
        match ctx.add(spec) {
            Ok(id) => {
                debug!("vbus: {name} is device {id}");
                self.ids.insert(name.to_owned(), id);
                self.names.insert(id, name.to_owned());
            }
            Err(e) => warn!("vbus: adding {name}: {e}"),
        }
    }

    /// Removes device `name` from the DDM.
    fn unreport(&mut self, ctx: &mut Context, name: &str) {
        let Some(id) = self.ids.remove(name) else {
            return;
        };
        self.names.remove(&id);
        if let Err(e) = ctx.remove_device(id) {
            warn!("vbus: removing {name}: {e}");
        }
    }

    /// Runs the commands of a write to `ctl`: all or nothing.
    fn control(&mut self, ctx: &mut Context, data: &[u8]) -> Result<(), Errno> {
        let Ok(text) = std::str::from_utf8(data) else {
            warn!("vbus: ctl: write of {} bytes refused: {}", data.len(), CmdError::NotUtf8);
            return Err(CmdError::NotUtf8.errno());
        };
        let (next, effects) = self.model.run(text).map_err(|e| {
            warn!("vbus: ctl: {e}; nothing applied");
            e.error.errno()
        })?;
        if effects.is_empty() {
            return Ok(());
        }
        self.model = next;
        let (mut added, mut removed) = (0, 0);
        for effect in effects {
            match effect {
                Effect::Added(name, desc) => {
                    added += 1;
                    self.report(ctx, &name, &desc);
                }
                Effect::Removed(name) => {
                    removed += 1;
                    self.unreport(ctx, &name);
                }
            }
        }
        info!("vbus: {added} added, {removed} removed, {} on the bus", self.model.len());
        // Before the answer: an acknowledged change survives a crash.
        ctx.save_state(STATE_KEY, &self.model.encode_state(), &[])
    }

    /// The text a handle on `target` reads, or why it cannot.
    fn text_of(&self, target: Target) -> Result<Vec<u8>, Errno> {
        match target {
            Target::Ctl => Ok(self.model.listing().into_bytes()),
            Target::Device(id) => {
                let name = self.names.get(&id).ok_or(Errno::ENODEV)?;
                let desc = self.model.get(name).ok_or(Errno::ENODEV)?;
                let mut line = describe(name, desc);
                line.push('\n');
                Ok(line.into_bytes())
            }
        }
    }

    fn class_of(&self, target: Target) -> DeviceClass {
        match target {
            Target::Ctl => DeviceClass::Char,
            Target::Device(id) => {
                self.names.get(&id).and_then(|n| self.model.get(n)).map_or(DeviceClass::Char, |d| d.class)
            }
        }
    }
}

impl Driver for VBus {
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        let bus = ctx.add_bus(BUS_NAME, BUS_NAME, None)?;
        self.bus = Some(bus);
        let mut ctl = DeviceSpec::new(DeviceId(0), CTL_NAME, DeviceClass::Char, 0);
        ctl.bus = Some(bus);
        self.ctl = Some(ctx.add(ctl)?);
        if let Some(saved) = ctx.state(STATE_KEY) {
            match Model::decode_state(&saved.bytes, self.model.limit()) {
                Ok((model, bad)) => {
                    for e in &bad {
                        warn!("vbus: saved device list: {e}; that device is lost");
                    }
                    self.model = model;
                    if !bad.is_empty() {
                        ctx.save_state(STATE_KEY, &self.model.encode_state(), &[])?;
                    }
                }
                Err(e) => warn!("vbus: {e}; starting with an empty bus"),
            }
        }
        let restored: Vec<(String, Desc)> = self.model.iter().map(|(n, d)| (n.to_owned(), d.clone())).collect();
        for (name, desc) in &restored {
            self.report(ctx, name, desc);
        }
        info!("vbus: ready, {} devices restored", restored.len());
        Ok(())
    }

    fn open(&mut self, _ctx: &mut Context, device: DeviceId, _flags: OpenFlags) -> Result<Handle, Errno> {
        let target = if Some(device) == self.ctl {
            Target::Ctl
        } else if self.names.contains_key(&device) {
            Target::Device(device)
        } else {
            return Err(Errno::ENODEV);
        };
        let handle = self.next_handle;
        self.next_handle.0 += 1;
        self.handles.insert(handle, OpenNode { target, text: None, pos: 0 });
        Ok(handle)
    }

    fn close(&mut self, _ctx: &mut Context, handle: Handle) {
        self.handles.remove(&handle);
    }

    fn read(&mut self, _ctx: &mut Context, handle: Handle, offset: u64, len: u32, reply: ReadReply) {
        let Some(target) = self.handles.get(&handle).map(|o| o.target) else {
            return reply.error(Errno::EBADF);
        };
        if let Target::Device(id) = target {
            if !self.names.contains_key(&id) {
                return reply.error(Errno::ENODEV);
            }
        }
        let block = self.class_of(target) == DeviceClass::Block;
        let fresh = match self.handles.get(&handle).and_then(|o| o.text.as_ref()) {
            Some(_) => None,
            None => match self.text_of(target) {
                Ok(t) => Some(t),
                Err(e) => return reply.error(e),
            },
        };
        let Some(open) = self.handles.get_mut(&handle) else {
            return reply.error(Errno::EBADF);
        };
        if let Some(t) = fresh {
            open.text = Some(t);
        }
        let text = open.text.as_deref().unwrap_or_default();
        // A block device reads at offsets; a stream from where it stopped.
        let start = if block {
            usize::try_from(offset).unwrap_or(usize::MAX).min(text.len())
        } else {
            open.pos.min(text.len())
        };
        let end = start.saturating_add(len as usize).min(text.len());
        if !block {
            open.pos = end;
        }
        reply.data(&text[start..end]);
    }

    fn write(&mut self, ctx: &mut Context, handle: Handle, _offset: u64, data: &[u8], reply: WriteReply) {
        match self.handles.get(&handle).map(|o| o.target) {
            None => reply.error(Errno::EBADF),
            Some(Target::Device(_)) => reply.error(Errno::EINVAL),
            Some(Target::Ctl) => match self.control(ctx, data) {
                Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
                Err(e) => reply.error(e),
            },
        }
    }
}
