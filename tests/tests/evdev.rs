//! The keyboards' evdev nodes end to end (issue 14): a real ddm, a real
//! mount, the virtual keyboard typed into with `ddmctl type`, and the input
//! programs of Debian's packages reading `/ddf/input/event0`: python-evdev
//! (`python3-evdev`, on Debian's `/usr/bin/python3`), `evtest`, and
//! libevdev (`evemu-describe`). `scripts/deps` installs them.
//!
//! Every reader is started, and seen to have the device open, before
//! anything is typed: a handle only gets events typed after it was opened.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ddf::input::evio::{self, InputMask, BUS_I8042, BUS_VIRTUAL};
use ddf::input::evnode::Bits;
use ddf::input::{
    keyboard, text_to_events, InputEvent, KeyAction, EVENT_SIZE, EV_KEY, EV_MAX, EV_SYN, KEY_B, KEY_LEFTSHIFT, KEY_MAX,
    KEY_X, SYN_DROPPED, SYN_REPORT,
};
use ddf::proto::OpenFlags;
use ddf_tests::clients::{
    counter, drain, ioctl, open_nonblocking, signal, type_keys, wait_blocked, wait_deadline, Reader, Tmux, DEADLINE,
};
use ddf_tests::{wait_timeout, wait_until, Ddm};

/// Debian's Python, where `python3-evdev` is installed (the `python3` on
/// `PATH` may be another one).
const PYTHON: &str = "/usr/bin/python3";

/// The built-in keyboard's evdev node, below the mount.
const EVENT0: &str = "input/event0";

/// (type, code, value) of an event.
type Tcv = (u16, u16, i32);

/// The events an evdev node gives for `text` typed with `ddmctl type`:
/// each key event is a packet of its own.
fn typed(text: &str) -> Vec<Tcv> {
    text_to_events(text).unwrap().iter().map(|e| (e.ev_type, e.code, e.value)).collect()
}

fn tcv(records: &[u8]) -> Vec<Tcv> {
    InputEvent::parse_records(records).unwrap().iter().map(|e| (e.ev_type, e.code, e.value)).collect()
}

/// A python-evdev program on Debian's Python.
fn python(script: &str, args: &[&Path]) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c").arg(script).args(args);
    cmd
}

/// The `ioctl(2)` errno of a call that must fail.
fn errno(r: std::io::Result<i32>) -> i32 {
    match r {
        Ok(v) => panic!("the ioctl succeeded with {v}"),
        Err(e) => e.raw_os_error().unwrap(),
    }
}

