//! The keyboard driver end to end (issue 3): a real ddm, a real mount, the
//! virtual keyboard typed into with `ddmctl type`, and real readers: `cat`,
//! Python in `select`, `timeout`, a shell in a tmux terminal.
//!
//! Every reader is started, and seen to have the device open, before
//! anything is typed: a handle only gets keys typed after it was opened.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ddf::input::keyboard::{Stats, GET_MODE, GET_STATS, MODE_RAW, SET_MODE};
use ddf::input::{InputEvent, KeyAction, EVENT_SIZE, EV_KEY, KEY_H, KEY_LEFTSHIFT, KEY_Y, KEY_Z};
use ddf_tests::clients::{
    counter, drain, has_open, ioctl, open_nonblocking, proc_state, read_once, signal, type_keys, wait_blocked,
    wait_deadline, Reader, Tmux, DEADLINE,
};
use ddf_tests::{bin, is_mounted, wait_timeout, wait_until, Ddm};

const HELLO: &[u8] = b"Hello, World!\n";

/// A second keyboard driver: one virtual keyboard `slow0` whose handles
/// hold 32 bytes.
const SMALL_BUFFER_MANIFEST: &str = r#"
name = "slowkbd"
exec = "ddf-keyboard"
autostart = true
[params]
source = "virtual"
name = "slow"
buffer = "32"
"#;

/// A virtual keyboard `de0` with the German layout.
const GERMAN_MANIFEST: &str = r#"
name = "dekbd"
exec = "ddf-keyboard"
autostart = true
[params]
source = "virtual"
name = "de"
layout = "de"
"#;

/// "Hello, World!\n" in scancode set 1, make and break codes: Left Shift
/// (2a/aa) for H and !, Right Shift (36/b6) for W.
const HELLO_SCANCODES: &str = concat!(
    "2a 23 a3 aa ", // H
    "12 92 ",       // e
    "26 a6 26 a6 ", // l l
    "18 98 ",       // o
    "33 b3 ",       // ,
    "39 b9 ",       // space
    "36 11 91 b6 ", // W
    "18 98 ",       // o
    "13 93 ",       // r
    "26 a6 ",       // l
    "20 a0 ",       // d
    "2a 02 82 aa ", // !
    "1c 9c",        // Enter
);

// ---------------------------------------------------------------------------
// Helpers (the others are in ddf_tests::clients)

fn stats(f: &File) -> Stats {
    let mut raw = [0u8; Stats::SIZE];
    ioctl(f, GET_STATS, &mut raw).unwrap();
    Stats::from_bytes(&raw)
}

fn lost_bytes(ddm: &Ddm, driver: &str) -> Option<u64> {
    counter(ddm, driver, "lost_bytes")
}

// ---------------------------------------------------------------------------
// Typed text reaches readers

#[test]
fn cat_prints_exactly_what_is_typed() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let kbd = ddm.path("keyboard0");
    let cat = Reader::cat(&kbd);
    type_keys(&ddm, &["--enter", "Hello,", "World!"]);
    let got = cat.wait_output(HELLO.len());
    assert_eq!(got, HELLO, "cat printed {:?}", String::from_utf8_lossy(&got));
    // Nothing more comes, and SIGINT ends the blocked cat.
    std::thread::sleep(Duration::from_millis(200));
    let (status, all) = cat.stop(libc::SIGINT);
    assert_eq!(all, HELLO, "cat printed more: {:?}", String::from_utf8_lossy(&all));
    assert!(!status.success(), "cat ended with {status:?}");
}

#[test]
fn two_readers_get_every_key_and_a_late_reader_only_later_ones() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let kbd = ddm.path("keyboard0");
    let a = Reader::cat(&kbd);
    let b = Reader::cat(&kbd);
    // With escapes, this time.
    type_keys(&ddm, &["--escapes", r"Hello, World!\n"]);
    assert_eq!(a.wait_output(HELLO.len()), HELLO);
    assert_eq!(b.wait_output(HELLO.len()), HELLO);

    // Opened after the typing: nothing pending for it.
    let mut late_fd = open_nonblocking(&kbd);
    let e = read_once(&mut late_fd, 100).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "a late handle had keys: {e}");
    let late = Reader::cat(&kbd);
    // From standard input, this time.
    let mut child = Command::new(bin("ddmctl"))
        .arg("--socket")
        .arg(&ddm.socket)
        .args(["type", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"late\n").unwrap();
    assert!(wait_timeout(&mut child, DEADLINE).is_some_and(|s| s.success()), "ddmctl type - failed");

    let want_all = [HELLO, b"late\n"].concat();
    assert_eq!(late.wait_output(5), b"late\n");
    assert_eq!(read_once(&mut late_fd, 100).unwrap(), b"late\n");
    assert_eq!(a.wait_output(want_all.len()), want_all);
    assert_eq!(b.wait_output(want_all.len()), want_all);
    std::thread::sleep(Duration::from_millis(200));
    for r in [a, b] {
        assert_eq!(r.stop(libc::SIGTERM).1, want_all);
    }
    assert_eq!(late.stop(libc::SIGTERM).1, b"late\n", "the late reader got earlier keys");
}

