//! The corpus seeds: small, meaningful inputs for each target, made by the
//! project's own encoders (frames and messages as the code sends them,
//! state files as the store writes them, key events as a keyboard types
//! them), plus rules files and control lines as the documentation shows
//! them. `cargo run --example make-seeds` writes them to `fuzz/corpus/`.

use std::path::Path;

use access_policy::{NodeKey, Perm, PermStore, Policy};
use ddf::input::{text_to_events, InputEvent, KeyAction, EV_KEY, EV_LED, EV_MSC, EV_SYN, KEY_A, MSC_SCAN, SYN_DROPPED};
use ddf::ipc::encode_frame;
use ddf::proto::{
    Answer, BoundDevice, BusId, Call, ControlRequest, ControlResponse, DdmInfo, DdmToDriver, DeviceClass, DeviceId,
    DeviceSpec, DriverState, DriverStatus, DriverToDdm, Errno, Fault, Handle, Happened, Hello, MonitorEvent, NodeInfo,
    OpenFlags, Query, Refusal, RequestId, RingSpec, StateEntry,
};
use ddf_vbus::model::Model;
use serde::Serialize;

/// One seed: which target's corpus, its file name there, its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The target (`frame`, `rules`, ...).
    pub target: &'static str,
    /// The file name in `fuzz/corpus/<target>/`.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

fn seed(target: &'static str, name: &str, bytes: impl Into<Vec<u8>>) -> Seed {
    Seed { target, name: name.to_owned(), bytes: bytes.into() }
}

/// Postcard bytes of a message the code sends (a bug here is a bug of the
/// encoder, not of the seed: it cannot fail for these types).
fn header<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_else(|e| panic!("encoding a seed: {e}"))
}

fn frame<T: Serialize>(value: &T, payload: &[u8]) -> Vec<u8> {
    encode_frame(value, payload).unwrap_or_else(|e| panic!("framing a seed: {e}"))
}

fn s(text: &str) -> String {
    text.to_owned()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (s(k), s(v))).collect()
}

/// The DDM's messages to drivers, one of each kind, with names.
fn ddm_to_driver() -> Vec<(&'static str, DdmToDriver)> {
    let call = |id, call| DdmToDriver::Call { id: RequestId(id), call };
    vec![
        (
            "start-with-state",
            DdmToDriver::Start {
                instance: s("vbus"),
                params: pairs(&[("size", "64M"), ("name", "ram0")]),
                state: vec![StateEntry { key: s("devices"), bytes: b"ddf-vbus-state 2\nvdev0\n".to_vec(), fds: 1 }],
            },
        ),
        ("open", call(1, Call::Open { device: DeviceId(0), flags: OpenFlags(libc::O_RDWR) })),
        ("close", call(2, Call::Close { handle: Handle(7) })),
        ("read", call(42, Call::Read { handle: Handle(7), offset: 0, len: 4096, flags: OpenFlags(libc::O_NONBLOCK) })),
        ("write", call(3, Call::Write { handle: Handle(3), offset: 5, flags: OpenFlags(1) })),
        ("ioctl", call(4, Call::Ioctl { handle: Handle(7), cmd: ddf::input::keyboard::GET_STATS, out_len: 32 })),
        ("poll", call(5, Call::Poll { handle: Handle(7), events: libc::POLLIN as u32, notify: true })),
        ("scatter", call(6, Call::Scatter { handle: Handle(1), offset: 4096, lens: vec![512, 512, 3072] })),
        ("gather", call(7, Call::Gather { handle: Handle(1), offset: 1 << 20, lens: vec![4096, 4096] })),
        ("cancel", DdmToDriver::Cancel { id: RequestId(42) }),
        ("ping", DdmToDriver::Ping { seq: 9 }),
        ("shutdown", DdmToDriver::Shutdown),
        ("inject-exit", DdmToDriver::Inject(Fault::Exit(3))),
        ("inject-flood", DdmToDriver::Inject(Fault::Flood)),
        ("attach", DdmToDriver::Attach { device: DeviceId(1), access: OpenFlags(libc::O_RDONLY), ring: None }),
        (
            "attach-with-ring",
            DdmToDriver::Attach {
                device: DeviceId(1),
                access: OpenFlags(libc::O_RDWR),
                ring: Some(RingSpec { slots: 8, slot_size: 4096 }),
            },
        ),
        ("ring", DdmToDriver::Ring(RingSpec { slots: 64, slot_size: 8192 })),
        ("inject-ring-garbage", DdmToDriver::Inject(Fault::RingGarbage)),
        (
            "bind",
            DdmToDriver::Bind(BoundDevice {
                path: s("vbus/vdev0"),
                name: s("vdev0"),
                bus_kind: s("vbus"),
                address: Some(s("vdev0")),
                meta: pairs(&[("vendor", "1234"), ("device", "0001")]),
            }),
        ),
        ("unbind", DdmToDriver::Unbind { path: s("vbus/vdev0") }),
        ("rescan", DdmToDriver::Rescan),
    ]
}