/// The (pid, state, restarts) `ddmctl status --json` gives `driver`.
fn driver_status(ddm: &Ddm, driver: &str) -> (u64, String, u64) {
    let json = ddm.ddmctl_ok(&["status", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&json).unwrap();
    let d = all.as_array().unwrap().iter().find(|d| d["name"] == driver).unwrap();
    (d["pid"].as_u64().unwrap_or(0), d["state"].as_str().unwrap_or("").to_owned(), d["restarts"].as_u64().unwrap())
}

// ---------------------------------------------------------------------------
// Real programs

/// Shows what python-evdev makes of the node, then prints the events it
/// reads (until it has `argv[2]` of them).
const PY_READER: &str = r#"
import errno, select, sys
import evdev
from evdev import ecodes
d = evdev.InputDevice(sys.argv[1])
caps = d.capabilities()
print("name", d.name)
print("info", d.info.bustype, d.info.vendor, d.info.product, d.info.version)
print("phys", repr(d.phys), "uniq", repr(d.uniq), "version", hex(d.version))
print("types", caps[ecodes.EV_SYN])
print("keys", len(caps[ecodes.EV_KEY]), ecodes.KEY_A in caps[ecodes.EV_KEY], ecodes.KEY_102ND in caps[ecodes.EV_KEY])
print("state", d.active_keys(), d.leds(), tuple(d.repeat))
try:
    d.grab()
    print("grab ok")
except OSError as e:
    print("grab", errno.errorcode[e.errno])
print("ready", flush=True)
want, got = int(sys.argv[2]), 0
while got < want:
    r, _, _ = select.select([d.fd], [], [], 30)
    if not r:
        print("timed out", flush=True)
        break
    for e in d.read():
        got += 1
        print("event", e.type, e.code, e.value, e.sec, e.usec, flush=True)
"#;

/// The events a [`PY_READER`] printed (whole lines only: it may be in the
/// middle of one).
fn py_events(out: &str) -> Vec<(Tcv, (i64, i64))> {
    let whole = out.rfind('\n').map_or("", |end| &out[..end]);
    whole
        .lines()
        .filter_map(|l| l.strip_prefix("event "))
        .map(|l| {
            let f: Vec<i64> = l.split(' ').map(|w| w.parse().unwrap()).collect();
            ((f[0] as u16, f[1] as u16, f[2] as i32), (f[3], f[4]))
        })
        .collect()
}

#[test]
fn python_evdev_sees_the_keyboard_and_reads_what_is_typed() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let node = ddm.path(EVENT0);
    let want = typed("Hi");
    let py = Reader::start(python(PY_READER, &[&node, Path::new(&want.len().to_string())]), &node);
    assert!(py.wait_line("ready"), "python-evdev: {}", py.text());
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    type_keys(&ddm, &["Hi"]);
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let done = wait_until(DEADLINE, || py_events(&py.text()).len() == want.len());
    let (status, out) = if done {
        let mut py = py;
        let status = wait_deadline(&mut py.child, DEADLINE);
        (status, py.text())
    } else {
        (None, py.text())
    };
    assert!(status.is_some_and(|s| s.success()), "python-evdev ended with {status:?}:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "name ddf virtual keyboard", "{out}");
    assert_eq!(lines[1], format!("info {BUS_VIRTUAL} 0 1 1"), "{out}");
    // No uniq: EVIOCGUNIQ is ENOENT, which python-evdev shows as ''.
    assert_eq!(lines[2], "phys 'ddf/keyboard0' uniq '' version 0x10001", "{out}");
    // EV_SYN, EV_KEY, EV_REP; the keys of a US keyboard, A among them.
    assert_eq!(lines[3], "types [0, 1, 20]", "{out}");
    assert_eq!(lines[4], "keys 104 True False", "{out}");
    assert_eq!(lines[5], "state [] [] (250, 33)", "{out}");
    // What FUSE cannot carry (see the README): the grab fails in the kernel.
    assert_eq!(lines[6], "grab EFAULT", "{out}");
    let events = py_events(&out);
    let got: Vec<Tcv> = events.iter().map(|(e, _)| *e).collect();
    assert_eq!(got, want, "python-evdev read {out}");
    assert_eq!(got[0], (EV_KEY, KEY_LEFTSHIFT, 1));
    assert_eq!(got[1], (EV_SYN, SYN_REPORT, 0));
    // Wall-clock stamps (the default clock), from the typing.
    for (e, (sec, usec)) in &events {
        assert!((0..1_000_000).contains(usec), "{e:?}");
        assert!(*sec >= before.as_secs() as i64 - 1 && *sec <= after.as_secs() as i64 + 1, "{e:?} at {sec}");
    }
}

#[test]
fn evtest_prints_its_header_and_the_typed_keys_and_ends_on_ctrl_c() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let node = ddm.path(EVENT0);
    let mut cmd = Command::new("evtest");
    cmd.arg(&node);
    let evtest = Reader::start(cmd, &node);
    wait_blocked(&evtest, "Testing ... (interrupt to exit)");
    type_keys(&ddm, &["a"]);
    assert!(evtest.wait_line("code 30 (KEY_A), value 0"), "evtest printed:\n{}", evtest.text());
    std::thread::sleep(Duration::from_millis(200));
    // Ctrl-C's signal ends it, as on the kernel's nodes (evtest does not
    // catch it).
    let (status, out) = evtest.stop(libc::SIGINT);
    let out = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(status.signal(), Some(libc::SIGINT), "evtest ended with {status:?}:\n{out}");
    for line in [
        "Input driver version is 1.0.1",
        "Input device ID: bus 0x6 vendor 0x0 product 0x1 version 0x1",
        "Input device name: \"ddf virtual keyboard\"",
        "Supported events:",
        "  Event type 0 (EV_SYN)",
        "  Event type 1 (EV_KEY)",
        "    Event code 30 (KEY_A)",
        "    Event code 125 (KEY_LEFTMETA)",
        "  Repeat type 20 (EV_REP)",
        "    Repeat code 0 (REP_DELAY)",
        "      Value    250",
        "Properties:",
        // evtest's grab test fails (EFAULT, in the kernel: see the README),
        // which it reports as a grab by someone else; it reads on.
        "  This device is grabbed by another process.",
    ] {
        assert!(out.lines().any(|l| l == line), "no line {line:?} in evtest's output:\n{out}");
    }
    let events: Vec<&str> = out.lines().filter(|l| l.starts_with("Event: time ")).collect();
    assert_eq!(events.len(), 4, "{out}");
    assert!(events[0].ends_with(", type 1 (EV_KEY), code 30 (KEY_A), value 1"), "{out}");
    assert!(events[1].ends_with(", -------------- SYN_REPORT ------------"), "{out}");
    assert!(events[2].ends_with(", type 1 (EV_KEY), code 30 (KEY_A), value 0"), "{out}");
    assert!(events[3].ends_with(", -------------- SYN_REPORT ------------"), "{out}");
}