#[test]
fn a_long_text_from_stdin_arrives_whole_and_in_order() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let cat = Reader::cat(&ddm.path("keyboard0"));
    // Every printable ASCII character, Tab and Enter, 40 times: 3880 bytes
    // (under the 4096-byte buffer, so even a slow cat loses nothing), in
    // about 200 writes of at most 170 key events each.
    let line: String = (0x20u8..0x7f).map(char::from).chain(['\t', '\n']).collect();
    let text = line.repeat(40);
    let mut child = Command::new(bin("ddmctl"))
        .arg("--socket")
        .arg(&ddm.socket)
        .args(["type", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let status = wait_timeout(&mut child, DEADLINE);
    assert!(status.is_some_and(|s| s.success()), "ddmctl type - : {status:?}");
    let got = cat.wait_output(text.len());
    assert_eq!(got.len(), text.len());
    assert!(
        got == text.as_bytes(),
        "cat printed something else (first difference at byte {:?})",
        got.iter().zip(text.as_bytes()).position(|(a, b)| a != b)
    );
}

#[test]
fn ddmctl_type_says_what_is_wrong() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    // Outside ASCII: refused, nothing typed.
    let out = ddm.ddmctl(&["type", "caf\u{e9}"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be typed"), "{err}");
    // No such device.
    let out = ddm.ddmctl(&["type", "--device", "keyboard7", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keyboard7") && err.contains("does not exist"), "{err}");
    // A user who may not write the keyboard (root:input 0640) is told why.
    std::fs::set_permissions(ddm.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid", "4242", "--regid", "4242", "--clear-groups"])
        .arg(bin("ddmctl"))
        .arg("--socket")
        .arg(&ddm.socket)
        .args(["type", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typing needs write access to") && err.contains("keyboard0"), "as uid 4242: {err}");
}

#[test]
fn cat_shows_what_is_typed_with_the_german_layout() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(GERMAN_MANIFEST).wait_for("de0").start();
    let kbd = ddm.path("de0");
    let cat = Reader::cat(&kbd);
    let text = "Grüße aus Köln: Straße, Café, 3 € @home {[]} \\ | ~ <> ^ ° yz";
    type_keys(&ddm, &["--device", "de0", "--enter", text]);
    let want = format!("{text}\n");
    let got = cat.wait_output(want.len());
    assert_eq!(String::from_utf8_lossy(&got), want);
    // The keys typed are a German keyboard's: y is the key a US keyboard
    // calls Z, and the evdev node reports the keys.
    let mut events = open_nonblocking(&ddm.path("input-dekbd/event0"));
    type_keys(&ddm, &["--device", "de0", "yz"]);
    let keys: Vec<(u16, i32)> =
        drain(&mut events).iter().filter(|e| e.ev_type == EV_KEY).map(|e| (e.code, e.value)).collect();
    assert_eq!(keys, [(KEY_Z, 1), (KEY_Z, 0), (KEY_Y, 1), (KEY_Y, 0)]);
    assert_eq!(cat.wait_output(want.len() + 2), format!("{want}yz").as_bytes());
    // What a German keyboard cannot type is refused, naming the layout.
    let out = ddm.ddmctl(&["type", "--device", "de0", "ñ"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be typed on a German keyboard"), "{err}");
    // The built-in keyboard still types US.
    let us = Reader::cat(&ddm.path("keyboard0"));
    type_keys(&ddm, &["yz"]);
    assert_eq!(us.wait_output(2), b"yz");
}

// ---------------------------------------------------------------------------
// Blocking, signals, poll

#[test]
fn timeout_ends_a_blocked_cat_with_124() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let mut child =
        Command::new("timeout").arg("1").arg("cat").arg(ddm.path("keyboard0")).stdout(Stdio::piped()).spawn().unwrap();
    let status = wait_timeout(&mut child, DEADLINE);
    let status = status.unwrap_or_else(|| panic!("`timeout 1 cat` still running after {DEADLINE:?}"));
    assert_eq!(status.code(), Some(124), "timeout 1 cat ended with {status:?}");
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert!(out.is_empty(), "nothing was typed, cat printed {out:?}");
}

const SELECT_READER: &str = r#"
import os, select, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
try:
    os.read(fd, 100)
    print("nonblocking-read: data", flush=True)
except BlockingIOError:
    print("nonblocking-read: EAGAIN", flush=True)
r, _, _ = select.select([fd], [], [], 0)
print("ready-before:", len(r), flush=True)
print("selecting", flush=True)
t = time.monotonic()
r, _, _ = select.select([fd], [], [], 30)
print("select-woke:", len(r), "after %.3f" % (time.monotonic() - t), flush=True)
print("read:", os.read(fd, 100), flush=True)
p = select.poll()
p.register(fd, select.POLLIN)
print("polling", flush=True)
ev = p.poll(30000)
print("poll-woke:", ev == [(fd, select.POLLIN)], flush=True)
print("read:", os.read(fd, 100), flush=True)
"#;

#[test]
fn select_and_poll_wake_when_a_key_is_typed() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let kbd = ddm.path("keyboard0");
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(SELECT_READER).arg(&kbd);
    let mut py = Reader::start(cmd, &kbd);

    wait_blocked(&py, "selecting");
    type_keys(&ddm, &["k"]);
    wait_blocked(&py, "polling");
    type_keys(&ddm, &["K"]);
    let done = py.wait_line("read: b'K'");
    let out = String::from_utf8_lossy(&py.output()).into_owned();
    assert!(done, "python reader: {out}\nstderr: {}", py.stderr());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "nonblocking-read: EAGAIN", "{out}");
    assert_eq!(lines[1], "ready-before: 0", "readable with nothing typed: {out}");
    let woke = lines[3].strip_prefix("select-woke: 1 after ").unwrap_or_else(|| panic!("{out}"));
    let waited: f64 = woke.parse().unwrap();
    assert!(waited >= 0.1, "select returned before the key was typed: {out}");
    assert_eq!(lines[4], "read: b'k'", "{out}");
    assert_eq!(lines[6], "poll-woke: True", "{out}");
    assert_eq!(lines[7], "read: b'K'", "{out}");
    let status = wait_deadline(&mut py.child, DEADLINE);
    assert!(status.is_some_and(|s| s.success()), "python reader: {status:?}");
}

// ---------------------------------------------------------------------------
// Sources, buffers, modes

#[test]
fn i8042_on_emulated_ports_decodes_scancodes() {
    ddf_tests::needs_root!();
    let manifest = format!(
        "name = \"ps2\"\nexec = \"ddf-keyboard\"\nautostart = true\n[params]\n\
         source = \"i8042\"\nname = \"ps2kbd\"\nscancodes = \"{HELLO_SCANCODES}\"\n"
    );
    let ddm = Ddm::builder().manifest(&manifest).wait_for("ps2kbd0").start();
    let kbd = ddm.path("ps2kbd0");
    // The controller sends the scancodes when the device is first opened
    // for reading.
    let cat = Reader::cat(&kbd);
    let got = cat.wait_output(HELLO.len());
    assert_eq!(got, HELLO, "decoded {:?}", String::from_utf8_lossy(&got));
    // Writes feed the controller more scancodes: Shift-a, Enter.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&kbd)
        .unwrap()
        .write_all(&[0x2a, 0x1e, 0x9e, 0xaa, 0x1c, 0x9c])
        .unwrap();
    let want = [HELLO, b"A\n"].concat();
    assert_eq!(cat.wait_output(want.len()), want);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cat.stop(libc::SIGTERM).1, want);
    // The built-in virtual keyboard is untouched by all this.
    assert!(ddm.path("keyboard0").exists());
}

#[test]
fn a_bad_parameter_stops_the_start_and_the_log_names_it() {
    ddf_tests::needs_root!();
    let manifest = "name = \"badkbd\"\nexec = \"ddf-keyboard\"\nautostart = true\n[params]\n\
                    source = \"virtual\"\nname = \"bad\"\ncount = \"0\"\n";
    let ddm = Ddm::builder().manifest(manifest).wait_for("keyboard0").start();
    let said = "ERROR badkbd] driver badkbd failed to start: \
                parameters of badkbd: count = \"0\": expected a number from 1 to 64";
    assert!(wait_until(DEADLINE, || ddm.log().contains(said)), "not logged: {said}\n{}", ddm.log());
    assert!(!ddm.path("bad0").exists());
    // Refusing to start is no crash: ddm does not restart it in a loop but
    // takes it out at once, and says why where one looks.
    let bad = ddm.driver("badkbd");
    assert_eq!(bad["state"], "failed", "{bad}");
    assert_eq!(bad["restarts"], 0, "{bad}\n{}", ddm.log());
    let exit = bad["last_exit"].as_str().unwrap_or_default().to_owned();
    assert!(
        exit.starts_with("refused to start: driver badkbd failed to start: parameters of badkbd: count = \"0\""),
        "{exit}"
    );
    // A key the keyboard does not know, from the command line, is named too,
    // and `ddmctl load` fails with it.
    let out = ddm.ddmctl(&["load", "keyboard", "colour=red", "name=other"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("did not start: failed, refused to start"), "{err}");
    assert!(err.contains("colour = \"red\": unknown field `colour`"), "{err}");
    assert!(ddm.log().contains("colour = \"red\": unknown field `colour`"), "{}", ddm.log());
    assert!(!ddm.path("other0").exists());
    // The built-in keyboard is untouched by all this.
    assert_eq!(ddm.driver("keyboard")["state"], "running");
    assert!(ddm.path("keyboard0").exists());
}

#[test]
fn a_slow_reader_loses_its_oldest_bytes_and_the_loss_is_counted() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(SMALL_BUFFER_MANIFEST).wait_for("slow0").start();
    let slow = ddm.path("slow0");
    assert_eq!(lost_bytes(&ddm, "slowkbd"), Some(0), "the counter is there from the start");
    let mut f = open_nonblocking(&slow);
    let text = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN"; // 50 bytes
    type_keys(&ddm, &["--device", "slow0", text]);

    let s = stats(&f);
    assert_eq!((s.lost, s.lost_device, s.lost_driver, s.pending), (18, 18, 18, 32), "{s:?}");
    // The newest 32 bytes are there, the oldest 18 gone.
    assert_eq!(read_once(&mut f, 100).unwrap(), &text.as_bytes()[18..]);
    assert_eq!(stats(&f).pending, 0);
    // The driver reported it; `ddmctl status` shows it.
    assert_eq!(lost_bytes(&ddm, "slowkbd"), Some(18));
    let table = ddm.ddmctl_ok(&["status"]);
    assert!(table.contains("lost_bytes=18"), "ddmctl status:\n{table}");
    // The other keyboard driver lost nothing.
    assert_eq!(lost_bytes(&ddm, "keyboard"), Some(0));

    // A reader that keeps up loses nothing more.
    let mut i = 0;
    while i < text.len() {
        let piece = &text[i..(i + 10).min(text.len())];
        type_keys(&ddm, &["--device", "slow0", piece]);
        assert_eq!(read_once(&mut f, 100).unwrap(), piece.as_bytes());
        i += 10;
    }
    assert_eq!(stats(&f).lost, 18);
    assert_eq!(lost_bytes(&ddm, "slowkbd"), Some(18));
}

#[test]
fn raw_mode_gives_whole_key_event_records() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let mut f = open_nonblocking(&ddm.path("keyboard0"));
    let mut mode = MODE_RAW;
    ioctl(&f, SET_MODE, &mut mode).unwrap();
    let mut got = 99u32;
    ioctl(&f, GET_MODE, &mut got).unwrap();
    assert_eq!(got, MODE_RAW);

    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    type_keys(&ddm, &["H"]);
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();

    // Shorter than one record: EINVAL, and nothing is consumed.
    let e = read_once(&mut f, EVENT_SIZE - 1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    // 50 bytes take two whole records.
    let first = read_once(&mut f, 50).unwrap();
    assert_eq!(first.len(), 2 * EVENT_SIZE);
    let rest = read_once(&mut f, 4096).unwrap();
    assert_eq!(rest.len() % EVENT_SIZE, 0, "{} bytes", rest.len());
    let events = InputEvent::parse_records(&[first, rest].concat()).unwrap();

    let keys: Vec<(u16, u16, KeyAction)> = events
        .iter()
        .map(|e| {
            let (code, action) = e.key_action().unwrap_or_else(|| panic!("not a key event: {e:?}"));
            (e.ev_type, code, action)
        })
        .collect();
    assert_eq!(
        keys,
        [
            (EV_KEY, KEY_LEFTSHIFT, KeyAction::Press),
            (EV_KEY, KEY_H, KeyAction::Press),
            (EV_KEY, KEY_H, KeyAction::Release),
            (EV_KEY, KEY_LEFTSHIFT, KeyAction::Release),
        ]
    );
    // Stamped on arrival: between the start and the end of the typing
    // (with a second of slack for the clock's granularity), in order.
    let mut last = (0i64, 0i64);
    for e in &events {
        let t = (e.sec, e.usec);
        assert!((0..1_000_000).contains(&e.usec), "{e:?}");
        assert!(e.sec >= before.as_secs() as i64 - 1 && e.sec <= after.as_secs() as i64 + 1, "{e:?}");
        assert!(t >= last, "time went back: {e:?}");
        last = t;
    }
    // Nothing else pending.
    let e = read_once(&mut f, 4096).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
}

// ---------------------------------------------------------------------------
// Terminals, closing, unmounting

#[test]
fn ctrl_c_ends_cat_in_a_terminal() {
    ddf_tests::needs_root!();
    let ddm = Ddm::start();
    let kbd = ddm.path("keyboard0");
    // An interactive shell with job control, as in a terminal: cat runs in
    // its own foreground process group, and Ctrl-C signals that group.
    let tmux = Tmux::start(ddm.dir.path(), "bash --norc --noprofile -i");
    let line = format!("cat {}", kbd.display());
    assert!(tmux.cmd(&["send-keys", "-t", "kbd", "-l", &line]).status.success());
    assert!(tmux.cmd(&["send-keys", "-t", "kbd", "Enter"]).status.success());
    assert!(
        wait_until(DEADLINE, || tmux.current_command() == "cat"),
        "cat did not start in tmux: {:?}\n{}",
        tmux.current_command(),
        tmux.screen()
    );
    // The pane's shell runs cat; wait until cat has the keyboard open,
    // then show that it is live: typed keys appear in the terminal.
    let shell = tmux.cmd(&["list-panes", "-t", "kbd", "-F", "#{pane_pid}"]);
    let shell = String::from_utf8_lossy(&shell.stdout).trim().to_owned();
    let cat_open = wait_until(DEADLINE, || {
        std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .any(|pid| has_open(pid, &kbd))
    });
    assert!(cat_open, "cat in tmux did not open {}", kbd.display());
    type_keys(&ddm, &["ping"]);
    let shown = wait_until(DEADLINE, || tmux.screen().contains("ping"));
    assert!(shown, "typed keys did not reach cat in tmux:\n{}", tmux.screen());

    // Ctrl-Z stops the blocked cat, fg resumes it, and it reads on.
    assert!(tmux.cmd(&["send-keys", "-t", "kbd", "C-z"]).status.success());
    let stopped = wait_until(DEADLINE, || tmux.current_command() == "bash" && tmux.screen().contains("Stopped"));
    assert!(stopped, "Ctrl-Z did not stop cat; the pane shows:\n{}", tmux.screen());
    assert!(tmux.cmd(&["send-keys", "-t", "kbd", "-l", "fg"]).status.success());
    assert!(tmux.cmd(&["send-keys", "-t", "kbd", "Enter"]).status.success());
    assert!(wait_until(DEADLINE, || tmux.current_command() == "cat"), "fg: {}", tmux.screen());
    type_keys(&ddm, &["pong"]);
    let shown = wait_until(DEADLINE, || tmux.screen().contains("pong"));
    assert!(shown, "cat read nothing after fg; the pane shows:\n{}", tmux.screen());

    let out = tmux.cmd(&["send-keys", "-t", "kbd", "C-c"]);
    assert!(out.status.success());
    let ended = wait_until(DEADLINE, || tmux.current_command() == "bash");
    assert!(ended, "Ctrl-C did not end cat; the pane shows:\n{}", tmux.screen());
    // It died of SIGINT (128 + 2), as cat on any terminal device does.
    assert!(tmux.cmd(&["send-keys", "-t", "kbd", "-l", "echo done-$?"]).status.success());
    assert!(tmux.cmd(&["send-keys", "-t", "kbd", "Enter"]).status.success());
    let said = wait_until(DEADLINE, || tmux.screen().contains("\ndone-130"));
    assert!(said, "cat did not die of SIGINT; the pane shows:\n{}", tmux.screen());
}

/// Closing a handle with a parked read: on Linux a `close(2)` from another
/// thread does not release a file while a `read` on it is in flight (the
/// read holds a reference), so FUSE sends no RELEASE then. The way a file
/// with a parked read gets closed is its process dying; SIGKILL is the
/// hard case. (The driver ending parked reads of a closed handle with
/// `EBADF` is a unit test of `hub.rs`.)
#[test]
fn a_reader_killed_in_a_parked_read_ends_and_its_handle_is_closed() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder()
        .manifest(SMALL_BUFFER_MANIFEST)
        .env("RUST_LOG", "info,fuser=warn,ddf_keyboard::hub=debug")
        .wait_for("slow0")
        .start();
    let slow = ddm.path("slow0");
    let mut cat = Reader::cat(&slow);
    let pid = cat.child.id();
    assert!(wait_until(DEADLINE, || proc_state(pid) == Some('S')));
    std::thread::sleep(Duration::from_millis(200));

    // SIGKILL cannot be caught: only the DDM answering the parked read
    // lets the process die (the kernel waits for that answer).
    signal(&cat.child, libc::SIGKILL);
    let status = wait_deadline(&mut cat.child, DEADLINE);
    assert!(status.is_some(), "cat is stuck (state {:?}) after SIGKILL", proc_state(pid));
    // Its handle reaches the driver's close.
    let closed = wait_until(DEADLINE, || ddm.log().contains("slow0: handle 1 closed"));
    assert!(closed, "the killed reader's handle was not closed; log:\n{}", ddm.log());

    // A closed handle receives no keys, so it loses none: typing more than
    // its 32 bytes loses nothing anywhere.
    let mut f = open_nonblocking(&slow);
    type_keys(&ddm, &["--device", "slow0", "0123456789abcdefghij"]);
    assert_eq!(read_once(&mut f, 100).unwrap(), b"0123456789abcdefghij");
    type_keys(&ddm, &["--device", "slow0", "klmnopqrstuvwxyz"]);
    assert_eq!(read_once(&mut f, 100).unwrap(), b"klmnopqrstuvwxyz");
    assert_eq!(stats(&f).lost_driver, 0, "a dead handle still took keys");
}

#[test]
fn stopping_ddm_with_a_blocked_reader_does_not_hang() {
    ddf_tests::needs_root!();
    let mut ddm = Ddm::start();
    let kbd = ddm.path("keyboard0");
    let mut cat = Reader::cat(&kbd);
    let pid = cat.child.id();
    assert!(wait_until(DEADLINE, || proc_state(pid) == Some('S')));
    std::thread::sleep(Duration::from_millis(200));

    let status = ddm.stop();
    let status = status.unwrap_or_else(|| panic!("ddm did not stop with a blocked reader; log:\n{}", ddm.log()));
    assert!(status.success(), "ddm exited with {status:?}; log:\n{}", ddm.log());
    assert!(!is_mounted(&ddm.mnt), "the mount is still there");
    let ended = wait_deadline(&mut cat.child, DEADLINE);
    let ended = ended.unwrap_or_else(|| panic!("the reader is stuck (state {:?})", proc_state(pid)));
    assert!(!ended.success(), "cat got no error from a vanished device: {ended:?}");
    let err = cat.stderr();
    assert!(!err.is_empty(), "cat said nothing");
}

/// The i8042 test's fixture is what it claims: hex bytes, every make code
/// with one break code.
#[test]
fn scancode_fixture_is_hex_pairs() {
    let bytes: Vec<&str> = HELLO_SCANCODES.split(' ').collect();
    assert!(bytes.iter().all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok()));
    // Each make code has its break code (make | 0x80).
    let codes: Vec<u8> = bytes.iter().map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    let makes = codes.iter().filter(|c| **c < 0x80).count();
    assert_eq!(makes * 2, codes.len());
}
