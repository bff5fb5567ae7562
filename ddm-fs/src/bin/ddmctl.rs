//! `ddmctl`: the administrator's command line for ddf's device driver
//! manager. A thin client of libDDM ([`ddf::ddm`]); see ddmctl(8).
//!
//! `ddmctl type` is the one command that goes through the mount rather than
//! the control socket: it asks ddm where the device tree is mounted, opens
//! a virtual keyboard's file (so that the file's permissions decide who may
//! type), asks the keyboard its layout ([`ddf::input::keyboard::layout_of`]),
//! turns the text into the key events of that layout
//! ([`ddf::input::Layout::text_to_events`]) and writes them.
//!
//! `ddmctl completions SHELL` needs no ddm: it prints the completion script
//! that clap_complete makes from this command line's definition.
//!
//! Exit status ([`Exit`]): 0 success, 1 a failure of another kind, 2 a usage
//! error, 3 ddm not reachable, 4 permission denied, 5 not found. They are
//! documented in ddmctl(8) and stable: scripts may rely on them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use ddf::ddm::{Ddm, DdmError};
use ddf::input::{keyboard, InputError, InputEvent, EVENT_SIZE};
use ddf::proto::{DriverStatus, Fault, Happened, MonitorEvent, NodeDetail, NodeInfo};
use serde_json::{json, Value};

/// Key event records per `write(2)` at most: 170 × 24 = 4080 bytes, under
/// FUSE's smallest `max_write` (4 KiB), so the kernel never splits a write
/// inside a record (the keyboard driver refuses partial records).
const RECORDS_PER_WRITE: usize = 170;
const _: () = assert!(RECORDS_PER_WRITE * EVENT_SIZE <= 4096);

/// Manage the ddf device driver manager.
#[derive(Debug, Parser)]
#[command(name = "ddmctl", version, about, long_about = None)]
struct Args {
    /// ddm's control socket.
    #[arg(long, global = true, value_name = "PATH", env = "DDF_SOCKET", default_value = ddf::ddm::DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,

    /// Print JSON instead of a table (for scripts).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the device tree: every bus and device with its driver, pid and state.
    Tree,
    /// Show every driver: pid, state, requests served, errors, restarts.
    Status,
    /// Show where ddm is mounted, its version and pid.
    Info,
    /// Show one node's whole story: path, class, driver, pid, state, bus
    /// address and identifiers, owner, group, mode, ACL, restarts, last
    /// exit, why it is unbound.
    Node {
        /// The node: a path below the mount (vbus/ctl, /ddf/zero, pci/0000:00:03.0).
        node: String,
    },
    /// Print what happens, as it happens: devices added, removed, bound and
    /// unbound; drivers started, ready, died, restarted, quarantined;
    /// permissions changed. One line per event; with --json, JSON Lines.
    /// Ctrl-C ends it.
    Monitor,
    /// Print a completion script for a shell (bash, zsh or fish).
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Restart a driver now; also takes it out of the failed state (root or admin group).
    Restart {
        /// Driver name (see `ddmctl status`).
        driver: String,
    },
    /// Make a driver misbehave on purpose, to test supervision (root or admin group).
    ///
    /// FAULT is one of: panic, abort, segv, hang, garbage, flood, stray-reply,
    /// ring-garbage, ring-stray, ring-overlong, ring-death, forbidden-syscall, exit, exit:CODE.
    Inject {
        /// Driver name.
        driver: String,
        /// The fault.
        fault: String,
    },
    /// Type text into a virtual keyboard, with the keyboard's layout (US unless its manifest says otherwise).
    ///
    /// The words are joined with spaces. Needs write access to the device
    /// file (root, by default).
    Type {
        /// The keyboard: a device below the mount point (or an absolute path).
        #[arg(long, value_name = "NAME", default_value = "keyboard0")]
        device: String,
        /// Press Enter after the text.
        #[arg(short = 'n', long)]
        enter: bool,
        /// Interpret backslash escapes: \n \t \b (Backspace) \e (Escape) \\ \xHH.
        #[arg(short = 'e', long)]
        escapes: bool,
        /// The text; a single `-` reads it from standard input, as it is.
        #[arg(value_name = "TEXT", required = true)]
        text: Vec<String>,
    },
    /// Search the tree: the nodes that match every filter given.
    Find {
        /// On this kind of bus (pci, vbus) or this bus path.
        #[arg(long)]
        bus: Option<String>,
        /// Of this class: char, block, or bus.
        #[arg(long)]
        class: Option<String>,
        /// Whose name matches this glob (quote it: 'key*').
        #[arg(long)]
        name: Option<String>,
        /// Served by a driver whose name matches this glob.
        #[arg(long)]
        driver: Option<String>,
        /// In this state: running, restarting, failed, stopped, unbound, ...
        #[arg(long)]
        state: Option<String>,
    },
    /// Start a new instance of a known driver (root or admin group).
    Load {
        /// Driver name (its manifest's).
        driver: String,
        /// Put its devices on this bus (a path below the mount) instead of the null bus.
        #[arg(long, value_name = "BUS")]
        bus: Option<String>,
        /// Parameters for the driver, KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// Unbind a device from the driver the plugin manager gave it, or stop the
    /// driver serving a node (root or admin group).
    Unload {
        /// The node: a path below the mount (pci/0000:00:03.0, null).
        node: String,
    },
    /// Have bus drivers enumerate their buses again, and offer unbound devices
    /// to the drivers' manifests again (root or admin group).
    Rescan {
        /// Only this bus (a path below the mount).
        bus: Option<String>,
    },
}

/// The shells `ddmctl completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Shell {
    /// GNU bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// `ddmctl`'s exit status: distinct, stable, documented in ddmctl(8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Exit {
    /// Done.
    Success = 0,
    /// A failure of another kind (ddm refused or failed the request, a
    /// write failed, ...).
    Failure = 1,
    /// The command line is wrong (clap's own status for usage errors).
    Usage = 2,
    /// ddm could not be reached, or went away mid-call.
    Unreachable = 3,
    /// Not allowed: root or ddm's admin group needed, or the device file's
    /// permissions refuse.
    Denied = 4,
    /// No such driver, node or device.
    NotFound = 5,
}

