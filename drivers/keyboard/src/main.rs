//! `ddf-keyboard`: keyboards as files, `/ddf/keyboard0`, `/ddf/keyboard1`, ...,
//! and their evdev nodes `/ddf/input/event0`, `/ddf/input/event1`, ...
//!
//! The paper's keyboard snooping driver. Each keyboard is two character
//! devices:
//!
//! - its **text node** on the null bus (`keyboard0`): every handle opened
//!   on it for reading receives every key typed from then on, decoded with
//!   the layout the manifest names (`layout`, see [`ddf::input::layout`]):
//!   `cat /ddf/keyboard0` shows what is typed;
//! - its **evdev node** (`input/event0`, on the bus `input_bus`): the
//!   kernel's evdev protocol, so that the programs that read
//!   `/dev/input/event*` (evtest, libevdev, python-evdev, key remappers)
//!   read it unchanged. See **Evdev nodes** below.
//!
//! # Sources
//!
//! Chosen at start by the `source` parameter; all of them feed the same
//! path (evdev key events, one decoder and one evdev node per keyboard, the
//! same per-handle buffers and queues):
//!
//! - `auto` (the default): every `/dev/input/event*` whose `EV_KEY`
//!   capabilities make it a keyboard (`EVIOCGBIT`, as udev decides
//!   `ID_INPUT_KEYBOARD`), read *without* `EVIOCGRAB`, so the console or
//!   desktop still gets every key. If there is none (or `/dev/input` cannot
//!   be read), `count` virtual keyboards instead. Each evdev node mirrors
//!   its keyboard (name, ids, capabilities, key and LED state, read with
//!   the same ioctls at start, and every event it sends).
//! - `evdev`: the evdev keyboards only (or the nodes listed in `devices`,
//!   which may be any evdev node, another ddm's `input/event0` too);
//!   finding none is an error. A keyboard that is unplugged disappears from
//!   the tree, both nodes; text handles read what is pending, then
//!   `ENODEV`, evdev handles `ENODEV` at once (as the kernel's).
//! - `virtual`: `count` virtual keyboards, typed into by writing to them.
//! - `i8042`: one PS/2 keyboard behind an Intel 8042 controller, driven
//!   through libIO ([`ddf::io`]) and decoded from scancode set 1, polled
//!   every `poll_ms` (user space has no IRQ). By default the controller is
//!   an emulated one on the emulated port space; writes to the device feed
//!   it scan codes. Only `ports=real` uses the machine's ports 0x60/0x64
//!   (needs `CAP_SYS_RAWIO`, x86-64, and no kernel i8042 driver bound).
//!
//! # Parameters
//!
//! | key | default | meaning |
//! |-----|---------|---------|
//! | `source` | `auto` | `auto`, `evdev`, `virtual` or `i8042` |
//! | `name` | `keyboard` | device names are `<name>0`, `<name>1`, ... |
//! | `count` | `1` | virtual keyboards (1-64) for `virtual`, and for `auto` without evdev keyboards |
//! | `buffer` | `4096` | bytes each text handle holds unread (24 to 1 MiB) |
//! | `layout` | `us` | how text nodes decode keys, and `ddmctl type` types: `us` or `de` (German) |
//! | `input_bus` | `input-<instance>` | the bus (directory) of the evdev nodes; `""`: none. The built-in manifest says `input`; two drivers must not name the same bus |
//! | `event_buffer` | `1024` | events each evdev handle holds (4 to 65536) |
//! | `devices` | (scan) | `evdev`/`auto`: comma-separated event nodes to use instead of scanning `/dev/input` |
//! | `ports` | `emulated` | `i8042`: `emulated` or `real` |
//! | `scancodes` | (none) | `i8042` emulated: hex bytes (`2a 23 a3 aa`) the controller sends when the device is first opened for reading |
//! | `poll_ms` | `10` | `i8042`: poll interval, 1-1000 ms |
//!
//! # Reading the text node
//!
//! A read returns what is pending, up to the size asked. With nothing
//! pending it waits until a key arrives (the request is parked in the
//! driver; other requests go on meanwhile); with `O_NONBLOCK` it fails with
//! `EAGAIN` at once. If the reader is signalled, the DDM cancels the request
//! and it ends with `EINTR`; closing the handle ends its waiting reads with
//! `EBADF`. `poll` reports `POLLIN` while bytes are pending (and `POLLOUT`
//! on devices that take writes, `POLLHUP` once a keyboard is gone).
//!
//! **Text mode** (the default): the typed text, UTF-8 (`ä` is two bytes).
//! Enter is `\n`, Tab `\t`, Backspace 0x08, Escape 0x1b, Ctrl+letter the
//! control code (Ctrl-C is 0x03); keys without a character (arrows, F-keys)
//! give nothing. The German layout has AltGr (Right Alt) and the dead keys
//! `^`, `´` and `` ` ``; see [`ddf::input::layout`] for every rule.
//!
//! **Raw mode**: whole 24-byte `struct input_event` records (64-bit layout,
//! host byte order: `tv_sec` i64, `tv_usec` i64, `type` u16, `code` u16,
//! `value` i32), one per key press (1), release (0) and autorepeat (2), all
//! keys including modifiers, `EV_KEY` only (no `EV_SYN`). A read shorter
//! than 24 bytes is `EINVAL`; a read returns whole records only.
//!
//! # Evdev nodes
//!
//! `input/eventN` answers as the kernel's `drivers/input/evdev.c` does
//! (the code is [`ddf::input::evnode`], the identities of virtual and i8042
//! keyboards are in `events.rs`):
//!
//! - **Reads** give whole 24-byte `input_event` records of whole packets
//!   (each ends with `SYN_REPORT`; a virtual or i8042 keyboard sends each
//!   key event as a packet of its own, a mirror forwards its keyboard's
//!   packets): `EINVAL` for less than a record, `EAGAIN` with `O_NONBLOCK`
//!   and no packet, else the read waits, like the text node's (signals,
//!   `poll`, `select` alike). Time stamps are `CLOCK_REALTIME`, or the
//!   clock `EVIOCSCLOCKID` chose.
//! - **Every handle** opened for reading gets every event from then on, in
//!   a ring of `event_buffer` events; when it is full every unread event is
//!   dropped and the handle reads `SYN_DROPPED` (then the newest events),
//!   and the dropped events are counted (`lost_events`, below).
//! - **Ioctls**: all of the kernel's evdev ioctls, with its matching (the
//!   length is part of the number for the variable-length ones, a short
//!   buffer gets what fits, an unknown or wrong-size command is `EINVAL`)
//!   and its answers (`ENOENT` for a missing `phys` or `uniq`, `EINVAL` for
//!   absolute axes, multi-touch slots and scan-code maps a keyboard does
//!   not have, `ENOSYS` for force feedback). `EVIOCSREP` changes the
//!   repeat settings the node reports and sends every reader the `EV_REP`
//!   events; a mirror does not pass it on to the real keyboard. What FUSE
//!   does not carry (the grab, `ENOSYS`, the masks' codes) is in
//!   ddf-driver(7); on the direct client path a handle can grab the
//!   keyboard (its other handles and the text node get nothing meanwhile).
//! - **Writes** to a virtual keyboard's node type: whole records are taken
//!   (`EINVAL` for less than one), key events typed, other records ignored,
//!   as the kernel's `evdev_write` takes them. Other keyboards' nodes do
//!   not take writes (`EINVAL`).
//!
//! # Buffers and losses
//!
//! Each text handle buffers up to `buffer` bytes (in raw mode rounded down to
//! whole records). A reader that falls behind loses its **oldest** bytes,
//! never blocks the driver or other readers, and the loss is counted in
//! bytes: for the handle, for the device (all its handles, closed ones too)
//! and for the driver. The first loss of a handle is logged as a warning,
//! its total when it closes. Write-only handles receive no keys.
//!
//! The driver's totals are also reported to the DDM as the counters
//! `lost_bytes` (text handles) and `lost_events` (evdev handles; `ddmctl
//! status`): once at start (0), then after every delivery of keys that lost
//! something, so at most once per write, evdev batch or i8042 poll, and
//! never more often than keys arrive. Because the DDM handles a driver's
//! messages in order, the counters are up to date when the write that
//! caused the loss returns.
//!
//! # Writing
//!
//! - **Virtual keyboards** take whole 24-byte `input_event` records, the
//!   same layout as raw mode (what `ddmctl type "text"` writes, built with
//!   [`ddf::input::Layout::text_to_events`] for the keyboard's layout). `EV_KEY` records (code 1 to
//!   `KEY_MAX`, value 0, 1 or 2) are typed; `EV_SYN` and `EV_MSC` records
//!   are accepted and skipped; the time stamp is ignored (keys are stamped
//!   on arrival). A write that is not a multiple of 24 bytes, or holds any
//!   other record, fails with `EINVAL` and types nothing. Write at most a
//!   few KiB at a time (whole records per `write(2)`). Who may type is who
//!   may write the file (by default root:input 0640: root only).
//! - **The emulated i8042** takes raw scan-code bytes (set 1), queued in
//!   the controller and decoded when the poller reads them.
//! - Other keyboards do not take writes (`EINVAL`).
//!
//! # Ioctls
//!
//! Defined, with their numbers, in [`ddf::input::keyboard`]:
//! - `SET_MODE` `_IOW('D', 1, u32)` = `0x40044401`: argument (by pointer)
//!   `0` text or `1` raw. Changing the mode discards what is pending.
//! - `GET_MODE` `_IOR('D', 2, u32)` = `0x80044402`.
//! - `GET_STATS` `_IOR('D', 3, [u64; 4])` = `0x80204403`: bytes lost by
//!   this handle, by the device, by the driver, and bytes pending now.
//! - `GET_LAYOUT` `_IOR('D', 4, u32)` = `0x80044404`: the keyboard's layout
//!   (`0` US, `1` German), which `ddmctl type` types with.
//!
//! Those are the text node's; the evdev node answers them `EINVAL`, as the
//! kernel's evdev answers any command it does not know.