#[test]
fn ctrl_c_ends_evtest_in_a_terminal() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let node = ddm.path(EVENT0);
    let tmux = Tmux::start(ddm.dir.path(), "bash --norc --noprofile -i");
    let line = format!("evtest {}", node.display());
    assert!(tmux.cmd(&["send-keys", "-t", "kbd", "-l", &line]).status.success());
    assert!(tmux.cmd(&["send-keys", "-t", "kbd", "Enter"]).status.success());
    let testing = wait_until(DEADLINE, || tmux.screen().contains("Testing ... (interrupt to exit)"));
    assert!(testing, "evtest did not start in tmux:\n{}", tmux.screen());
    type_keys(&ddm, &["q"]);
    let shown = wait_until(DEADLINE, || tmux.screen().contains("code 16 (KEY_Q), value 0"));
    assert!(shown, "typed keys did not reach evtest in tmux:\n{}", tmux.screen());
    assert!(tmux.cmd(&["send-keys", "-t", "kbd", "C-c"]).status.success());
    let ended = wait_until(DEADLINE, || tmux.current_command() == "bash");
    assert!(ended, "Ctrl-C did not end evtest; the pane shows:\n{}", tmux.screen());
}

#[test]
fn libevdev_describes_the_keyboard() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let out = Command::new("evemu-describe").arg(ddm.path(EVENT0)).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "evemu-describe: {}{text}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "# Input device name: \"ddf virtual keyboard\"",
        "# Input device ID: bus 0x06 vendor 0000 product 0x01 version 0x01",
        "#     Event code 30 (KEY_A)",
        "#   Event type 20 (EV_REP)",
        "N: ddf virtual keyboard",
        "I: 0006 0000 0001 0001",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
}

// ---------------------------------------------------------------------------
// Readers, losses

