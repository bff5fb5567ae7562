//! A driver's answer to a parked reply, checked before it is believed; and
//! the passthrough backing files that zero-copy opens share per node.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ddf::proto::{Answer, Call, DriverToDdm, Errno, RequestId};
use log::{debug, error, warn};

use super::{Core, Instance, Link, OpenFile, ProtocolError};
use crate::conn::Conn;
use crate::fast::FastError;
use crate::ids::{Ino, InstanceId};
use crate::reply::{Backing, OpenReply, Opened, Parked};

/// A driver's reply to one request, as it came.
#[derive(Debug)]
pub(super) struct DriverAnswer<'a> {
    pub(super) id: RequestId,
    pub(super) result: Result<Answer, Errno>,
    /// The frame's payload (read data, ioctl output).
    pub(super) payload: &'a [u8],
    /// A descriptor that came with it (a passthrough backing file).
    pub(super) backing: Option<OwnedFd>,
}

/// A passthrough backing file registered with the kernel for one node. The
/// kernel wants every passthrough open of an inode to use the same one, so it
/// is shared by the node's opens and released with the last of them.
#[derive(Debug)]
pub struct BackingEntry {
    backing: Backing,
    /// Device and inode of the backing file, to recognise the same file when
    /// a restarted driver hands it over again.
    file: (u64, u64),
    opens: usize,
}

/// An errno a driver may answer: a real one, else `EIO`.
fn sane(e: Errno) -> Errno {
    if (1..4096).contains(&e.0) {
        e
    } else {
        Errno::EIO
    }
}

impl Core {
    /// Makes a call on incarnation `conn` of instance `instance`: by the
    /// ring when that pays (an answer that comes within the spin budget is
    /// completed here, on the caller's thread), else by the socket.
    pub(super) fn call_link(
        &self,
        instance: InstanceId,
        conn: &Arc<Conn>,
        call: Call,
        payload: &[u8],
        parked: Parked,
        pid: u32,
    ) {
        let outcome = conn.call_fast(call, payload, parked, pid, |id, parked, frame| {
            let Some(inst) = self.inst(instance) else {
                parked.fail(Errno::EIO);
                return Ok(());
            };
            let reply =
                ddf::ipc::Frame::parse(frame, Vec::new()).and_then(|f| Ok((f.decode::<DriverToDdm>()?, f.payload)));
            let (result, payload) = match reply {
                Ok((DriverToDdm::Reply { id: got, result }, payload)) if got == id => (result, payload),
                Ok((other, _)) => {
                    parked.fail(Errno::EIO);
                    return Err(ProtocolError::Ring(format!("request {} answered in the ring with {other:?}", id.0)));
                }
                Err(e) => {
                    parked.fail(Errno::EIO);
                    return Err(ProtocolError::Ring(ddf::error_chain(&e)));
                }
            };
            inst.requests.fetch_add(1, Ordering::Relaxed);
            if result.is_err() {
                inst.errors.fetch_add(1, Ordering::Relaxed);
            }
            self.complete(&inst, conn, parked, DriverAnswer { id, result, payload, backing: None })
        });
        let why = match outcome {
            Ok(()) => return,
            Err(FastError::Ring(why)) => ProtocolError::Ring(why),
            Err(FastError::Answer(why)) => why,
        };
        if let Some(inst) = self.inst(instance) {
            if !conn.is_dead() {
                error!("driver {}: protocol violation: {why}; killing it", inst.name());
                inst.kill(super::Cause::Protocol(why));
            }
        }
        conn.kill();
    }