mod config;
mod events;
mod hub;

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use ddf::driver::{self, poll_events, Context, Driver, IoctlReply, ReadReply, StartInfo, WriteReply};
use ddf::input::evdev::{self, EvdevDevice};
use ddf::input::evnode::Identity;
use ddf::input::keyboard::{self, Mode};
use ddf::input::{Decoder, InputEvent, EV_KEY, EV_SYN, KEY_MAX, LED_CAPSL, LED_NUML, SYN_DROPPED};
use ddf::io::PortSpace;
use ddf::proto::{BusId, DeviceClass, DeviceId, DeviceSpec, Errno, Handle, OpenFlags, RequestId};
use ddf_keyboard::i8042::{self, EmulatedI8042, Poller, RealI8042Ports};
use log::{debug, error, info, warn};

use config::{Config, PortsKind, SourceKind};
use events::{Framing, Node};
use hub::{Hub, NodeKind};

/// Reads of one evdev device per wake-up at most (of 64 events each), so a
/// busy device cannot starve the request queue.
const EVDEV_BATCHES: usize = 16;

/// Where one keyboard's keys come from.
#[derive(Debug)]
enum Source {
    Evdev(EvdevDevice),
    Virtual,
    I8042 {
        /// The emulated controller (`None` on real ports).
        emulated: Option<Arc<Mutex<EmulatedI8042>>>,
        /// Sent by the emulated controller at the first open for reading.
        scancodes: Vec<u8>,
    },
    /// An evdev keyboard that was unplugged.
    Gone,
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Evdev(dev) => format!("evdev {} ({:?})", dev.path().display(), dev.name()),
            Source::Virtual => "virtual".to_owned(),
            Source::I8042 { emulated: Some(_), .. } => "i8042 on emulated ports".to_owned(),
            Source::I8042 { emulated: None, .. } => "i8042 on real ports 0x60/0x64".to_owned(),
            Source::Gone => "gone".to_owned(),
        }
    }

    fn takes_writes(&self) -> bool {
        match self {
            Source::Virtual | Source::I8042 { emulated: Some(_), .. } => true,
            Source::Evdev(_) | Source::I8042 { emulated: None, .. } | Source::Gone => false,
        }
    }
}