#[test]
fn every_reader_gets_every_event_and_one_that_never_reads_gets_syn_dropped() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let node = ddm.path(EVENT0);
    // Opened first, never read until the end.
    let mut idle = open_nonblocking(&node);
    let first = typed("Hello, World!");
    let py = Reader::start(python(PY_READER, &[&node, Path::new(&first.len().to_string())]), &node);
    assert!(py.wait_line("ready"), "python-evdev: {}", py.text());
    let mut cmd = Command::new("evtest");
    cmd.arg(&node);
    let evtest = Reader::start(cmd, &node);
    assert!(evtest.wait_line("Testing ... (interrupt to exit)"));

    type_keys(&ddm, &["Hello, World!"]);
    let all_there = wait_until(DEADLINE, || py_events(&py.text()).len() == first.len());
    assert!(all_there, "python-evdev got {} of {} events:\n{}", py_events(&py.text()).len(), first.len(), py.text());
    assert_eq!(py_events(&py.text()).iter().map(|(e, _)| *e).collect::<Vec<_>>(), first);
    let key_lines =
        |out: &str| out.lines().filter(|l| l.starts_with("Event: time ") && l.contains("type 1 (EV_KEY)")).count();
    let keys = first.iter().filter(|e| e.0 == EV_KEY).count();
    assert!(wait_until(DEADLINE, || key_lines(&evtest.text()) == keys), "evtest:\n{}", evtest.text());
    let (_, out) = evtest.stop(libc::SIGINT);
    let reports = String::from_utf8_lossy(&out).lines().filter(|l| l.ends_with("SYN_REPORT ------------")).count();
    assert_eq!(reports, keys, "evtest saw every packet");
    drop(py);
    assert_eq!(counter(&ddm, "keyboard", "lost_events"), Some(0), "nobody lost anything yet");

    // More than the idle reader's 1024 events.
    let long = "abcdefghijklmnopqrstuvwxyz".repeat(12);
    let second = typed(&long);
    assert!(second.len() > 1024);
    type_keys(&ddm, &[&long]);
    let got = drain(&mut idle);
    assert_eq!((got[0].ev_type, got[0].code), (EV_SYN, SYN_DROPPED), "the first record tells of the loss");
    let got = tcv(&InputEvent::encode_records(&got[1..]));
    assert!(second.ends_with(&got), "after SYN_DROPPED come the newest events, in order");
    // Every event reached the reader or was counted lost.
    let lost = counter(&ddm, "keyboard", "lost_events").unwrap();
    assert!(lost > 0);
    assert_eq!(lost as usize + got.len(), first.len() + second.len());
    let table = ddm.ddmctl_ok(&["status"]);
    assert!(table.contains(&format!("lost_events={lost}")), "ddmctl status:\n{table}");
    // A reader that keeps up loses nothing more.
    type_keys(&ddm, &["ok"]);
    assert_eq!(tcv(&InputEvent::encode_records(&drain(&mut idle))), typed("ok"));
    assert_eq!(counter(&ddm, "keyboard", "lost_events"), Some(lost));
}

/// Non-blocking reads, select, a blocking read and SIGINT, with plain os
/// calls on the node.
const PY_WAITER: &str = r#"
import os, select, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
try:
    os.read(fd, 24 * 64)
    print("nonblocking-read: data", flush=True)
except BlockingIOError:
    print("nonblocking-read: EAGAIN", flush=True)
r, _, _ = select.select([fd], [], [], 0)
print("ready-before:", len(r), flush=True)
print("selecting", flush=True)
t = time.monotonic()
r, _, _ = select.select([fd], [], [], 30)
print("select-woke:", len(r), "after %.3f" % (time.monotonic() - t), flush=True)
data = os.read(fd, 24 * 64)
print("read:", [struct.unpack("qqHHi", data[i:i + 24])[2:] for i in range(0, len(data), 24)], flush=True)
blocking = os.open(sys.argv[1], os.O_RDONLY)
print("blocking", flush=True)
try:
    os.read(blocking, 24)
    print("read returned", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"#;

#[test]
fn nonblocking_reads_select_signals_and_timeout_work_as_on_the_text_node() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let node = ddm.path(EVENT0);
    let mut py = Reader::start(python(PY_WAITER, &[&node]), &node);
    wait_blocked(&py, "selecting");
    type_keys(&ddm, &["k"]);
    wait_blocked(&py, "blocking");
    // Ctrl-C's signal ends the blocking read.
    signal(&py.child, libc::SIGINT);
    let done = py.wait_line("interrupted");
    let out = py.text();
    if !done {
        let _ = py.child.kill();
        panic!("python: {out}\nstderr: {}", py.stderr());
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "nonblocking-read: EAGAIN", "{out}");
    assert_eq!(lines[1], "ready-before: 0", "readable with nothing typed: {out}");
    let waited: f64 =
        lines[3].strip_prefix("select-woke: 1 after ").unwrap_or_else(|| panic!("{out}")).parse().unwrap();
    assert!(waited >= 0.1, "select returned before the key was typed: {out}");
    assert_eq!(lines[4], "read: [(1, 37, 1), (0, 0, 0), (1, 37, 0), (0, 0, 0)]", "{out}");
    let status = wait_deadline(&mut py.child, DEADLINE);
    assert!(status.is_some_and(|s| s.success()), "python: {status:?}");

    // timeout(1) ends evtest (in select) and cat (in a parked read).
    for prog in ["evtest", "cat"] {
        let mut child = Command::new("timeout").arg("1").arg(prog).arg(&node).spawn().unwrap();
        let status = wait_timeout(&mut child, DEADLINE);
        let status = status.unwrap_or_else(|| panic!("`timeout 1 {prog}` still running after {DEADLINE:?}"));
        assert_eq!(status.code(), Some(124), "timeout 1 {prog} ended with {status:?}");
    }
}