/// Why `ddmctl` failed.
#[derive(Debug, thiserror::Error)]
enum CtlError {
    /// A call to ddm failed.
    #[error(transparent)]
    Ddm(#[from] DdmError),
    /// `ddmctl type` failed.
    #[error(transparent)]
    Type(#[from] TypeError),
    /// An argument is wrong in a way clap cannot see.
    #[error("{0}")]
    Usage(String),
    /// The monitor stream ended: ddm stopped.
    #[error("ddm closed the event stream (it stopped)")]
    StreamEnded,
}

impl CtlError {
    /// The exit status for this failure.
    fn exit(&self) -> Exit {
        match self {
            CtlError::Ddm(DdmError::Connect { .. } | DdmError::Ipc(_)) | CtlError::StreamEnded => Exit::Unreachable,
            CtlError::Ddm(DdmError::Denied(_)) => Exit::Denied,
            CtlError::Ddm(DdmError::NotFound(_)) => Exit::NotFound,
            CtlError::Ddm(DdmError::Refused(_) | DdmError::Unexpected(_)) => Exit::Failure,
            CtlError::Usage(_) | CtlError::Type(TypeError::Escape { .. }) => Exit::Usage,
            CtlError::Type(TypeError::NoDevice(_)) => Exit::NotFound,
            CtlError::Type(TypeError::NoAccess(_)) => Exit::Denied,
            CtlError::Type(
                TypeError::Stdin(_)
                | TypeError::Text(_)
                | TypeError::Open { .. }
                | TypeError::NotVirtual(_)
                | TypeError::Write { .. }
                | TypeError::ShortWrite { .. },
            ) => Exit::Failure,
        }
    }
}

/// Why `ddmctl type` failed.
#[derive(Debug, thiserror::Error)]
enum TypeError {
    #[error("cannot read the text from standard input")]
    Stdin(#[source] std::io::Error),
    #[error("bad escape {escape:?} at byte {at}: use \\n \\t \\b \\e \\\\ or \\xHH (or drop --escapes)")]
    Escape { escape: String, at: usize },
    #[error("cannot type the text")]
    Text(#[source] InputError),
    #[error("{0} does not exist: no such keyboard under the mount (see `ddmctl tree`, and --device)")]
    NoDevice(PathBuf),
    #[error("typing needs write access to {0} (root, or chmod)")]
    NoAccess(PathBuf),
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} does not take key events: only a virtual keyboard can be typed into (keyboard driver parameter source=virtual)")]
    NotVirtual(PathBuf),
    #[error("writing key events to {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} took {written} of {len} bytes, not whole key events; the keys typed so far stay typed")]
    ShortWrite { path: PathBuf, written: usize, len: usize },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::from(Exit::Success as u8),
        Err(e) => {
            eprintln!("ddmctl: {}", ddf::error_chain(&e));
            ExitCode::from(e.exit() as u8)
        }
    }
}

fn run(args: &Args) -> Result<(), CtlError> {
    if let Command::Completions { shell } = &args.command {
        print_completions(*shell);
        return Ok(());
    }
    let mut ddm = Ddm::connect(&args.socket)?;
    match &args.command {
        Command::Completions { .. } => {}
        Command::Monitor => return monitor(ddm, &args.socket, args.json),
        Command::Node { node } => {
            let path = strip_mount(&mut ddm, node);
            let detail = ddm.node(&path)?;
            if args.json {
                print_json(&node_json(&detail));
            } else {
                print_node(&detail);
            }
        }
        Command::Tree => {
            let nodes = ddm.tree()?;
            if args.json {
                print_json(&nodes);
            } else {
                print_tree(&nodes);
            }
        }
        Command::Status => {
            let drivers = ddm.status()?;
            if args.json {
                print_json(&drivers);
            } else {
                print_status(&drivers);
            }
        }
        Command::Find { bus, class, name, driver, state } => {
            let q = ddf::proto::Query {
                bus: bus.clone(),
                class: class.clone(),
                name: name.clone(),
                driver: driver.clone(),
                state: state.clone(),
            };
            let nodes = ddm.find(&q)?;
            if args.json {
                print_json(&nodes);
            } else {
                print_found(&nodes);
            }
        }
        Command::Load { driver, bus, params } => {
            let mut kv = Vec::new();
            for p in params {
                let (k, v) =
                    p.split_once('=').ok_or_else(|| CtlError::Usage(format!("parameter {p:?} is not KEY=VALUE")))?;
                kv.push((k.to_owned(), v.to_owned()));
            }
            println!("{}", ddm.load(driver, bus.as_deref(), &kv)?);
        }
        Command::Unload { node } => {
            let node = strip_mount(&mut ddm, node);
            println!("{}", ddm.unload(&node)?);
        }
        Command::Rescan { bus } => {
            let bus = bus.as_ref().map(|b| strip_mount(&mut ddm, b));
            println!("{}", ddm.rescan(bus.as_deref())?);
        }
        Command::Info => {
            let info = ddm.info()?;
            if args.json {
                print_json(&info);
            } else {
                println!("mountpoint {}\nversion    {}\npid        {}", info.mountpoint, info.version, info.pid);
            }
        }
        Command::Restart { driver } => println!("{}", ddm.restart(driver)?),
        Command::Inject { driver, fault } => {
            let f = Fault::parse(fault).ok_or_else(|| {
                CtlError::Usage(format!(
                    "unknown fault {fault:?}: use panic, abort, segv, hang, garbage, flood, stray-reply, ring-garbage, ring-stray, ring-overlong, ring-death, forbidden-syscall, exit or exit:CODE"
                ))
            })?;
            println!("{}", ddm.inject(driver, f)?);
        }
        Command::Type { device, enter, escapes, text } => {
            let mut text = if text.len() == 1 && text[0] == "-" {
                let mut buf = String::new();
                std::io::stdin().read_to_string(&mut buf).map_err(TypeError::Stdin)?;
                buf
            } else if *escapes {
                unescape(&text.join(" "))?
            } else {
                text.join(" ")
            };
            if *enter {
                text.push('\n');
            }
            let path = Path::new(&ddm.info()?.mountpoint).join(device);
            type_text(&path, &text)?;
        }
    }
    Ok(())
}

/// Types `text` into the virtual keyboard at `path` with the keyboard's
/// layout (US if it does not say), whole records per write.
fn type_text(path: &Path, text: &str) -> Result<(), TypeError> {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TypeError::NoDevice(path.to_owned()),
        std::io::ErrorKind::PermissionDenied => TypeError::NoAccess(path.to_owned()),
        _ => TypeError::Open { path: path.to_owned(), source },
    })?;
    let layout = keyboard::layout_of(&file).unwrap_or_default();
    let events = layout.text_to_events(text).map_err(TypeError::Text)?;
    for chunk in events.chunks(RECORDS_PER_WRITE) {
        let bytes = InputEvent::encode_records(chunk);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match file.write(rest) {
                // A short write of whole records: go on with the others.
                Ok(n) if n > 0 && n % EVENT_SIZE == 0 => rest = &rest[n..],
                Ok(n) => {
                    return Err(TypeError::ShortWrite {
                        path: path.to_owned(),
                        written: bytes.len() - rest.len() + n,
                        len: bytes.len(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Err(TypeError::NotVirtual(path.to_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(TypeError::NoAccess(path.to_owned()))
                }
                Err(source) => return Err(TypeError::Write { path: path.to_owned(), source }),
            }
        }
    }
    Ok(())
}

/// Resolves the backslash escapes of `ddmctl type --escapes`.
fn unescape(text: &str) -> Result<String, TypeError> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let bad = |escape: &str| TypeError::Escape { escape: escape.to_owned(), at };
        match chars.next().map(|(_, c)| c) {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('b') => out.push('\x08'),
            Some('e') => out.push('\x1b'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if hex.len() == 2 && b.is_ascii() => out.push(char::from(b)),
                    _ => return Err(bad(&format!("\\x{hex}"))),
                }
            }
            Some(other) => return Err(bad(&format!("\\{other}"))),
            None => return Err(bad("\\")),
        }
    }
    Ok(out)
}

/// Prints the completion script for `shell`.
fn print_completions(shell: Shell) {
    let mut cmd = Args::command();
    let out = &mut std::io::stdout();
    match shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "ddmctl", out),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "ddmctl", out),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "ddmctl", out),
    }
}