/// Drivers' messages to the DDM, one of each kind.
fn driver_to_ddm() -> Vec<(&'static str, DriverToDdm)> {
    let reply = |id, result| DriverToDdm::Reply { id: RequestId(id), result };
    let mut pci = DeviceSpec::new(DeviceId(3), "0000:00:01.0", DeviceClass::Block, 256);
    pci.bus = Some(BusId(0));
    pci.address = Some(s("0000:00:01.0"));
    pci.meta = pairs(&[("vendor", "0x1af4"), ("device", "0x1045"), ("class", "0x00ff00")]);
    pci.offer = true;
    let mut bound = DeviceSpec::new(DeviceId(0), "vdev0", DeviceClass::Char, 0);
    bound.serves = Some(s("vbus/vdev0"));
    vec![
        ("add-device", DriverToDdm::AddDevice(DeviceSpec::new(DeviceId(1), "zero", DeviceClass::Char, 0))),
        ("add-pci-device", DriverToDdm::AddDevice(pci)),
        ("add-bound-device", DriverToDdm::AddDevice(bound)),
        ("remove-device", DriverToDdm::RemoveDevice { device: DeviceId(1) }),
        ("ready", DriverToDdm::Ready),
        ("reply-opened", reply(1, Ok(Answer::Opened { handle: Handle(7) }))),
        ("reply-closed", reply(2, Ok(Answer::Closed))),
        ("reply-data", reply(42, Ok(Answer::Data))),
        ("reply-written", reply(300, Ok(Answer::Written { len: 1 }))),
        ("reply-ioctl", reply(4, Ok(Answer::Ioctl { result: 0 }))),
        ("reply-polled", reply(5, Ok(Answer::Polled { revents: libc::POLLIN as u32 }))),
        ("reply-backed", reply(6, Ok(Answer::OpenedBacked { handle: Handle(8) }))),
        ("reply-eagain", reply(1, Err(Errno::EAGAIN))),
        ("pong", DriverToDdm::Pong { seq: 9 }),
        ("poll-wake", DriverToDdm::PollWake { handle: Handle(7) }),
        ("save-state", DriverToDdm::SaveState { key: s("devices") }),
        ("drop-state", DriverToDdm::DropState { key: s("devices") }),
        ("counters", DriverToDdm::Counters(vec![(s("lost_bytes"), 904)])),
        ("add-bus", DriverToDdm::AddBus { bus: BusId(0), name: s("pci"), kind: s("pci"), parent: None }),
        (
            "add-child-bus",
            DriverToDdm::AddBus { bus: BusId(1), name: s("usb1"), kind: s("usb"), parent: Some(BusId(0)) },
        ),
        ("remove-bus", DriverToDdm::RemoveBus { bus: BusId(1) }),
        ("sandbox-violation", DriverToDdm::SandboxViolation { syscall: 41, arch: 0xC000_003E }),
        (
            "start-failed",
            DriverToDdm::StartFailed { why: s("parameters of keyboard: count = \"0\": expected 1 to 64") },
        ),
    ]
}

fn control_requests() -> Vec<(&'static str, ControlRequest)> {
    vec![
        ("tree", ControlRequest::Tree),
        ("status", ControlRequest::Status),
        ("info", ControlRequest::Info),
        ("restart", ControlRequest::Restart { driver: s("keyboard") }),
        ("inject", ControlRequest::Inject { driver: s("null"), fault: Fault::Segv }),
        ("find-bus", ControlRequest::Find(Query { bus: Some(s("pci")), ..Query::default() })),
        (
            "find-all",
            ControlRequest::Find(Query {
                bus: Some(s("vbus")),
                class: Some(s("char")),
                name: Some(s("key*")),
                driver: Some(s("v*")),
                state: Some(s("running")),
            }),
        ),
        ("load", ControlRequest::Load { driver: s("vdrv"), bus: Some(s("vbus")), params: pairs(&[("k", "v")]) }),
        ("unload", ControlRequest::Unload { path: s("vbus/vdev0") }),
        ("rescan", ControlRequest::Rescan { bus: None }),
        ("direct", ControlRequest::Direct),
        ("monitor", ControlRequest::Monitor),
        ("node", ControlRequest::Node { path: s("vbus/vdev0") }),
    ]
}

