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
//! They are read with [`ddf::params`], as every driver's are: choices are
//! the lowercase names above, numbers decimal (or `0x` hex), spaces around
//! a value are not part of it, and a key given twice takes its last value.
//! A parameter the chosen source does not use is logged and otherwise
//! harmless. These stop the start, with an error that says what is wrong
//! (in the line the driver logs, which lands in ddm's log):
//!
//! - an unknown key, or a value that does not parse or is out of its range,
//!   named with the instance, the key and the value
//!   (`parameters of keyboard: count = "0": expected a number from 1 to 64`);
//! - `source=evdev` finding no keyboard; a `devices` node that cannot be
//!   opened (with why) or does not answer as an event device (`auto` logs
//!   these and starts virtual keyboards instead);
//! - `source=i8042` without its controller: the poller starts and probes the
//!   controller before any device appears, so `ports=real` without the
//!   right to the ports (`ioperm` needs `CAP_SYS_RAWIO`), or with no
//!   controller answering, fails here.
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

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use ddf::driver::{self, poll_events, Context, Driver, IoctlReply, ReadReply, StartInfo, Waker, WriteReply};
use ddf::input::evdev::{self, EvdevDevice, EvdevError};
use ddf::input::evnode::Identity;
use ddf::input::keyboard::{self, Mode};
use ddf::input::{Decoder, InputEvent, EV_KEY, EV_SYN, KEY_MAX, LED_CAPSL, LED_NUML, SYN_DROPPED};
use ddf::io::{IoError, PortSpace};
use ddf::params::ParamError;
use ddf::proto::{BusId, DeviceClass, DeviceId, DeviceSpec, Errno, Handle, OpenFlags, RequestId};
use ddf_keyboard::i8042::{self, EmulatedI8042, I8042Error, Poller, RealI8042Ports};
use log::{debug, info, warn};

use config::{Config, PortsKind, SourceKind};
use events::{Framing, Node};
use hub::{Hub, NodeKind};

/// Reads of one evdev device per wake-up at most (of 64 events each), so a
/// busy device cannot starve the request queue.
const EVDEV_BATCHES: usize = 16;

/// The emulated i8042, shared by the driver (writes, `scancodes`) and the
/// poller thread (its reads).
type SharedI8042 = Arc<Mutex<EmulatedI8042>>;