// ---------------------------------------------------------------------------
// Ioctls

#[test]
fn ioctls_get_the_kernels_answers_and_the_driver_keeps_running() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let node = ddm.path(EVENT0);
    let (pid, _, _) = driver_status(&ddm, "keyboard");
    let f = File::open(&node).unwrap();
    let mut version = 0i32;
    assert_eq!(ioctl(&f, evio::EVIOCGVERSION, &mut version).unwrap(), 0);
    assert_eq!(version, 0x01_0001);
    let mut name = [0u8; 256];
    assert_eq!(ioctl(&f, evio::eviocgname(256), &mut name).unwrap(), 21);
    assert_eq!(&name[..21], b"ddf virtual keyboard\0");
    // Short buffers get what fits, and the return value says how much.
    let mut four = [0xffu8; 4];
    assert_eq!(ioctl(&f, evio::eviocgname(4), &mut four).unwrap(), 4);
    assert_eq!(&four, b"ddf ");
    assert_eq!(ioctl(&f, evio::eviocgbit(EV_KEY, 4), &mut four).unwrap(), 4);
    assert_eq!(four, [0xfe, 0xff, 0xff, 0xff], "Escape to KEY_S...");
    let mut one = [0u8; 1];
    assert_eq!(ioctl(&f, evio::eviocgbit(0, 1), &mut one).unwrap(), 1);
    assert_eq!(one, [0b11], "EV_SYN and EV_KEY");
    let mut phys = [0u8; 64];
    assert_eq!(ioctl(&f, evio::eviocgphys(64), &mut phys).unwrap(), 14);
    assert_eq!(errno(ioctl(&f, evio::eviocguniq(64), &mut phys)), libc::ENOENT, "no uniq");
    let mut rep = [0u32; 2];
    ioctl(&f, evio::EVIOCGREP, &mut rep).unwrap();
    assert_eq!(rep, [250, 33]);

    // A wrong size: no such command.
    let mut eight = [0u8; 8];
    assert_eq!(errno(ioctl(&f, evio::ioc(evio::DIR_READ, b'E', 0x01, 8), &mut eight)), libc::EINVAL);
    assert_eq!(errno(ioctl(&f, evio::ioc(evio::DIR_READ, b'E', 0x02, 4), &mut four)), libc::EINVAL);
    // Unknown commands: evdev's EINVAL, also for the text node's own
    // ioctls and a terminal's.
    assert_eq!(errno(ioctl(&f, evio::ioc(evio::DIR_READ, b'E', 0x10, 4), &mut four)), libc::EINVAL);
    assert_eq!(errno(ioctl(&f, keyboard::GET_MODE, &mut four)), libc::EINVAL);
    let mut termios = [0u8; 64];
    assert_eq!(errno(ioctl(&f, libc::TCGETS as u32, &mut termios)), libc::EINVAL);
    // Garbage arguments.
    let mut clock = 0x7fff_ffffi32;
    assert_eq!(errno(ioctl(&f, evio::EVIOCSCLOCKID, &mut clock)), libc::EINVAL);
    let mut junk = [0x5au8; 16]; // type 0x5a5a5a5a: no such type, nothing to do
    assert_eq!(ioctl(&f, evio::EVIOCSMASK, &mut junk).unwrap(), 0);
    let mut odd = InputMask { ev_type: u32::from(EV_KEY), codes_size: 7, codes_ptr: 1 }.to_bytes();
    assert_eq!(errno(ioctl(&f, evio::EVIOCSMASK, &mut odd)), libc::EINVAL);
    let mut huge = [u32::MAX, u32::MAX]; // negative values: ignored
    assert_eq!(ioctl(&f, evio::EVIOCSREP, &mut huge).unwrap(), 0);
    ioctl(&f, evio::EVIOCGREP, &mut rep).unwrap();
    assert_eq!(rep, [250, 33]);
    // SAFETY: a NULL argument; the kernel must not write through it.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), evio::eviocgname(256) as libc::c_ulong, std::ptr::null_mut::<u8>()) };
    assert_eq!((rc, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EFAULT)));
    // What FUSE does not carry: a number for an argument (EVIOCGRAB) fails
    // in the kernel; ENOSYS (force feedback) arrives as ENOTTY; EVIOCGMASK's
    // struct is not copied in.
    // SAFETY: EVIOCGRAB takes a number, which the kernel's FUSE treats as a
    // pointer to copy 4 bytes from; that copy fails, nothing is written.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), evio::EVIOCGRAB as libc::c_ulong, 1usize) };
    assert_eq!((rc, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EFAULT)));
    let mut effect = [0u8; evio::FF_EFFECT_SIZE];
    assert_eq!(errno(ioctl(&f, evio::EVIOCSFF, &mut effect)), libc::ENOTTY);
    let mut mask = InputMask { ev_type: u32::from(EV_KEY), codes_size: 96, codes_ptr: 0 }.to_bytes();
    assert_eq!(errno(ioctl(&f, evio::EVIOCGMASK, &mut mask)), libc::EINVAL);

    // The driver is the same process, still running, and still types.
    assert_eq!(driver_status(&ddm, "keyboard"), (pid, "running".to_owned(), 0));
    let mut r = open_nonblocking(&node);
    type_keys(&ddm, &["z"]);
    assert_eq!(tcv(&InputEvent::encode_records(&drain(&mut r))), typed("z"));
    assert_eq!(errno(ioctl(&f, evio::eviocguniq(64), &mut phys)), libc::ENOENT);
}