fn control_responses() -> Vec<(&'static str, ControlResponse)> {
    let node = NodeInfo {
        path: s("pci/0000:00:01.0"),
        class: Some(DeviceClass::Block),
        driver: Some(s("pci")),
        pid: Some(10341),
        state: Some(DriverState::Running),
        mode: 0o660,
        uid: 0,
        gid: 6,
        size: 256,
        bus: Some(s("pci")),
        address: Some(s("0000:00:01.0")),
        meta: pairs(&[("vendor", "0x1af4"), ("device", "0x1045")]),
        state_text: Some(s("unbound: no driver matches pci 1af4:1045")),
    };
    let root = NodeInfo {
        path: String::new(),
        class: None,
        driver: None,
        pid: None,
        state: None,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        bus: None,
        address: None,
        meta: Vec::new(),
        state_text: None,
    };
    let status = DriverStatus {
        name: s("keyboard"),
        last_exit: Some(s("killed by signal 11 (SIGSEGV)")),
        exec: s("/usr/lib/ddf/ddf-keyboard"),
        pid: Some(10333),
        state: DriverState::Running,
        requests: 127,
        errors: 0,
        restarts: 1,
        devices: vec![s("keyboard0")],
        counters: vec![(s("lost_bytes"), 904)],
        fast_calls: 5_219_792,
        dma: None,
        violations: 1,
        next_try_ms: None,
        quarantines: 0,
        device_count: 1,
    };
    vec![
        ("tree-part", ControlResponse::TreePart(vec![root.clone()])),
        ("tree", ControlResponse::Tree(vec![root, node])),
        ("status", ControlResponse::Status(vec![status])),
        ("error", ControlResponse::Error(s("no driver named \"nul\"; ddmctl status lists them"))),
        ("info", ControlResponse::Info(DdmInfo { mountpoint: s("/ddf"), version: s("0.1.0"), pid: 4242 })),
        ("done", ControlResponse::Done(s("null: injected Segv"))),
        (
            "direct",
            ControlResponse::Direct {
                device: DeviceId(0),
                access: OpenFlags(libc::O_RDWR),
                driver: s("ramdisk"),
                ring: Some(RingSpec { slots: 8, slot_size: 4096 }),
            },
        ),
        (
            "event",
            ControlResponse::Event(MonitorEvent {
                seq: 17,
                unix_ms: 1_796_000_000_000,
                what: Happened::Unbound { path: s("vbus/v0"), driver: s("vdrv"), why: s("unloaded") },
            }),
        ),
        ("refused", ControlResponse::Refused { why: Refusal::NotFound, message: s("no node \"vbus/v9\"") }),
    ]
}

/// Rules files: the examples of `ddf.rules(5)` (with groups every machine
/// has), the built-in rules as ddm prints them, and a few edge cases.
fn rules() -> Vec<Seed> {
    let manual = "# Everything on the PCI bus: root only.\n\
                  device pci/**          root:root    0600\n\
                  \n\
                  # Keyboards also for the group disk (the owner stays root).\n\
                  device **/keyboard*    -:disk       0640\n\
                  \n\
                  block  ram*            root:disk    0660\n\
                  bus    vbus            root:6       0750\n\
                  device vbus/*          0:6          0660\n\
                  char   ttyS[0-3]       -            0620\n";
    vec![
        seed("rules", "manual-example", manual),
        seed("rules", "later-wins", "null    root:root   0666\nnull    root:root   0600\n"),
        seed("rules", "site", "# site rules\nstall* root:root 0644\nstall 5:6 0660   # later wins\n"),
        seed("rules", "builtin-printed", Policy::builtin().to_string()),
        seed("rules", "globs", "/ 0:0 0711\n**/[!a-c]?\\* 1:2 -\nbus pci/**/ide* nobody:nogroup 4755\n\\#hash - 0\n"),
        seed("rules", "bad-mode", "null root:root 0666\n\nzero root:root rw-rw-rw-\n"),
    ]
}

