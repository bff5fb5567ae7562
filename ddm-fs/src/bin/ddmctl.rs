//! `ddmctl`: the administrator's command line for ddf's device driver
//! manager. A thin client of libDDM ([`ddf::ddm`]); see ddmctl(8).
//!
//! `ddmctl type` is the one command that goes through the mount rather than
//! the control socket: it asks ddm where the device tree is mounted, opens
//! a virtual keyboard's file (so that the file's permissions decide who may
//! type), asks the keyboard its layout ([`ddf::input::keyboard::layout_of`]),
//! turns the text into the key events of that layout
//! ([`ddf::input::Layout::text_to_events`]) and writes them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ddf::ddm::{Ddm, DdmError};
use ddf::input::{keyboard, InputError, InputEvent, EVENT_SIZE};
use ddf::proto::{DriverStatus, Fault, NodeInfo};

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
    /// Restart a driver now; also takes it out of the failed state (root or admin group).
    Restart {
        /// Driver name (see `ddmctl status`).
        driver: String,
    },
    /// Make a driver misbehave on purpose, to test supervision (root or admin group).
    ///
    /// FAULT is one of: panic, abort, segv, hang, garbage, flood, stray-reply,
    /// ring-garbage, ring-stray, ring-overlong, ring-death, exit, exit:CODE.
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

/// Why `ddmctl` failed.
#[derive(Debug, thiserror::Error)]
enum CtlError {
    /// A call to ddm failed.
    #[error(transparent)]
    Ddm(#[from] DdmError),
    /// `ddmctl type` failed.
    #[error(transparent)]
    Type(#[from] TypeError),
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ddmctl: {}", ddf::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), CtlError> {
    let mut ddm = Ddm::connect(&args.socket)?;
    match &args.command {
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
                    p.split_once('=').ok_or_else(|| DdmError::Refused(format!("parameter {p:?} is not KEY=VALUE")))?;
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
                DdmError::Refused(format!(
                    "unknown fault {fault:?}: use panic, abort, segv, hang, garbage, flood, stray-reply, ring-garbage, ring-stray, ring-overlong, ring-death, exit or exit:CODE"
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
            d.devices.join(" ")
        );
        if !d.counters.is_empty() {
            let c: Vec<String> = d.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<12} counters: {}", "", c.join(" "));
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