#[derive(Debug)]
struct Keyboard {
    /// The DDM's device number of the text node.
    device: DeviceId,
    /// The DDM's device number of the evdev node, if it has one.
    events: Option<DeviceId>,
    name: String,
    source: Source,
}

#[derive(Debug)]
struct KeyboardDriver {
    config: Config,
    hub: Hub<ReadReply>,
    /// Sources found at start, turned into `keyboards` by `init`.
    sources: Vec<Source>,
    /// Index `i` is the hub's keyboard `i`, and the evdev watch token `i`.
    keyboards: Vec<Keyboard>,
    /// The emulated port space, until `init` hands it to the poller thread.
    space: Option<PortSpace>,
    poller: Option<Poller>,
    scratch: Vec<InputEvent>,
    /// The `lost_bytes` and `lost_events` counters the DDM last got
    /// (`None`: not yet sent).
    reported_lost: Option<(u64, u64)>,
}

impl KeyboardDriver {
    fn new(start: &StartInfo) -> Result<KeyboardDriver, String> {
        let config = Config::from_params(&start.instance, &start.params)?;
        let mut space = None;
        let sources = match config.source {
            SourceKind::Auto => {
                let found = match evdev_keyboards(&config) {
                    Ok(found) => found,
                    Err(e) => {
                        warn!("{e}");
                        Vec::new()
                    }
                };
                if found.is_empty() {
                    info!("no evdev keyboard in {}: starting {} virtual keyboard(s)", evdev::INPUT_DIR, config.count);
                    (0..config.count).map(|_| Source::Virtual).collect()
                } else {
                    found.into_iter().map(Source::Evdev).collect()
                }
            }
            SourceKind::Evdev => {
                let found = evdev_keyboards(&config)?;
                if found.is_empty() {
                    return Err(format!(
                        "source=evdev: no keyboard in {} (can this driver read the event devices?); \
                         use source=virtual for a virtual keyboard",
                        evdev::INPUT_DIR
                    ));
                }
                found.into_iter().map(Source::Evdev).collect()
            }
            SourceKind::Virtual => (0..config.count).map(|_| Source::Virtual).collect(),
            SourceKind::I8042 => {
                let emulated = match config.ports {
                    PortsKind::Emulated => {
                        let mut ports = PortSpace::new();
                        let dev = EmulatedI8042::install(&mut ports).map_err(|e| format!("emulated i8042: {e}"))?;
                        space = Some(ports);
                        Some(dev)
                    }
                    PortsKind::Real => None,
                };
                vec![Source::I8042 { emulated, scancodes: config.scancodes.clone() }]
            }
        };
        Ok(KeyboardDriver {
            hub: Hub::new(config.buffer, config.event_buffer),
            config,
            sources,
            keyboards: Vec::new(),
            space,
            poller: None,
            scratch: Vec::new(),
            reported_lost: None,
        })
    }