/// A valid ACL: user::rw-, user:1000:r--, group::r--, mask::r--, other::---.
const ACL: &[u8] = &[
    0x02, 0x00, 0x00, 0x00, // version 2
    0x01, 0x00, 0x06, 0x00, 0xff, 0xff, 0xff, 0xff, // USER_OBJ rw-
    0x02, 0x00, 0x04, 0x00, 0xe8, 0x03, 0x00, 0x00, // USER 1000 r--
    0x04, 0x00, 0x04, 0x00, 0xff, 0xff, 0xff, 0xff, // GROUP_OBJ r--
    0x10, 0x00, 0x04, 0x00, 0xff, 0xff, 0xff, 0xff, // MASK r--
    0x20, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, // OTHER ---
];

/// Permission state files as [`PermStore`] writes them, made in `scratch`.
fn permissions(scratch: &Path) -> Vec<Seed> {
    let path = scratch.join("permissions.json");
    let _ = std::fs::remove_file(&path);
    let (mut store, _) = PermStore::open(&path);
    let mut out = Vec::new();
    let mut snapshot = |name: &str, store: &PermStore| {
        if let Ok(bytes) = std::fs::read(store.path()) {
            out.push(seed("permissions", name, bytes));
        }
    };
    let steps: [(&str, NodeKey, Perm); 3] = [
        ("one-chmod", NodeKey::new("zero", None), Perm { uid: 0, gid: 0, mode: 0o600 }),
        (
            "keyboard-by-serial",
            NodeKey::new("keyboard0", Some(s("usb:1-1.2"))),
            Perm { uid: 0, gid: 2000, mode: 0o640 },
        ),
        ("setuid-root-node", NodeKey::new("", None), Perm { uid: 0, gid: 0, mode: 0o4711 }),
    ];
    for (name, key, perm) in steps {
        if store.set(&key, perm).is_ok() {
            snapshot(name, &store);
        }
    }
    if store.set_acl(&NodeKey::new("ram0", None), ACL).is_ok() {
        snapshot("with-acl", &store);
    }
    let other = NodeKey::new("keyboard0", Some(s("usb:1-1.3")));
    if store.set(&other, Perm { uid: 1000, gid: 1000, mode: 0o600 }).is_ok() {
        snapshot("two-keyboards-one-path", &store);
    }
    let _ = std::fs::remove_file(&path);
    out
}

fn acls() -> Vec<Seed> {
    let minimal: Vec<u8> = [2u32.to_le_bytes(), [1, 0, 7, 0], [0xff; 4], [4, 0, 5, 0], [0xff; 4], [0x20, 0, 1, 0]]
        .concat()
        .into_iter()
        .chain([0xff; 4])
        .collect();
    vec![seed("acl", "named-user-and-mask", ACL), seed("acl", "owner-group-other", minimal)]
}

fn vbus() -> Vec<Seed> {
    let mut out = vec![
        seed("vbus_ctl", "add", "add vdev0 vendor=1234 device=0001 class=char\n"),
        seed("vbus_ctl", "add-block", "add disk1 devclass=block size=64K address=slot-4 serial=a=b empty=\n"),
        seed("vbus_ctl", "remove", "remove vdev0\n"),
        seed("vbus_ctl", "add-many", "add-many v 1000 vendor=4242\n"),
        seed("vbus_ctl", "remove-all", "remove-all\n"),
        seed("vbus_ctl", "batch", "# a batch, applied all or nothing\n\nadd a\nadd b address=q\nremove a\n"),
        seed("vbus_ctl", "refused", "add b\nadd b\n"),
    ];
    let text = "add vdev0 vendor=1234 device=0001\nadd disk0 address=slot-3 devclass=block size=65536\n";
    if let Ok((model, _)) = Model::default().run(text) {
        out.push(seed("vbus_state", "two-devices", model.encode_state()));
    }
    if let Ok((model, _)) = Model::default().run("add-many v 12 class=char vendor=4242\n") {
        out.push(seed("vbus_state", "twelve-devices", model.encode_state()));
    }
    out.push(seed("vbus_state", "empty", "ddf-vbus-state 2\n"));
    out.push(seed("vbus_state", "one-bad-line", "ddf-vbus-state 2\nv0\nv/1\nv2 devclass=tape\nv3\n"));
    out.push(seed("vbus_state", "runs", "ddf-vbus-state 2\n\t0 40 /v k=1\n\t42 3 /v k=1\nv40 k=2\n\t7 2 /\n"));
    out.push(seed("vbus_state", "format-1", "ddf-vbus-state 1\nv0\nv1 k=1\n"));
    out
}