/// Where one keyboard's keys come from.
#[derive(Debug)]
enum Source {
    Evdev(EvdevDevice),
    Virtual,
    I8042 {
        /// The emulated controller (`None` on real ports).
        emulated: Option<SharedI8042>,
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
    /// The i8042's polling thread, started (and its controller probed) by
    /// the constructor, so that a controller that cannot be had stops the
    /// start with its reason.
    poller: Option<Poller>,
    /// What the poller wakes the runtime with: set by `init` (the
    /// runtime's waker does not exist before); wake-ups before are dropped,
    /// and `init` wakes once for what came meanwhile.
    waker: Arc<OnceLock<Waker>>,
    scratch: Vec<InputEvent>,
    /// The `lost_bytes` and `lost_events` counters the DDM last got
    /// (`None`: not yet sent).
    reported_lost: Option<(u64, u64)>,
}

impl KeyboardDriver {
    fn new(start: &StartInfo) -> Result<KeyboardDriver, StartError> {
        let config = Config::from_start(start)?;
        let waker = Arc::new(OnceLock::new());
        let mut poller = None;
        let sources = match config.source {
            SourceKind::Auto => {
                let found = match evdev_keyboards(&config) {
                    Ok(found) => found,
                    Err(e) => {
                        warn!("{}", ddf::error_chain(&e));
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
                    return Err(StartError::NoEvdevKeyboard { dir: PathBuf::from(evdev::INPUT_DIR) });
                }
                found.into_iter().map(Source::Evdev).collect()
            }
            SourceKind::Virtual => (0..config.count).map(|_| Source::Virtual).collect(),
            SourceKind::I8042 => {
                let (started, emulated) = start_i8042(&config, waker.clone())?;
                poller = Some(started);
                vec![Source::I8042 { emulated, scancodes: config.scancodes.clone() }]
            }
        };
        Ok(KeyboardDriver {
            hub: Hub::new(config.buffer, config.event_buffer),
            config,
            sources,
            keyboards: Vec::new(),
            poller,
            waker,
            scratch: Vec::new(),
            reported_lost: None,
        })
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
fn evdev_keyboards(config: &Config) -> Result<Vec<EvdevDevice>, StartError> {
    if config.devices.is_empty() {
        return evdev::find_keyboards(std::path::Path::new(evdev::INPUT_DIR)).map_err(StartError::Scan);
    }
    let mut found = Vec::new();
    for path in &config.devices {
        let dev = EvdevDevice::open(path).map_err(|e| StartError::device(path, e))?;
        match dev.is_keyboard() {
            Ok(true) => {}
            Ok(false) => warn!("{}: {:?} does not look like a keyboard; using it as asked", path.display(), dev.name()),
            Err(e) => return Err(StartError::device(path, e)),
        }
        found.push(dev);
    }
    Ok(found)
}

/// Starts the thread that polls the i8042 and probes its controller: the
/// emulated one on its own port space (returned too, for writes and
/// `scancodes`), or the machine's ports 0x60/0x64. The thread wakes the
/// runtime through `waker` once `init` has set it.
fn start_i8042(config: &Config, waker: Arc<OnceLock<Waker>>) -> Result<(Poller, Option<SharedI8042>), StartError> {
    let wake = move || {
        if let Some(waker) = waker.get() {
            waker.wake();
        }
    };
    match config.ports {
        PortsKind::Emulated => {
            let mut space = PortSpace::new();
            let dev = EmulatedI8042::install(&mut space).map_err(StartError::EmulatedI8042)?;
            let poller = Poller::spawn(move || Ok(space), config.poll(), wake).map_err(StartError::I8042)?;
            Ok((poller, Some(dev)))
        }
        PortsKind::Real => {
            // SAFETY: the administrator asked for the real controller
            // (`ports=real`, never a default), which the documentation
            // says must not be held by a kernel driver; this driver only
            // reads its status and data ports, and the i8042 does no DMA.
            let open = || unsafe { RealI8042Ports::acquire() };
            Ok((Poller::spawn(open, config.poll(), wake).map_err(StartError::I8042)?, None))
        }
    }
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
        if self.poller.is_some() {
            // `init` runs once per driver, so the cell is still empty.
            let _ = self.waker.set(ctx.waker());
            // What the poller read before there was a waker: `wake` takes it.
            ctx.waker().wake();
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
enum StartError {
    /// A parameter is unknown, or has a value it cannot take.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// `source=evdev` found no keyboard to read.
    #[error(
        "source=evdev: no keyboard in {} (can this driver read the event devices?); \
         use source=virtual for a virtual keyboard",
        dir.display()
    )]
    NoEvdevKeyboard {
        /// Where it looked.
        dir: PathBuf,
    },
    /// `/dev/input` could not be searched for keyboards.
    #[error("cannot look for evdev keyboards")]
    Scan(#[source] EvdevError),
    /// A node named by `devices` cannot be opened.
    #[error("devices: cannot open {}", path.display())]
    OpenDevice {
        /// The node.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A node named by `devices` opens, but does not answer as an event
    /// device.
    #[error("devices: {} is not a usable event device", path.display())]
    Device {
        /// The node.
        path: PathBuf,
        /// What failed (an evdev ioctl).
        #[source]
        source: EvdevError,
    },
    /// The emulated i8042 could not be put on its port space.
    #[error("cannot set up the emulated i8042")]
    EmulatedI8042(#[source] IoError),
    /// The i8042 could not be started: its ports (`ioperm` on real ports),
    /// its controller, or its polling thread.
    #[error("cannot start the i8042")]
    I8042(#[source] I8042Error),
}

impl StartError {
    /// What went wrong with the `devices` node `path`: an open that failed
    /// is [`StartError::OpenDevice`], anything else [`StartError::Device`].
    fn device(path: &std::path::Path, e: EvdevError) -> StartError {
        match e {
            EvdevError::Open { path, source } => StartError::OpenDevice { path, source },
            e @ (EvdevError::List { .. }
            | EvdevError::Ioctl { .. }
            | EvdevError::Read { .. }
            | EvdevError::Gone { .. }) => StartError::Device { path: path.to_owned(), source: e },
        }
    }
}

fn main() -> ExitCode {
    driver::init_logging();
    driver::run(KeyboardDriver::new)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::{Duration, Instant};

    use ddf::input::KeyAction;

    use super::*;

    fn start(params: &[(&str, &str)]) -> StartInfo {
        StartInfo::new("keyboard", params)
    }

    #[test]
    fn virtual_source_makes_count_keyboards() {
        let d = KeyboardDriver::new(&start(&[("source", "virtual"), ("count", "3")])).unwrap();
        assert_eq!(d.sources.len(), 3);
        assert!(d.sources.iter().all(|s| matches!(s, Source::Virtual) && s.takes_writes()));
        assert!(d.poller.is_none());
    }

    #[test]
    fn i8042_defaults_to_emulated_ports_and_polls_them_from_the_start() {
        let d = KeyboardDriver::new(&start(&[("source", "i8042"), ("scancodes", "1e 9e"), ("poll_ms", "1")])).unwrap();
        let [Source::I8042 { emulated: Some(dev), scancodes }] = &d.sources[..] else { panic!("{:?}", d.sources) };
        assert_eq!(scancodes, &[0x1e, 0x9e]);
        // The constructor started the poller on the emulated controller:
        // what the controller is fed comes out decoded (A down, A up).
        dev.lock().unwrap().push(scancodes);
        let poller = d.poller.as_ref().unwrap();
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while events.len() < 2 && Instant::now() < deadline {
            poller.drain(&mut events);
            std::thread::sleep(Duration::from_millis(1));
        }
        let keys: Vec<_> = events.iter().filter_map(InputEvent::key_action).collect();
        assert_eq!(keys, [(ddf::input::KEY_A, KeyAction::Press), (ddf::input::KEY_A, KeyAction::Release)]);
    }

    #[test]
    fn auto_without_evdev_keyboards_falls_back_to_virtual() {
        // No /dev/input on the build machines; with one, this checks
        // nothing but that start-up does not fail.
        let d = KeyboardDriver::new(&start(&[])).unwrap();
        assert!(!d.sources.is_empty());
    }

    #[test]
    fn bad_parameters_stop_the_start_naming_key_and_value() {
        for (key, value) in [("source", "usb"), ("count", "0"), ("scancodes", "zz"), ("colour", "red")] {
            let err = KeyboardDriver::new(&start(&[(key, value)])).unwrap_err();
            let StartError::Params(e) = &err else { panic!("{key}={value}: {err:?}") };
            assert_eq!((e.key.as_deref(), e.value.as_deref()), (Some(key), Some(value)), "{err}");
            assert!(err.to_string().starts_with(&format!("parameters of keyboard: {key} = {value:?}: ")), "{err}");
        }
    }

    #[test]
    fn a_devices_node_that_cannot_be_opened_is_named_with_why() {
        let err = KeyboardDriver::new(&start(&[("source", "evdev"), ("devices", "/nonexistent/event9")])).unwrap_err();
        let StartError::OpenDevice { path, source } = &err else { panic!("{err:?}") };
        assert_eq!(path, std::path::Path::new("/nonexistent/event9"));
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(err.to_string(), "devices: cannot open /nonexistent/event9");
        // `auto` logs it and falls back to virtual keyboards.
        let d = KeyboardDriver::new(&start(&[("devices", "/nonexistent/event9"), ("count", "2")])).unwrap();
        assert!(matches!(&d.sources[..], [Source::Virtual, Source::Virtual]), "{:?}", d.sources);
    }

    #[test]
    fn a_devices_node_that_is_no_event_device_is_refused() {
        // /dev/null opens, but answers no evdev ioctl.
        let err = KeyboardDriver::new(&start(&[("source", "evdev"), ("devices", "/dev/null")])).unwrap_err();
        let StartError::Device { path, source: EvdevError::Ioctl { .. } } = &err else { panic!("{err:?}") };
        assert_eq!(path, std::path::Path::new("/dev/null"));
        assert!(ddf::error_chain(&err).starts_with("devices: /dev/null is not a usable event device: "), "{err}");
    }

    #[test]
    fn the_real_i8042_without_the_right_to_its_ports_stops_the_start() {
        // Without CAP_SYS_RAWIO `ioperm` fails (and off x86-64 there are no
        // such ports). As root, this thread (and the poller thread it
        // starts) becomes nobody first, which drops the capability; the
        // machine's controller is never touched.
        let err = std::thread::spawn(|| {
            // SAFETY: a raw setresuid changes the credentials of this
            // thread only (glibc's wrapper would change every thread's);
            // it takes plain integers and the thread ends with the test.
            // Not root, it fails: there is nothing to drop then.
            let _ = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap();
            let eff = u64::from_str_radix(eff.trim(), 16).unwrap();
            const CAP_SYS_RAWIO: u32 = 17; // linux/capability.h
            assert_eq!(eff & (1 << CAP_SYS_RAWIO), 0, "this thread still has CAP_SYS_RAWIO");
            KeyboardDriver::new(&start(&[("source", "i8042"), ("ports", "real")])).map(|_| ()).unwrap_err()
        })
        .join()
        .unwrap();
        assert!(matches!(err, StartError::I8042(I8042Error::Io(_))), "{err:?}");
        assert!(ddf::error_chain(&err).starts_with("cannot start the i8042: port access failed: "), "{err}");
    }

    #[test]
    fn no_evdev_keyboard_says_what_to_do() {
        let err = StartError::NoEvdevKeyboard { dir: PathBuf::from(evdev::INPUT_DIR) };
        assert_eq!(
            err.to_string(),
            "source=evdev: no keyboard in /dev/input (can this driver read the event devices?); \
             use source=virtual for a virtual keyboard"
        );
        // What the constructor answers on a machine without keyboards.
        match KeyboardDriver::new(&start(&[("source", "evdev")])) {
            Err(e) => assert!(matches!(e, StartError::NoEvdevKeyboard { .. } | StartError::Scan(_)), "{e:?}"),
            Ok(d) => assert!(d.sources.iter().all(|s| matches!(s, Source::Evdev(_)))),
        }
    }
}