    /// Starts the thread that polls the i8042 (emulated or real ports).
    fn start_poller(&mut self, ctx: &Context) -> Result<(), i8042::I8042Error> {
        let waker = ctx.waker();
        let wake = move || waker.wake();
        let poller = match (self.config.ports, self.space.take()) {
            (PortsKind::Emulated, Some(space)) => Poller::spawn(move || Ok(space), self.config.poll, wake)?,
            (PortsKind::Emulated, None) => Poller::spawn(|| Ok(PortSpace::new()), self.config.poll, wake)?,
            (PortsKind::Real, _) => {
                // SAFETY: the administrator asked for the real controller
                // (`ports=real`, never a default), which the documentation
                // says must not be held by a kernel driver; this driver only
                // reads its status and data ports, and the i8042 does no DMA.
                let open = || unsafe { RealI8042Ports::acquire() };
                Poller::spawn(open, self.config.poll, wake)?
            }
        };
        self.poller = Some(poller);
        Ok(())
    }

    /// The keyboard with device `device`, and which of its nodes it is.
    fn node_of(&self, device: DeviceId) -> Option<(usize, NodeKind)> {
        self.keyboards.iter().enumerate().find_map(|(i, k)| {
            if k.device == device {
                Some((i, NodeKind::Text))
            } else if k.events == Some(device) {
                Some((i, NodeKind::Events))
            } else {
                None
            }
        })
    }