fn evdev() -> Vec<Seed> {
    let mut out = Vec::new();
    if let Ok(events) = text_to_events("Hello, World!\n") {
        out.push(seed("evdev", "hello-world", InputEvent::encode_records(&events)));
    }
    // What a real keyboard's event device gives for one key: the scan
    // code, the key, a report; autorepeat; a Caps Lock LED; a dropped
    // buffer, stamped with a real time.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_764_000_000_123_456);
    let real: Vec<InputEvent> = [
        InputEvent::new(EV_MSC, MSC_SCAN, 0x1e),
        InputEvent::key(KEY_A, KeyAction::Press),
        InputEvent::syn(),
        InputEvent::key(KEY_A, KeyAction::Repeat),
        InputEvent::syn(),
        InputEvent::new(EV_MSC, MSC_SCAN, 0x1e),
        InputEvent::key(KEY_A, KeyAction::Release),
        InputEvent::syn(),
        InputEvent::new(EV_LED, ddf::input::LED_CAPSL, 1),
        InputEvent::new(EV_SYN, SYN_DROPPED, 0),
    ]
    .into_iter()
    .map(|e| e.stamped(at))
    .collect();
    out.push(seed("evdev", "scan-key-repeat-led-dropped", InputEvent::encode_records(&real)));
    // Raw-mode records as /ddf/keyboard0 gives them: EV_KEY only.
    let raw: Vec<InputEvent> = [(ddf::input::KEY_LEFTCTRL, KeyAction::Press), (ddf::input::KEY_C, KeyAction::Press)]
        .into_iter()
        .map(|(k, a)| InputEvent::key(k, a).stamped(at))
        .collect();
    out.push(seed("evdev", "raw-ctrl-c", InputEvent::encode_records(&raw)));
    out.push(seed("evdev", "odd-record", InputEvent::new(EV_KEY, 0x2ff, 7).to_bytes()));
    out
}

fn i8042() -> Vec<Seed> {
    vec![
        seed(
            "i8042",
            "hello-world",
            [
                0x2a, 0x23, 0xa3, 0xaa, 0x12, 0x92, 0x26, 0xa6, 0x26, 0xa6, 0x18, 0x98, 0x33, 0xb3, 0x39, 0xb9, 0x36,
                0x11, 0x91, 0xb6, 0x18, 0x98, 0x13, 0x93, 0x26, 0xa6, 0x20, 0xa0, 0x2a, 0x02, 0x82, 0xaa, 0x1c, 0x9c,
            ],
        ),
        // Up, Right Ctrl, keypad Enter, Delete, Left Meta, each made and broken.
        seed(
            "i8042",
            "extended",
            [
                0xe0, 0x48, 0xe0, 0xc8, 0xe0, 0x1d, 0xe0, 0x1c, 0xe0, 0x9c, 0xe0, 0x9d, 0xe0, 0x53, 0xe0, 0xd3, 0xe0,
                0x5b, 0xe0, 0xdb,
            ],
        ),
        // Print Screen with its fake shifts, then Pause.
        seed(
            "i8042",
            "print-screen-pause",
            [0xe0, 0x2a, 0xe0, 0x37, 0xe0, 0xb7, 0xe0, 0xaa, 0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5],
        ),
        // Self-test passed, an ACK, a held key repeating, an overrun.
        seed("i8042", "noise-and-repeat", [0xaa, 0xfa, 0x1e, 0x1e, 0x1e, 0x9e, 0x00, 0xff, 0xee, 0xfe]),
        // Caps Lock, then Num Lock and the keypad.
        seed("i8042", "locks-and-keypad", [0x3a, 0xba, 0x10, 0x90, 0x45, 0xc5, 0x47, 0xc7, 0x53, 0xd3, 0x4e, 0xce]),
    ]
}