/// `ddmctl monitor`: prints every event until Ctrl-C (or until ddm stops).
fn monitor(ddm: Ddm, socket: &Path, json: bool) -> Result<(), CtlError> {
    let stream = ddm.monitor()?;
    // To standard error, so that standard output holds events only.
    eprintln!("ddmctl: monitoring ddm at {} (Ctrl-C ends)", socket.display());
    let mut out = std::io::stdout().lock();
    for event in stream {
        let event = event?;
        let line = if json { event_json(&event).to_string() } else { event_text(&event) };
        // A closed standard output (`| head`) ends the monitor quietly.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    Err(CtlError::StreamEnded)
}

/// The event's name in both formats.
fn event_name(what: &Happened) -> &'static str {
    match what {
        Happened::DeviceAdded { .. } => "device-added",
        Happened::BusAdded { .. } => "bus-added",
        Happened::Removed { .. } => "removed",
        Happened::Bound { .. } => "bound",
        Happened::Unbound { .. } => "unbound",
        Happened::Started { .. } => "started",
        Happened::Ready { .. } => "ready",
        Happened::Restarted { .. } => "restarted",
        Happened::Died { .. } => "died",
        Happened::Quarantined { .. } => "quarantined",
        Happened::Revived { .. } => "revived",
        Happened::PermChanged { .. } => "perm-changed",
        Happened::Lost { .. } => "lost",
        _ => "other",
    }
}