#[test]
fn the_clock_is_the_one_eviocsclockid_chose() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let node = ddm.path(EVENT0);
    let mut f = open_nonblocking(&node);
    let mut mono = libc::CLOCK_MONOTONIC;
    ioctl(&f, evio::EVIOCSCLOCKID, &mut mono).unwrap();
    let now = || {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec into `ts`.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec
    };
    let before = now();
    type_keys(&ddm, &["m"]);
    let after = now();
    let got = drain(&mut f);
    assert_eq!(got.len(), 4);
    for e in &got {
        assert!(e.sec >= before - 1 && e.sec <= after + 1, "{e:?} is not on CLOCK_MONOTONIC ({before}..{after})");
    }
    // A new clock with events queued discards them and queues SYN_DROPPED,
    // readable with the next packet.
    type_keys(&ddm, &["m"]);
    let mut real = libc::CLOCK_REALTIME;
    ioctl(&f, evio::EVIOCSCLOCKID, &mut real).unwrap();
    assert!(drain(&mut f).is_empty());
    type_keys(&ddm, &["n"]);
    let got = tcv(&InputEvent::encode_records(&drain(&mut f)));
    assert_eq!(got[0], (EV_SYN, SYN_DROPPED, 0));
    assert_eq!(&got[1..], typed("n"));
}

// ---------------------------------------------------------------------------
// Permissions, other keyboards, the direct path

#[test]
fn evdev_nodes_are_root_input_0640_and_each_driver_has_its_bus() {
    ddf_tests::needs_root!();
    let manifest = "name = \"slowkbd\"\nexec = \"ddf-keyboard\"\nautostart = true\n[params]\n\
                    source = \"virtual\"\nname = \"slow\"\ncount = \"2\"\n";
    let ddm = Ddm::builder().manifest(manifest).wait_for("input-slowkbd/event1").start();
    let input_gid = nix::unistd::Group::from_name("input").unwrap().map_or(0, |g| g.gid.as_raw());
    for rel in [EVENT0, "input-slowkbd/event0", "input-slowkbd/event1"] {
        let meta = std::fs::metadata(ddm.path(rel)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, input_gid, 0o640), "{rel}");
    }
    // Another user cannot read it (python-evdev says so).
    std::fs::set_permissions(ddm.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid", "4242", "--regid", "4242", "--clear-groups", PYTHON, "-c"])
        .arg("import evdev, sys; evdev.InputDevice(sys.argv[1])")
        .arg(ddm.path(EVENT0))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "as uid 4242: {err}");
    // Each keyboard's node is its own: typing into slow1 reaches event1 only.
    let mut e0 = open_nonblocking(&ddm.path("input-slowkbd/event0"));
    let mut e1 = open_nonblocking(&ddm.path("input-slowkbd/event1"));
    type_keys(&ddm, &["--device", "slow1", "b"]);
    assert!(drain(&mut e0).is_empty());
    assert_eq!(tcv(&InputEvent::encode_records(&drain(&mut e1))), typed("b"));
    let xattr = Command::new("getfattr")
        .args(["-n", "user.ddf.keyboard", "--only-values"])
        .arg(ddm.path("input-slowkbd/event1"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&xattr.stdout), "slow1");
}

