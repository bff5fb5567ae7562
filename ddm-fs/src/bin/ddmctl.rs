//! `ddmctl`: the administrator's command line for ddf's device driver
//! manager. A thin client of libDDM ([`ddf::ddm`]); see ddmctl(8).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ddf::ddm::{Ddm, DdmError};
use ddf::proto::{DriverStatus, Fault, NodeInfo};

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
    /// FAULT is one of: panic, abort, segv, hang, garbage, exit, exit:CODE.
    Inject {
        /// Driver name.
        driver: String,
        /// The fault.
        fault: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("ddmctl: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), DdmError> {
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
                    "unknown fault {fault:?}: use panic, abort, segv, hang, garbage, exit or exit:CODE"
                ))
            })?;
            println!("{}", ddm.inject(driver, f)?);
        }
    }
    Ok(())
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
                println!(
                    "{indent}{name:<24} {:<6} {perm}  driver {driver} pid {pid} {state}",
                    class.as_str()
                );
            }
        }
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
    }
}
