//! `ddf-direct`: calls a device's driver directly, through libDriver's client
//! proxy, with no FUSE in the path — an example of the direct client path,
//! and what the tests drive it with.
//!
//! ```text
//! ddf-direct --socket /run/ddf/control.sock /ddf/ram0 read 0 16
//! ddf-direct --socket ... --write /ddf/ram0 write 4096 68656c6c6f
//! ```
//!
//! It opens the device file (read-only, or read-write with `--write`): that
//! open is the permission check, done by the kernel. It then asks the DDM
//! for a direct link with the open file as proof, and makes the call: `read
//! OFFSET LEN` prints the bytes as hex, `write OFFSET HEX` prints the count.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ddf::ddm::Ddm;

/// Call a device's driver directly (libDriver client proxy, no FUSE).
#[derive(Debug, Parser)]
struct Args {
    /// ddm's control socket.
    #[arg(long, default_value = ddf::ddm::DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Open the device for writing too.
    #[arg(long)]
    write: bool,
    /// The device file under the mount.
    device: PathBuf,
    #[command(subcommand)]
    op: Op,
}

#[derive(Debug, Subcommand)]
enum Op {
    /// Read LEN bytes at OFFSET; prints them as hex.
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: usize,
    },
    /// Write HEX bytes at OFFSET; prints how many were taken.
    Write {
        /// Byte offset.
        offset: u64,
        /// The bytes, as hex.
        hex: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err("hex needs an even number of digits".into());
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bad hex: {e}"))).collect()
}

fn run(args: &Args) -> Result<String, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(args.write)
        .open(&args.device)
        .map_err(|e| format!("cannot open {}: {e}", args.device.display()))?;
    let mut ddm = Ddm::connect(&args.socket).map_err(|e| e.to_string())?;
    let mut client = ddm.connect_device(&file).map_err(|e| e.to_string())?;
    let flags = if args.write { libc::O_RDWR } else { libc::O_RDONLY };
    let h = client.open(ddf::proto::OpenFlags(flags)).map_err(|e| format!("open: {e}"))?;
    let out = match &args.op {
        Op::Read { offset, len } => {
            let mut buf = vec![0u8; *len];
            let mut got = 0;
            while got < *len {
                let n = client.read(h, offset + got as u64, &mut buf[got..]).map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            hex(&buf[..got])
        }
        Op::Write { offset, hex } => {
            let data = unhex(hex)?;
            let n = client.write(h, *offset, &data).map_err(|e| format!("write: {e}"))?;
            n.to_string()
        }
    };
    client.close(h).map_err(|e| format!("close: {e}"))?;
    Ok(out)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ddf-direct: {e}");
            ExitCode::FAILURE
        }
    }
}