#[test]
fn writing_events_to_a_virtual_keyboards_node_types_them() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let node = ddm.path(EVENT0);
    let cat = Reader::cat(&ddm.path("keyboard0"));
    let mut reader = open_nonblocking(&node);
    let mut w = std::fs::OpenOptions::new().write(true).open(&node).unwrap();
    let mut records = InputEvent::encode_records(&text_to_events("Yo").unwrap());
    records.extend_from_slice(&[1, 2, 3]); // a partial record is not taken
    let n = w.write(&records).unwrap();
    assert_eq!(n, records.len() - 3);
    assert_eq!(cat.wait_output(2), b"Yo");
    assert_eq!(tcv(&InputEvent::encode_records(&drain(&mut reader))), typed("Yo"));
    let e = w.write(&[0u8; 10]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "less than a record");
}

/// A driver reading the built-in keyboard through the library's client
/// proxy, with no FUSE between: what EVIOCGRAB and the masks need.
#[test]
fn the_direct_path_carries_grabs_and_masks() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let node = ddm.path(EVENT0);
    let file = File::open(&node).unwrap();
    let mut link = ddf::ddm::Ddm::connect(&ddm.socket).unwrap();
    let mut client = link.connect_device(&file).unwrap();
    let h = client.open(OpenFlags::READ).unwrap();
    // Only KEY_B of the keys (the codes follow struct input_mask).
    let mut set = InputMask { ev_type: u32::from(EV_KEY), codes_size: 96, codes_ptr: 0 }.to_bytes().to_vec();
    set.extend(Bits::with(KEY_MAX, [KEY_B]).to_user(KEY_MAX));
    assert_eq!(client.ioctl(h, evio::EVIOCSMASK, &set, &mut []).unwrap().0, 0);
    let mut codes = [0u8; 96];
    let get = InputMask { ev_type: u32::from(EV_KEY), codes_size: 96, codes_ptr: 0 }.to_bytes();
    client.ioctl(h, evio::EVIOCGMASK, &get, &mut codes).unwrap();
    assert_eq!(Bits::from_user(&codes, KEY_MAX).iter().collect::<Vec<_>>(), [KEY_B]);
    // A grab: nobody else gets events, the text node neither.
    assert_eq!(client.ioctl(h, evio::EVIOCGRAB, &1i32.to_ne_bytes(), &mut []).unwrap().0, 0);
    let mut other = open_nonblocking(&node);
    let cat = Reader::cat(&ddm.path("keyboard0"));
    type_keys(&ddm, &["ab"]);
    let mut buf = vec![0u8; 64 * EVENT_SIZE];
    let n = client.read(h, 0, &mut buf).unwrap();
    assert_eq!(
        tcv(&buf[..n]),
        [(EV_KEY, KEY_B, 1), (EV_SYN, SYN_REPORT, 0), (EV_KEY, KEY_B, 0), (EV_SYN, SYN_REPORT, 0)]
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(drain(&mut other).is_empty(), "a grabbed keyboard's other readers get nothing");
    assert!(cat.output().is_empty(), "cat got {:?} from a grabbed keyboard", cat.text());
    // A second grab is EBUSY; the grab ends and the others read again.
    let mut other_fd = ddf::ddm::Ddm::connect(&ddm.socket).unwrap().connect_device(&file).unwrap();
    let h2 = other_fd.open(OpenFlags::READ).unwrap();
    let busy = other_fd.ioctl(h2, evio::EVIOCGRAB, &1i32.to_ne_bytes(), &mut []);
    assert!(matches!(busy, Err(ddf::driver::ClientError::Errno(e)) if e.0 == libc::EBUSY), "{busy:?}");
    client.ioctl(h, evio::EVIOCGRAB, &0i32.to_ne_bytes(), &mut []).unwrap();
    type_keys(&ddm, &["x"]);
    assert_eq!(cat.wait_output(1), b"x");
    assert_eq!(tcv(&InputEvent::encode_records(&drain(&mut other))), typed("x"));
}

