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
use ddf::proto::Fault;

#[path = "ddmctl/show.rs"]
mod show;
use show::*;

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