/// One event as a JSON object: `seq`, `time_ms`, `event`, then its fields.
fn event_json(e: &MonitorEvent) -> Value {
    let mut v = json!({ "seq": e.seq, "time_ms": e.unix_ms, "event": event_name(&e.what) });
    let fields = match &e.what {
        Happened::DeviceAdded { path, driver }
        | Happened::BusAdded { path, driver }
        | Happened::Bound { path, driver } => json!({ "path": path, "driver": driver }),
        Happened::Removed { path } => json!({ "path": path }),
        Happened::Unbound { path, driver, why } => json!({ "path": path, "driver": driver, "why": why }),
        Happened::Started { driver, pid } => json!({ "driver": driver, "pid": pid }),
        Happened::Ready { driver } | Happened::Revived { driver } => json!({ "driver": driver }),
        Happened::Restarted { driver, restarts } => json!({ "driver": driver, "restarts": restarts }),
        Happened::Died { driver, how, next } => json!({ "driver": driver, "how": how, "next": next.as_str() }),
        Happened::Quarantined { driver, how } => json!({ "driver": driver, "how": how }),
        Happened::PermChanged { path, mode, uid, gid } => {
            json!({ "path": path, "mode": format!("{mode:04o}"), "uid": uid, "gid": gid })
        }
        Happened::Lost { count } => json!({ "count": count }),
        other => json!({ "detail": format!("{other:?}") }),
    };
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), fields) {
        obj.extend(more);
    }
    v
}