// ---------------------------------------------------------------------------
// Other sources

#[test]
fn an_i8042_keyboards_node_says_it_is_an_at_keyboard() {
    ddf_tests::needs_root!();
    let manifest = "name = \"ps2\"\nexec = \"ddf-keyboard\"\nautostart = true\n[params]\n\
                    source = \"i8042\"\nname = \"ps2kbd\"\nscancodes = \"1e 9e\"\n";
    let ddm = Ddm::builder().manifest(manifest).wait_for("input-ps2/event0").start();
    let node = ddm.path("input-ps2/event0");
    let mut f = open_nonblocking(&node);
    let mut id = [0u8; evio::InputId::SIZE];
    ioctl(&f, evio::EVIOCGID, &mut id).unwrap();
    let id = evio::InputId::from_bytes(&id);
    assert_eq!((id.bustype, id.vendor, id.product, id.version), (BUS_I8042, 1, 1, 0xab41));
    let mut name = [0u8; 64];
    let n = ioctl(&f, evio::eviocgname(64), &mut name).unwrap() as usize;
    assert_eq!(&name[..n], b"ddf emulated AT keyboard\0");
    // The controller sends its scancodes (A down, A up) at the first open
    // for reading; the poller decodes them.
    let mut got = Vec::new();
    wait_until(DEADLINE, || {
        got.extend(drain(&mut f));
        got.len() >= 4
    });
    assert_eq!(tcv(&InputEvent::encode_records(&got)), typed("a"));
}

#[test]
fn a_keyboard_read_through_evdev_mirrors_its_device() {
    ddf_tests::needs_root!();
    // The real keyboard of this test is another ddm's virtual one.
    let source = Ddm::start();
    let source_node = source.path(EVENT0);
    let mut held = std::fs::OpenOptions::new().write(true).open(source.path("keyboard0")).unwrap();
    held.write_all(&InputEvent::key(KEY_LEFTSHIFT, KeyAction::Press).to_bytes()).unwrap();
    let manifest = format!(
        "name = \"mirror\"\nexec = \"ddf-keyboard\"\nautostart = true\n[params]\n\
         source = \"evdev\"\ndevices = \"{}\"\ninput_bus = \"input\"\n[sandbox]\nread = [\"{}\"]\n",
        source_node.display(),
        source.mnt.display()
    );
    let mirror = Ddm::builder().args(&["--no-builtin"]).manifest(&manifest).wait_for(EVENT0).start();
    let node = mirror.path(EVENT0);
    // libevdev sees the same device on both.
    let describe = |p: &Path| {
        let out = Command::new("evemu-describe").arg(p).output().unwrap();
        assert!(out.status.success(), "evemu-describe {}", p.display());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("# EVEMU"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(describe(&node), describe(&source_node));
    // Its state too: Left Shift is down.
    let f = File::open(&node).unwrap();
    let mut keys = [0u8; 96];
    ioctl(&f, evio::eviocgkey(96), &mut keys).unwrap();
    assert_eq!(Bits::from_user(&keys, KEY_MAX).iter().collect::<Vec<_>>(), [KEY_LEFTSHIFT]);
    let mut bits = [0u8; 8];
    ioctl(&f, evio::eviocgbit(0, 8), &mut bits).unwrap();
    assert_eq!(Bits::from_user(&bits, EV_MAX).iter().collect::<Vec<_>>(), [EV_SYN, EV_KEY, ddf::input::EV_REP]);

    // What is typed on the source arrives on both of the mirror's nodes;
    // the text node types with the Shift that was down at its start.
    let cat = Reader::cat(&mirror.path("keyboard0"));
    let mut events = open_nonblocking(&node);
    type_keys(&source, &["x"]);
    assert_eq!(cat.wait_output(1), b"X");
    let mut got = Vec::new();
    wait_until(DEADLINE, || {
        got.extend(drain(&mut events));
        got.len() >= 4
    });
    assert_eq!(
        tcv(&InputEvent::encode_records(&got)),
        [(EV_KEY, KEY_X, 1), (EV_SYN, SYN_REPORT, 0), (EV_KEY, KEY_X, 0), (EV_SYN, SYN_REPORT, 0)]
    );
}