    /// Completes a parked reply with the driver's answer. An answer that does
    /// not fit its request fails the request and is a protocol violation.
    pub(super) fn complete(
        &self,
        inst: &Instance,
        conn: &Arc<Conn>,
        parked: Parked,
        answer: DriverAnswer<'_>,
    ) -> Result<(), ProtocolError> {
        let DriverAnswer { id, result, payload, backing } = answer;
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                match parked {
                    Parked::Reopen { fh } => self.reopen_failed(fh, sane(e)),
                    other => other.fail(sane(e)),
                }
                return Ok(());
            }
        };
        match (parked, answer) {
            (Parked::Discard, _) => {}
            (
                Parked::Open { reply, ino, class, flags },
                Answer::Opened { handle } | Answer::OpenedBacked { handle },
            ) => {
                let fh = self.new_fh();
                // Zero copy: the kernel reads and writes the driver's file
                // itself (FUSE passthrough). Without kernel support, the
                // open goes through the driver like any other.
                let passthrough = backing.is_some_and(|fd| self.backing_for(inst, reply.as_ref(), ino, fd));
                self.files.lock().insert(
                    fh,
                    OpenFile {
                        ino,
                        instance: inst.id,
                        flags,
                        link: Link::Live { conn: conn.clone(), handle },
                        poll: None,
                        backing: passthrough,
                    },
                );
                if passthrough {
                    let backings = self.backings.lock();
                    let b = backings.get(&ino).map(|b| &b.backing);
                    reply.opened(Opened { fh, class, passthrough: b });
                } else {
                    reply.opened(Opened { fh, class, passthrough: None });
                }
            }
            (Parked::Reopen { fh }, Answer::Opened { handle } | Answer::OpenedBacked { handle }) => {
                let waiters = self.files.lock().get_mut(&fh).map(|f| {
                    match std::mem::replace(&mut f.link, Link::Live { conn: conn.clone(), handle }) {
                        Link::Waiting { waiters, .. } => waiters,
                        _ => Vec::new(),
                    }
                });
                match waiters {
                    // Closed meanwhile: close the new handle too.
                    None => {
                        conn.call(Call::Close { handle }, &[], Parked::Discard, 0);
                    }
                    Some(waiters) => {
                        debug!("driver {}: fh {fh} re-opened as handle {handle}", inst.name());
                        for w in waiters {
                            conn.call((w.make)(handle), &w.payload, w.parked, w.pid);
                        }
                    }
                }
            }
            // More than was asked for is a lie the kernel would refuse.
            (Parked::Read(reply, max), Answer::Data) if payload.len() > max as usize => {
                reply.error(Errno::EIO);
                return Err(ProtocolError::ReadTooLong { id, got: payload.len(), asked: max });
            }
            (Parked::Write(reply, brought), Answer::Written { len }) if len > brought => {
                reply.error(Errno::EIO);
                return Err(ProtocolError::WriteTooLong { id, claimed: len, brought });
            }
            (Parked::Ioctl(reply, max), Answer::Ioctl { .. }) if payload.len() > max as usize => {
                reply.error(Errno::EIO);
                return Err(ProtocolError::IoctlTooLong { id, got: payload.len(), asked: max });
            }
            (Parked::Read(reply, _), Answer::Data) => reply.data(payload),
            (Parked::Write(reply, _), Answer::Written { len }) => reply.written(len),
            (Parked::Ioctl(reply, _), Answer::Ioctl { result }) => reply.ioctl(result, payload),
            (Parked::Poll(reply), Answer::Polled { revents }) => reply.poll(revents),
            (parked, answer) => {
                let kind = parked.kind();
                match parked {
                    Parked::Reopen { fh } => self.reopen_failed(fh, Errno::EIO),
                    other => other.fail(Errno::EIO),
                }
                return Err(ProtocolError::Mismatch { id, kind, answer: format!("{answer:?}") });
            }
        }
        Ok(())
    }

    /// Registers (or reuses) the passthrough backing file of node `ino` for
    /// one more open. `false`: serve this open through the driver.
    fn backing_for(&self, inst: &Instance, reply: &dyn OpenReply, ino: Ino, fd: OwnedFd) -> bool {
        let Ok(st) = nix::sys::stat::fstat(&fd) else { return false };
        let file = (st.st_dev, st.st_ino);
        let mut backings = self.backings.lock();
        if let Some(b) = backings.get_mut(&ino) {
            if b.file == file {
                b.opens += 1;
                return true;
            }
            // Another file while the old one is in use: the kernel would
            // refuse mixing them on one inode.
            warn!(
                "driver {}: a different backing file while the old one is open; serving through the driver",
                inst.name()
            );
            return false;
        }
        match reply.register_backing(fd.as_fd()) {
            Ok(backing) => {
                backings.insert(ino, BackingEntry { backing, file, opens: 1 });
                true
            }
            Err(e) => {
                warn!("driver {}: passthrough refused by the kernel ({e}); serving through the driver", inst.name());
                false
            }
        }
    }

    /// One open of node `ino` that used its backing file closed; the last
    /// one lets the kernel forget it.
    pub(super) fn release_backing(&self, ino: Ino) {
        let mut backings = self.backings.lock();
        if let Some(b) = backings.get_mut(&ino) {
            b.opens -= 1;
            if b.opens == 0 {
                backings.remove(&ino);
            }
        }
    }

    /// How many opens of node `ino` share its backing file (for tests).
    pub fn backing_opens(&self, ino: Ino) -> usize {
        self.backings.lock().get(&ino).map_or(0, |b| b.opens)
    }
}
