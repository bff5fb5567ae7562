//! `ddf-abuse`: a hostile client of ddm's control socket, for tests (run it
//! as another user with `setpriv`). Each mode does one thing a client
//! should not be able to hurt ddm with, and prints what ddm did about it,
//! one line a fact:
//!
//! - `connections N`: opens N connections and asks each for `Info`; prints
//!   `accepted A refused R failed F` and the first refusal's words, then
//!   holds them until standard input ends, and prints `closed_by_ddm C`:
//!   how many ddm had closed meanwhile.
//! - `big-frame`: sends a frame of the largest size (answered with an
//!   error), then one byte more (ddm ends the connection).
//! - `half-frame`: sends a frame shorter than its own length prefix says.
//! - `stall`: connects and sends nothing; prints when ddm closed it.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use ddf::ipc::{Channel, IpcError, RecvBuf, FRAME_MAX};
use ddf::proto::{ControlRequest, ControlResponse};
use nix::sys::socket::{send, MsgFlags};

/// A hostile control-socket client (for ddf's tests).
#[derive(Debug, Parser)]
#[command(name = "ddf-abuse")]
struct Args {
    /// ddm's control socket.
    #[arg(long)]
    socket: PathBuf,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open this many connections and hold them until standard input ends.
    Connections {
        /// How many.
        count: usize,
    },
    /// A frame of the largest size, then one over it.
    BigFrame,
    /// A frame shorter than its length prefix says.
    HalfFrame,
    /// Connect and send nothing.
    Stall,
}

/// What ddm does with the next frame it is sent.
fn fate(chan: &Channel, buf: &mut RecvBuf) -> String {
    match chan.recv(buf) {
        Ok(f) => match f.decode::<ControlResponse>() {
            Ok(ControlResponse::Error(e)) => format!("answered error: {e}"),
            Ok(other) => format!("answered {other:?}"),
            Err(e) => format!("answered garbage: {e}"),
        },
        Err(IpcError::Closed) => "closed by ddm".to_owned(),
        Err(e) => format!("failed: {}", ddf::error_chain(&e)),
    }
}

fn connect(args: &Args, buf: &mut RecvBuf) -> Result<Channel, IpcError> {
    let chan = Channel::connect(&args.socket)?;
    chan.handshake(buf)?;
    Ok(chan)
}

fn run(args: &Args) -> Result<(), IpcError> {
    let mut buf = RecvBuf::default();
    match &args.mode {
        Mode::Connections { count } => {
            let (mut held, mut refused, mut failed, mut why) = (Vec::new(), 0, 0, None);
            for _ in 0..*count {
                let Ok(chan) = Channel::connect(&args.socket) else {
                    failed += 1;
                    continue;
                };
                // ddm may refuse at the door: it sends its hello and its
                // reason and closes, perhaps before our sends arrive.
                let _ = chan.send(&ddf::proto::Hello::ours(), &[], &[]);
                let _ = chan.send(&ControlRequest::Info, &[], &[]);
                let answer = match chan.recv(&mut buf) {
                    Ok(_hello) => chan.recv(&mut buf).and_then(|f| f.decode::<ControlResponse>()),
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(ControlResponse::Info(_)) => held.push(chan),
                    Ok(ControlResponse::Error(e)) => {
                        refused += 1;
                        why.get_or_insert(e);
                    }
                    Ok(_) | Err(_) => failed += 1,
                }
            }
            println!("accepted {} refused {refused} failed {failed}", held.len());
            if let Some(why) = why {
                println!("refusal: {why}");
            }
            // Hold them until told to stop.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            let closed = held.iter().filter(|c| matches!(c.try_recv(&mut buf), Err(IpcError::Closed))).count();
            println!("closed_by_ddm {closed}");
        }
        Mode::BigFrame => {
            let chan = connect(args, &mut buf)?;
            // A length prefix, then junk up to the largest frame.
            let mut frame = vec![0xffu8; FRAME_MAX];
            frame[..4].copy_from_slice(&8u32.to_le_bytes());
            chan.send_raw(&frame, &[], false)?;
            println!("max-frame: {}", fate(&chan, &mut buf));
            frame.push(0xff);
            match send(chan.as_fd().as_raw_fd(), &frame, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => println!("oversized-frame: {}", fate(&chan, &mut buf)),
                Err(e) => println!("oversized-frame: not sent: {e}"),
            }
        }
        Mode::HalfFrame => {
            let chan = connect(args, &mut buf)?;
            let mut frame = 1000u32.to_le_bytes().to_vec();
            frame.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
            chan.send_raw(&frame, &[], false)?;
            println!("half-frame: {}", fate(&chan, &mut buf));
        }
        Mode::Stall => {
            let chan = Channel::connect(&args.socket)?;
            let t = Instant::now();
            // ddm's hello, then nothing from us: ddm gives up after its timeout.
            let _ = chan.recv(&mut buf);
            let said = fate(&chan, &mut buf);
            println!("stall: {said} after {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ddf-abuse: {}", ddf::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