    /// The evdev node of a keyboard from `source`, and the decoder for its
    /// text node (in step with a real keyboard's locks and keys).
    fn node_for(&self, name: &str, source: &Source) -> (Node, Decoder) {
        let layout = self.config.layout;
        let mut decoder = Decoder::new(layout);
        let node = match source {
            Source::Evdev(dev) => {
                let identity = dev.identity().unwrap_or_else(|e| {
                    warn!("{name}: {}; its evdev node says only that it has keys", ddf::error_chain(&e));
                    let mut identity = Identity::new(dev.name(), Default::default());
                    identity.caps.ev.set(EV_SYN, true);
                    identity.caps.ev.set(EV_KEY, true);
                    for k in 1..=KEY_MAX {
                        identity.caps.key.set(k, true);
                    }
                    identity
                });
                let mut node = Node::new(identity, Framing::Source);
                match dev.state() {
                    Ok(state) => {
                        decoder.set_caps_lock(state.led.test(LED_CAPSL));
                        decoder.set_num_lock(state.led.test(LED_NUML));
                        decoder.resync(|k| state.key.test(k));
                        node.state = state;
                    }
                    Err(e) => debug!("{name}: {e}; starting with every key up and the locks off"),
                }
                node
            }
            Source::Virtual => Node::new(events::virtual_identity(name, layout), Framing::PerKey),
            Source::I8042 { emulated, .. } => {
                Node::new(events::i8042_identity(emulated.is_some(), i8042::keys()), Framing::PerKey)
            }
            Source::Gone => Node::new(Identity::default(), Framing::PerKey),
        };
        (node, decoder)
    }

    /// Hands events of keyboard `kbd` to the hub and wakes pollers.
    fn deliver(&mut self, ctx: &mut Context, kbd: usize, events: &[InputEvent]) {
        for handle in self.hub.deliver(kbd, events) {
            ctx.poll_wake(handle);
        }
        self.report_losses(ctx);
    }

    /// Sends the DDM the `lost_bytes` and `lost_events` counters if they
    /// changed since the last report (a failed send is retried at the next
    /// delivery).
    fn report_losses(&mut self, ctx: &mut Context) {
        let lost = (self.hub.lost_driver(), self.hub.lost_events_driver());
        if self.reported_lost != Some(lost) && ctx.counters(&[("lost_bytes", lost.0), ("lost_events", lost.1)]).is_ok()
        {
            self.reported_lost = Some(lost);
        }
    }

    /// Keyboard `kbd` is gone: off the tree, its readers told.
    fn lose_keyboard(&mut self, ctx: &mut Context, kbd: usize) {
        ctx.unwatch(kbd as u64);
        let Some(keyboard) = self.keyboards.get_mut(kbd) else {
            return;
        };
        keyboard.source = Source::Gone;
        for device in std::iter::once(keyboard.device).chain(keyboard.events) {
            if let Err(e) = ctx.remove_device(device) {
                warn!("{}: removing device {device}: {e}", keyboard.name);
            }
        }
        for handle in self.hub.keyboard_gone(kbd) {
            ctx.poll_wake(handle);
        }
    }
}

/// The evdev keyboards to use: those named by `devices`, or every one found.
fn evdev_keyboards(config: &Config) -> Result<Vec<EvdevDevice>, String> {
    if config.devices.is_empty() {
        return evdev::find_keyboards(std::path::Path::new(evdev::INPUT_DIR)).map_err(|e| e.to_string());
    }
    let mut found = Vec::new();
    for path in &config.devices {
        let dev = EvdevDevice::open(path).map_err(|e| format!("devices: {e}"))?;
        match dev.is_keyboard() {
            Ok(true) => {}
            Ok(false) => warn!("{}: {:?} does not look like a keyboard; using it as asked", path.display(), dev.name()),
            Err(e) => return Err(format!("devices: {e}")),
        }
        found.push(dev);
    }
    Ok(found)
}