/// Manifests: the built-in drivers' own, every key of `ddm_fs::manifest`'s
/// documentation, and a driver that serves bus devices, as the tests use.
fn manifests() -> Vec<Seed> {
    let every_key = r#"name = "null"          # instance name, unique in one ddm
exec = "ddf-null"      # executable; relative names are looked up in the driver directory
autostart = true       # start when ddm starts
handles_survive_restart = true   # open files are re-opened on a new incarnation
[params]               # key = "value" pairs handed to the driver at start
size = "64M"
count = 2
[supervision]          # optional overrides of the restart policy
max_failures = 5       # deaths within `window_secs` that quarantine it
window_secs = 60
backoff_ms = 100       # wait before the 2nd restart; doubles each time
backoff_max_ms = 5000
heartbeat_ms = 1000    # ping period
heartbeat_timeout_ms = 3000   # no pong for this long: hung, killed
request_timeout_ms = 5000     # open/ioctl/poll unanswered this long: hung
blocking_calls = ["read", "write"]   # calls that may wait forever
[sandbox]              # how the process is confined
user = "nobody"        # run as this user (default: ddm's)
landlock = true        # open no file but these (default: true)
read = ["/sys"]        # and below
write = []
"#;
    vec![
        seed("manifest", "null", include_str!("../../drivers/null/manifest.toml")),
        seed("manifest", "keyboard", include_str!("../../drivers/keyboard/manifest.toml")),
        seed("manifest", "ramdisk", include_str!("../../drivers/ramdisk/manifest.toml")),
        seed("manifest", "pci", include_str!("../../drivers/pci/manifest.toml")),
        seed("manifest", "vbus", include_str!("../../drivers/vbus/manifest.toml")),
        seed("manifest", "every-key", every_key),
        seed(
            "manifest",
            "bus-device-driver",
            "name = \"vdrv\"\nexec = \"ddf-testdrv\"\n[params]\nno_own_devices = \"true\"\n\
             [match]\nbus = \"vbus\"\nclass = \"char\"\n[match.ids]\nvendor = \"12*\"\ndevice = \"[0-9]???\"\n",
        ),
        seed("manifest", "crash-loop", "name = \"t\"\nexec = \"x\"\n[supervision]\nmax_failures = 3\nwindow_secs = 10\nbackoff_ms = 100\nbackoff_max_ms = 250\n"),
    ]
}

/// Every seed of every target. `scratch` is an empty directory to make
/// state files in.
pub fn all(scratch: &Path) -> Vec<Seed> {
    let mut out = Vec::new();
    for (name, msg) in ddm_to_driver() {
        out.push(seed("ddm_to_driver", name, header(&msg)));
    }
    for (name, msg) in driver_to_ddm() {
        out.push(seed("driver_to_ddm", name, header(&msg)));
    }
    for (name, msg) in control_requests() {
        out.push(seed("control_request", name, header(&msg)));
    }
    for (name, msg) in control_responses() {
        out.push(seed("control_response", name, header(&msg)));
    }
    // Frames as they go on the wire, payloads included.
    out.push(seed("frame", "hello", frame(&Hello::ours(), b"")));
    out.push(seed(
        "frame",
        "read",
        frame(
            &DdmToDriver::Call {
                id: RequestId(42),
                call: Call::Read { handle: Handle(7), offset: 0, len: 4096, flags: OpenFlags(0) },
            },
            b"",
        ),
    ));
    out.push(seed(
        "frame",
        "write-hi",
        frame(
            &DdmToDriver::Call {
                id: RequestId(1),
                call: Call::Write { handle: Handle(3), offset: 5, flags: OpenFlags(1) },
            },
            b"hi",
        ),
    ));
    out.push(seed(
        "frame",
        "reply-data",
        frame(&DriverToDdm::Reply { id: RequestId(42), result: Ok(Answer::Data) }, &[0u8; 64]),
    ));
    out.push(seed(
        "frame",
        "save-state",
        frame(&DriverToDdm::SaveState { key: s("devices") }, b"ddf-vbus-state 2\nvdev0\n"),
    ));
    for (name, msg) in ddm_to_driver().into_iter().filter(|(n, _)| *n == "start-with-state") {
        out.push(seed("frame", name, frame(&msg, b"")));
    }
    for (name, msg) in control_requests().into_iter().filter(|(n, _)| *n == "find-bus") {
        out.push(seed("frame", name, frame(&msg, b"")));
    }
    for (name, msg) in control_responses().into_iter().filter(|(n, _)| *n == "status") {
        out.push(seed("frame", name, frame(&msg, b"")));
    }
    out.push(seed("hello", "ours", frame(&Hello::ours(), b"")));
    out.push(seed("hello", "next-version", frame(&Hello { version: Hello::ours().version + 1, ..Hello::ours() }, b"")));
    out.push(seed("hello", "not-ddf", frame(&Hello { magic: *b"HTTP", version: 1 }, b"/ 1.1")));
    out.extend(rules());
    out.extend(permissions(scratch));
    out.extend(acls());
    out.extend(vbus());
    out.extend(evdev());
    out.extend(i8042());
    out.extend(manifests());
    out
}