/// One event as a line of text: the time (UTC), the event, what it is
/// about, and the details.
fn event_text(e: &MonitorEvent) -> String {
    let ms = e.unix_ms % 86_400_000;
    let time = format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let (subject, detail) = match &e.what {
        Happened::DeviceAdded { path, driver } | Happened::BusAdded { path, driver } => {
            (format!("/{path}"), format!("driver {driver}"))
        }
        Happened::Removed { path } => (format!("/{path}"), String::new()),
        Happened::Bound { path, driver } => (format!("/{path}"), format!("to driver {driver}")),
        Happened::Unbound { path, driver, why } => (format!("/{path}"), format!("from driver {driver}: {why}")),
        Happened::Started { driver, pid } => (driver.clone(), pid.map(|p| format!("pid {p}")).unwrap_or_default()),
        Happened::Ready { driver } | Happened::Revived { driver } => (driver.clone(), String::new()),
        Happened::Restarted { driver, restarts } => (driver.clone(), format!("restarts {restarts}")),
        Happened::Died { driver, how, next } => (driver.clone(), format!("{how}; now {}", next.as_str())),
        Happened::Quarantined { driver, how } => {
            (driver.clone(), format!("{how}; down until `ddmctl restart {driver}`"))
        }
        Happened::PermChanged { path, mode, uid, gid } => (format!("/{path}"), format!("{mode:04o} {uid}:{gid}")),
        Happened::Lost { count } => (format!("{count} events"), "lost: this monitor fell behind".to_owned()),
        other => (String::new(), format!("{other:?}")),
    };
    format!("{time} {:<13} {subject:<24} {detail}", event_name(&e.what)).trim_end().to_owned()
}

/// A user's name and number, `root (0)`, or the number alone.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} ({uid})", u.name),
        _ => uid.to_string(),
    }
}

/// A group's name and number, `disk (6)`, or the number alone.
fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => format!("{} ({gid})", g.name),
        _ => gid.to_string(),
    }
}

/// `-rw-r-----` for a node (`d` for a bus).
fn mode_string(mode: u32, bus: bool) -> String {
    let mut s = String::from(if bus { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// `ddmctl node --json`: the node as `tree --json` shows it, with the rest
/// of its story beside it.
fn node_json(d: &NodeDetail) -> Value {
    let mut v = serde_json::to_value(&d.node).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("kind".into(), json!(if d.node.class.is_some() { "device" } else { "bus" }));
        let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(d.node.uid)).ok().flatten();
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(d.node.gid)).ok().flatten();
        obj.insert("owner".into(), json!(owner.map(|u| u.name)));
        obj.insert("group".into(), json!(group.map(|g| g.name)));
        obj.insert("acl".into(), json!(d.acl));
        obj.insert("bus_driver".into(), json!(d.bus_driver));
        obj.insert("unbound".into(), json!(d.unbound));
        obj.insert("restarts".into(), json!(d.restarts));
        obj.insert("last_exit".into(), json!(d.last_exit));
        let ids: serde_json::Map<String, Value> = d.node.meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        obj.insert("ids".into(), Value::Object(ids));
    }
    v
}

/// `ddmctl node`: one `key  value` line per fact, as `udevadm info` lists a
/// device.
fn print_node(d: &NodeDetail) {
    let n = &d.node;
    let dash = |v: Option<String>| v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
    let mut lines: Vec<(&str, String)> = vec![
        ("path", format!("/{}", n.path)),
        ("kind", if n.class.is_some() { "device".into() } else { "bus".into() }),
    ];
    if let Some(c) = n.class {
        lines.push(("class", c.as_str().into()));
        lines.push(("size", n.size.to_string()));
    }
    lines.push(("driver", dash(n.driver.clone())));
    lines.push(("pid", dash(n.pid.map(|p| p.to_string()))));
    lines.push(("state", dash(n.state_text.clone())));
    lines.push(("restarts", dash(d.restarts.map(|r| r.to_string()))));
    lines.push(("last exit", dash(d.last_exit.clone())));
    lines.push(("bus", dash(n.bus.clone())));
    lines.push(("address", dash(n.address.clone())));
    lines.push(("bus driver", dash(d.bus_driver.clone())));
    for (k, v) in &n.meta {
        lines.push((k.as_str(), v.clone()));
    }
    lines.push(("owner", user_name(n.uid)));
    lines.push(("group", group_name(n.gid)));
    lines.push(("mode", format!("{:04o} ({})", n.mode, mode_string(n.mode, n.class.is_none()))));
    lines.push(("acl", dash(d.acl.clone())));
    lines.push(("unbound", dash(d.unbound.clone())));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in lines {
        println!("{k:<width$}  {v}");
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("ddmctl: cannot print JSON: {e}"),
    }
}