impl Driver for KeyboardDriver {
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        let bus: Option<BusId> = match &self.config.input_bus {
            Some(bus) => Some(ctx.add_bus(bus, "input", None)?),
            None => None,
        };
        for (i, source) in std::mem::take(&mut self.sources).into_iter().enumerate() {
            let name = format!("{}{i}", self.config.name);
            let device = ctx.add_device(&name, DeviceClass::Char, 0)?;
            let (node, decoder) = self.node_for(&name, &source);
            let events = match bus {
                Some(bus) => {
                    let spec = DeviceSpec {
                        bus: Some(bus),
                        meta: vec![("keyboard".into(), name.clone()), ("name".into(), node.identity.name.clone())],
                        ..DeviceSpec::new(DeviceId(0), &format!("event{i}"), DeviceClass::Char, 0)
                    };
                    Some(ctx.add(spec)?)
                }
                None => None,
            };
            if let Source::Evdev(dev) = &source {
                ctx.watch(dev, i as u64);
            }
            info!(
                "{name}: {} ({} layout), evdev node {:?}",
                source.describe(),
                self.config.layout.describe(),
                node.identity.name
            );
            self.hub.add_keyboard(&name, decoder, node);
            self.keyboards.push(Keyboard { device, events, name, source });
        }
        if self.keyboards.iter().any(|k| matches!(k.source, Source::I8042 { .. })) {
            if let Err(e) = self.start_poller(ctx) {
                error!("i8042: {}", ddf::error_chain(&e));
                return Err(Errno::ENODEV);
            }
        }
        self.report_losses(ctx);
        Ok(())
    }

    fn fini(&mut self, _ctx: &mut Context) {
        if let Some(mut poller) = self.poller.take() {
            poller.stop();
        }
        self.hub.fail_parked(Errno::EIO);
        info!("stopping; readers lost {} bytes in total", self.hub.lost_driver());
    }

    fn open(&mut self, _ctx: &mut Context, device: DeviceId, flags: OpenFlags) -> Result<Handle, Errno> {
        let (kbd, kind) = self.node_of(device).ok_or(Errno::ENXIO)?;
        let reading = flags.access().reads();
        let handle = match kind {
            NodeKind::Text => self.hub.open(kbd, reading)?,
            NodeKind::Events => self.hub.open_events(kbd, reading)?,
        };
        if let Some(Keyboard { source: Source::I8042 { emulated: Some(dev), scancodes }, name, .. }) =
            self.keyboards.get_mut(kbd)
        {
            if reading && !scancodes.is_empty() {
                debug!("{name}: sending the {} scancodes given at start", scancodes.len());
                dev.lock().unwrap_or_else(PoisonError::into_inner).push(scancodes);
                scancodes.clear();
            }
        }
        Ok(handle)
    }

    fn close(&mut self, _ctx: &mut Context, handle: Handle) {
        self.hub.close(handle);
    }

    fn read(&mut self, _ctx: &mut Context, handle: Handle, _offset: u64, _len: u32, reply: ReadReply) {
        self.hub.read(handle, reply);
    }

    fn write(&mut self, ctx: &mut Context, handle: Handle, _offset: u64, data: &[u8], reply: WriteReply) {
        let Some((kbd, kind)) = self.hub.keyboard_of(handle) else {
            reply.error(Errno::EBADF);
            return;
        };
        let Some(keyboard) = self.keyboards.get(kbd) else {
            reply.error(Errno::EBADF);
            return;
        };
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        if kind == NodeKind::Events {
            // As evdev_write: whole records are taken (and, on a virtual
            // keyboard, typed); the others do not take events here.
            match (&keyboard.source, events::parse_write(data)) {
                (Source::Virtual, Ok((keys, taken))) => {
                    debug!("{}: evdev handle {handle} typed {} key events", keyboard.name, keys.len());
                    self.deliver(ctx, kbd, &keys);
                    reply.written(u32::try_from(taken).unwrap_or(len));
                }
                (Source::Virtual, Err(e)) => reply.error(e),
                (Source::Gone, _) => reply.error(Errno::ENODEV),
                (Source::Evdev(_) | Source::I8042 { .. }, _) => reply.error(Errno::EINVAL),
            }
            return;
        }
        match &keyboard.source {
            Source::Virtual => match hub::parse_injection(data) {
                Ok(events) => {
                    debug!("{}: handle {handle} typed {} key events", keyboard.name, events.len());
                    self.deliver(ctx, kbd, &events);
                    reply.written(len);
                }
                Err(e) => {
                    debug!(
                        "{}: handle {handle}: refused a write of {} bytes (not whole key event records)",
                        keyboard.name,
                        data.len()
                    );
                    reply.error(e);
                }
            },
            Source::I8042 { emulated: Some(dev), .. } => {
                let (taken, waiting) = {
                    let mut dev = dev.lock().unwrap_or_else(PoisonError::into_inner);
                    (dev.push(data), dev.pending())
                };
                debug!("{}: handle {handle} queued {taken} scancodes ({waiting} waiting)", keyboard.name);
                if taken == 0 && !data.is_empty() {
                    reply.error(Errno::EAGAIN);
                } else {
                    reply.written(u32::try_from(taken).unwrap_or(len));
                }
            }
            Source::Evdev(_) | Source::I8042 { emulated: None, .. } | Source::Gone => {
                reply.error(Errno::EINVAL);
            }
        }
    }

    fn ioctl(&mut self, ctx: &mut Context, handle: Handle, cmd: u32, input: &[u8], out_len: u32, reply: IoctlReply) {
        let Some((kbd, kind)) = self.hub.keyboard_of(handle) else {
            reply.error(Errno::EBADF);
            return;
        };
        if kind == NodeKind::Events {
            let (result, woken) = self.hub.ioctl_events(handle, cmd, input, out_len as usize);
            for h in woken {
                ctx.poll_wake(h);
            }
            self.report_losses(ctx);
            match result {
                Ok(answer) => reply.ok(answer.result, &answer.out),
                // ENOSYS (force feedback, autorepeat on a device without
                // it) reaches a caller through FUSE as ENOTTY: the kernel
                // translates it, from an error and from a return value alike.
                Err(e) => reply.error(e),
            }
            return;
        }
        let result = match cmd {
            keyboard::SET_MODE => {
                let arg = input.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok());
                match arg.map(u32::from_ne_bytes).and_then(Mode::from_u32) {
                    Some(mode) => self.hub.set_mode(handle, mode).map(|()| Vec::new()),
                    None => Err(Errno::EINVAL),
                }
            }
            keyboard::GET_MODE if out_len >= 4 => self.hub.mode(handle).map(|m| m.as_u32().to_ne_bytes().to_vec()),
            keyboard::GET_STATS if out_len as usize >= keyboard::Stats::SIZE => {
                self.hub.stats(handle).map(|s| s.to_bytes().to_vec())
            }
            keyboard::GET_LAYOUT if out_len >= 4 => {
                self.hub.layout(kbd).map(|l| l.as_u32().to_ne_bytes().to_vec()).ok_or(Errno::EBADF)
            }
            keyboard::GET_MODE | keyboard::GET_STATS | keyboard::GET_LAYOUT => Err(Errno::EINVAL),
            _ => Err(Errno::ENOTTY),
        };
        match result {
            Ok(out) => reply.ok(0, &out),
            Err(e) => reply.error(e),
        }
    }

    fn poll(&mut self, _ctx: &mut Context, handle: Handle, events: u32) -> u32 {
        let Some(state) = self.hub.poll_state(handle) else {
            return poll_events::POLLERR;
        };
        let Some((kbd, kind)) = self.hub.keyboard_of(handle) else {
            return poll_events::POLLERR;
        };
        let writable = self.keyboards.get(kbd).is_some_and(|k| match (kind, &k.source) {
            (NodeKind::Text, source) => source.takes_writes(),
            (NodeKind::Events, source) => matches!(source, Source::Virtual),
        });
        let mut ready = 0;
        if state.readable {
            ready |= poll_events::POLLIN | poll_events::POLLRDNORM;
        }
        if writable && !state.hung_up {
            ready |= poll_events::POLLOUT | poll_events::POLLWRNORM;
        }
        let mut revents = ready & events;
        if state.hung_up {
            // evdev_poll says POLLHUP | POLLERR for a gone device.
            revents |= match kind {
                NodeKind::Text => poll_events::POLLHUP,
                NodeKind::Events => poll_events::POLLHUP | poll_events::POLLERR,
            };
        }
        revents
    }

    fn cancel(&mut self, _ctx: &mut Context, id: RequestId) {
        if !self.hub.cancel(id) {
            debug!("cancel of request {}: not parked here (already answered)", id.0);
        }
    }

    fn ready(&mut self, ctx: &mut Context, token: u64) {
        let kbd = usize::try_from(token).unwrap_or(usize::MAX);
        let Some(Keyboard { source: Source::Evdev(dev), name, .. }) = self.keyboards.get_mut(kbd) else {
            ctx.unwatch(token);
            return;
        };
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        let mut failed = None;
        for _ in 0..EVDEV_BATCHES {
            match dev.read_events(&mut events) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let dropped = events.iter().any(|e| e.ev_type == EV_SYN && e.code == SYN_DROPPED);
        // Which keys are down now, if events were lost: the node's key
        // state (and the text decoder's modifiers) start again from it.
        let resync = if dropped {
            warn!("{name}: the kernel dropped events of {} (its buffer was full)", dev.path().display());
            dev.state().ok().map(|s| s.key)
        } else {
            None
        };
        self.deliver(ctx, kbd, &events);
        if let Some(keys) = resync {
            self.hub.resync_keys(kbd, &keys);
        }
        self.scratch = events;
        if let Some(e) = failed {
            let name = self.keyboards.get(kbd).map_or("?", |k| k.name.as_str());
            match e {
                evdev::EvdevError::Gone { .. } => info!("{name}: {e}; removing the device"),
                _ => warn!("{name}: {e}; removing the device"),
            }
            self.lose_keyboard(ctx, kbd);
        }
    }

    fn wake(&mut self, ctx: &mut Context) {
        let Some(poller) = &self.poller else {
            return;
        };
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        poller.drain(&mut events);
        if let Some(kbd) = self.keyboards.iter().position(|k| matches!(k.source, Source::I8042 { .. })) {
            self.deliver(ctx, kbd, &events);
        }
        self.scratch = events;
    }
}

/// Why the keyboard driver could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StartError(String);

fn main() -> ExitCode {
    driver::init_logging();
    driver::run(|info| KeyboardDriver::new(info).map_err(StartError))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn start(params: &[(&str, &str)]) -> StartInfo {
        StartInfo {
            instance: "keyboard".into(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn virtual_source_makes_count_keyboards() {
        let d = KeyboardDriver::new(&start(&[("source", "virtual"), ("count", "3")])).unwrap();
        assert_eq!(d.sources.len(), 3);
        assert!(d.sources.iter().all(|s| matches!(s, Source::Virtual) && s.takes_writes()));
    }

    #[test]
    fn i8042_defaults_to_emulated_ports() {
        let d = KeyboardDriver::new(&start(&[("source", "i8042"), ("scancodes", "1e 9e")])).unwrap();
        assert!(d.space.is_some());
        match &d.sources[..] {
            [Source::I8042 { emulated: Some(_), scancodes }] => assert_eq!(scancodes, &[0x1e, 0x9e]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auto_without_evdev_keyboards_falls_back_to_virtual() {
        // No /dev/input on the build machines; with one, this checks
        // nothing but that start-up does not fail.
        let d = KeyboardDriver::new(&start(&[])).unwrap();
        assert!(!d.sources.is_empty());
    }

    #[test]
    fn bad_parameters_stop_the_start() {
        let err = KeyboardDriver::new(&start(&[("source", "usb")])).unwrap_err();
        assert!(err.contains("source"), "{err}");
        let err = KeyboardDriver::new(&start(&[("source", "evdev"), ("devices", "/nonexistent/event9")])).unwrap_err();
        assert!(err.contains("/nonexistent/event9"), "{err}");
    }
}