fn print_tree(nodes: &[NodeInfo]) {
    for n in nodes {
        let depth = if n.path.is_empty() { 0 } else { n.path.matches('/').count() + 1 };
        let name = if n.path.is_empty() {
            "/ (null bus)".to_owned()
        } else {
            let leaf = n.path.rsplit('/').next().unwrap_or(&n.path);
            match n.class {
                None => format!("{leaf}/"),
                Some(_) => leaf.to_owned(),
            }
        };
        let indent = "  ".repeat(depth);
        let perm = format!("{:04o} {}:{}", n.mode, n.uid, n.gid);
        match n.class {
            None => println!("{indent}{name:<24} bus    {perm}"),
            Some(class) => {
                let pid = n.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                let state = n.state.map(|s| s.as_str()).unwrap_or("-");
                let driver = n.driver.as_deref().unwrap_or("-");
                println!("{indent}{name:<24} {:<6} {perm}  driver {driver} pid {pid} {state}", class.as_str());
            }
        }
    }
}

/// A node path below the mount: accepts `/ddf/x`, `/x` or `x`.
fn strip_mount(ddm: &mut Ddm, path: &str) -> String {
    if let Ok(info) = ddm.info() {
        if let Some(rest) = path.strip_prefix(&info.mountpoint) {
            return rest.trim_matches('/').to_owned();
        }
    }
    path.trim_matches('/').to_owned()
}

fn print_found(nodes: &[NodeInfo]) {
    for n in nodes {
        let class = n.class.map(|c| c.as_str()).unwrap_or("bus");
        let driver = n.driver.as_deref().unwrap_or("-");
        let state = n.state_text.as_deref().unwrap_or("-");
        let ids: Vec<String> = n
            .meta
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "vendor" | "device" | "class"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("/{:<28} {:<6} {:<10} {:<10} {}", n.path, class, driver, state, ids.join(" "));
    }
}

fn print_status(drivers: &[DriverStatus]) {
    println!(
        "{:<12} {:>8} {:<10} {:>10} {:>8} {:>8}  DEVICES",
        "DRIVER", "PID", "STATE", "REQUESTS", "ERRORS", "RESTARTS"
    );
    for d in drivers {
        let pid = d.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<12} {:>8} {:<10} {:>10} {:>8} {:>8}  {}",
            d.name,
            pid,
            d.state.as_str(),
            d.requests,
            d.errors,
            d.restarts,
            // A bus of thousands of devices: the first few and how many.
            ddm_fs::core::paths_and_count(&d.devices, d.device_count)
        );
        if !d.counters.is_empty() {
            let c: Vec<String> = d.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<12} counters: {}", "", c.join(" "));
        }
        if d.state == ddf::proto::DriverState::Failed {
            let next = match d.next_try_ms {
                Some(ms) => format!("tried again in {:.1} s", ms as f64 / 1000.0),
                None => "down until `ddmctl restart`".to_owned(),
            };
            println!("{:<12} quarantined ({} in a row): {next}", "", d.quarantines.max(1));
        }
        if d.violations > 0 {
            let last = d.last_exit.as_deref().and_then(|e| e.strip_prefix("sandbox violation: "));
            let last = last.map(|l| format!(", the last: {l}")).unwrap_or_default();
            println!("{:<12} sandbox violations: {}{last}", "", d.violations);
        }
        if let Some(dma) = &d.dma {
            let size = ddf::params::Size;
            println!(
                "{:<12} dma: {} in {} segments of {}, {}",
                "",
                size(dma.bytes),
                dma.segments,
                size(dma.page_size),
                if dma.pinned { "pinned" } else { "locked, not pinned" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"a\nb\tc\\d\be\e\x41").unwrap(), "a\nb\tc\\d\x08e\x1bA");
        assert_eq!(unescape("no escapes").unwrap(), "no escapes");
        for bad in [r"\q", r"x\", r"\x4", r"\xzz", r"\xff"] {
            assert!(matches!(unescape(bad), Err(TypeError::Escape { .. })), "{bad}");
        }
    }

    #[test]
    fn type_takes_words_and_flags() {
        let args = Args::try_parse_from(["ddmctl", "type", "--enter", "Hello,", "World!"]).unwrap();
        match args.command {
            Command::Type { device, enter, text, .. } => {
                assert_eq!((device.as_str(), enter), ("keyboard0", true));
                assert_eq!(text.join(" "), "Hello, World!");
            }
            other => panic!("{other:?}"),
        }
        assert!(Args::try_parse_from(["ddmctl", "type"]).is_err(), "TEXT is required");
        assert!(Args::try_parse_from(["ddmctl", "type", "-"]).is_ok());
    }
}
