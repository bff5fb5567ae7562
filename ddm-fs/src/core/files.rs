//! Open files: how a call on one reaches its driver, and what becomes of
//! it when the driver restarts, fails or loses the device.
//!
//! A file's [`Link`] is live (an incarnation and the driver's handle), or
//! waiting for a new incarnation (calls queue on the file meanwhile), or
//! dead (`EIO`), or gone with its device (`ENODEV`). Files of drivers whose
//! manifest says `handles_survive_restart` are re-opened lazily: when a call
//! comes, or when the new incarnation is ready and calls are waiting.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ddf::proto::{Call, DriverState, Errno, Handle, OpenFlags};
use log::debug;

use super::{Core, Instance};
use crate::conn::Conn;
use crate::ids::{Fh, Ino, InstanceId};
use crate::reply::{OpenReply, Parked, PollWaker};
use crate::tree::NodeKind;

/// A call waiting for an open file's driver to come back.
pub struct Waiter {
    /// Builds the call once the new handle is known.
    pub make: Box<dyn FnOnce(Handle) -> Call + Send>,
    /// The call's payload (a write's data).
    pub payload: Vec<u8>,
    /// The caller's reply.
    pub parked: Parked,
    /// The caller (its thread id), for interrupts.
    pub pid: u32,
    /// Since when it waits.
    pub since: Instant,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("parked", &self.parked.kind()).field("pid", &self.pid).finish()
    }
}

/// How an open file reaches its driver.
#[derive(Debug)]
pub enum Link {
    /// Through this incarnation, with this handle.
    Live {
        /// The incarnation.
        conn: Arc<Conn>,
        /// The driver's handle.
        handle: Handle,
    },
    /// The driver restarted and the file is being re-opened (or waits for
    /// the driver to be ready); calls wait here.
    Waiting {
        /// Calls made meanwhile.
        waiters: Vec<Waiter>,
        /// Whether the re-open was sent.
        reopening: bool,
    },
    /// The driver died and this file does not survive restarts: `EIO`.
    Dead,
    /// The device went away: `ENODEV`.
    Gone,
}

/// An open file under the mount.
pub struct OpenFile {
    /// The node.
    pub ino: Ino,
    /// The driver instance.
    pub instance: InstanceId,
    /// `open(2)` flags (for re-opening).
    pub flags: OpenFlags,
    /// The link to the driver.
    pub link: Link,
    /// Who to tell when a poll's readiness changes, if the file is polled.
    pub poll: Option<Box<dyn PollWaker>>,
    /// Whether this open uses its node's passthrough backing file.
    pub backing: bool,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("ino", &self.ino)
            .field("instance", &self.instance)
            .field("link", &self.link)
            .field("backing", &self.backing)
            .finish()
    }
}

/// What to do with a call, decided under the `files` lock and done after it.
enum Next {
    Call(InstanceId, Arc<Conn>, Handle),
    Fail(Errno),
    /// The incarnation died under the file: decide with the instance's state.
    Revive(InstanceId),
}

impl Core {
    /// Opens device node `ino` for a caller: the open is sent to its driver
    /// and `reply` parked until it answers. A driver that is (re)starting
    /// answers `EAGAIN`, one that is down `ENXIO`.
    pub fn open(&self, ino: Ino, flags: OpenFlags, reply: Box<dyn OpenReply>, pid: u32) {
        let found = self.tree.read().get(ino).map(|n| match &n.kind {
            NodeKind::Device(d) => Some((n.name.clone(), d.instance, d.device, d.class)),
            NodeKind::Bus { .. } => None,
        });
        let (name, instance, device, class) = match found {
            None => return reply.error(Errno(libc::ENOENT)),
            Some(None) => return reply.error(Errno(libc::EISDIR)),
            Some(Some(f)) => f,
        };
        let Some(inst) = self.inst(instance) else { return reply.error(Errno::ENXIO) };
        let (state, conn) = {
            let live = inst.live.lock();
            (live.state, live.conn.clone())
        };
        let conn = match (state, conn) {
            (DriverState::Running, Some(c)) => c,
            (DriverState::Starting | DriverState::Restarting, _) => return reply.error(Errno::EAGAIN),
            (DriverState::Running | DriverState::Failed | DriverState::Stopped, _) => {
                debug!("open of {name} refused: driver {} is {}", inst.name(), state.as_str());
                return reply.error(Errno::ENXIO);
            }
        };
        let parked = Parked::Open { reply, ino, class, flags };
        self.call_link(instance, &conn, Call::Open { device, flags }, &[], parked, pid);
    }

    /// Makes a call on open file `fh`: at once on a live link, after the
    /// re-open for a file whose driver restarted, or `EIO`/`ENODEV`/`EBADF`.
    pub fn file_call<F>(&self, fh: Fh, make: F, payload: &[u8], parked: Parked, pid: u32)
    where
        F: FnOnce(Handle) -> Call + Send + 'static,
    {
        let waiter = |make: F, parked| Waiter {
            make: Box::new(make),
            payload: payload.to_vec(),
            parked,
            pid,
            since: Instant::now(),
        };
        // First look, under `files` alone.
        let next = {
            let mut files = self.files.lock();
            match files.get_mut(&fh).map(|f| (f.instance, &mut f.link)) {
                None => Next::Fail(Errno::EBADF),
                Some((instance, Link::Live { conn, handle })) if !conn.is_dead() => {
                    Next::Call(instance, conn.clone(), *handle)
                }
                Some((_, Link::Waiting { waiters, .. })) => {
                    waiters.push(waiter(make, parked));
                    return;
                }
                Some((_, Link::Dead)) => Next::Fail(Errno::EIO),
                Some((_, Link::Gone)) => Next::Fail(Errno::ENODEV),
                Some((instance, Link::Live { .. })) => Next::Revive(instance),
            }
        };
        let instance = match next {
            Next::Call(instance, conn, handle) => {
                self.call_link(instance, &conn, make(handle), payload, parked, pid);
                return;
            }
            Next::Fail(e) => return parked.fail(e),
            Next::Revive(instance) => instance,
        };
        // The incarnation died under this file. The instance's state is read
        // without `files` held (its `live` comes first in the lock order),
        // then the file is looked at again: another call may have moved it on.
        let Some(inst) = self.inst(instance) else { return parked.fail(Errno::EIO) };
        let (state, conn) = {
            let live = inst.live.lock();
            (live.state, live.conn.clone())
        };
        let survive = inst.manifest.handles_survive_restart;
        let mut files = self.files.lock();
        let Some(f) = files.get_mut(&fh) else {
            drop(files);
            return parked.fail(Errno::EBADF);
        };
        match &mut f.link {
            Link::Live { conn: c, handle } if !c.is_dead() => {
                let (c, handle) = (c.clone(), *handle);
                drop(files);
                self.call_link(instance, &c, make(handle), payload, parked, pid);
            }
            Link::Waiting { waiters, .. } => waiters.push(waiter(make, parked)),
            Link::Dead => {
                drop(files);
                parked.fail(Errno::EIO);
            }
            Link::Gone => {
                drop(files);
                parked.fail(Errno::ENODEV);
            }
            Link::Live { .. } if !survive => {
                f.link = Link::Dead;
                drop(files);
                parked.fail(Errno::EIO);
            }
            Link::Live { .. } => match (state, conn) {
                (DriverState::Running, Some(conn)) if !conn.is_dead() => {
                    f.link = Link::Waiting { waiters: vec![waiter(make, parked)], reopening: true };
                    let (ino, flags) = (f.ino, f.flags);
                    drop(files);
                    self.reopen(&inst, &conn, fh, ino, flags);
                }
                (DriverState::Running | DriverState::Starting | DriverState::Restarting, _) => {
                    f.link = Link::Waiting { waiters: vec![waiter(make, parked)], reopening: false };
                }
                (DriverState::Failed | DriverState::Stopped, _) => {
                    f.link = Link::Dead;
                    drop(files);
                    parked.fail(Errno::EIO);
                }
            },
        }
    }

    /// A new incarnation of `inst` is ready: its files that wait for it are
    /// re-opened now (the calls queued on them go once that is answered).
    pub(super) fn reopen_waiting(&self, inst: &Instance, conn: &Arc<Conn>) {
        let todo: Vec<(Fh, Ino, OpenFlags)> = self
            .files
            .lock()
            .iter_mut()
            .filter(|(_, f)| f.instance == inst.id)
            .filter_map(|(fh, f)| match &mut f.link {
                Link::Waiting { reopening, .. } if !*reopening => {
                    *reopening = true;
                    Some((*fh, f.ino, f.flags))
                }
                _ => None,
            })
            .collect();
        for (fh, ino, flags) in todo {
            self.reopen(inst, conn, fh, ino, flags);
        }
    }

    /// Sends an open for file `fh` on a new incarnation.
    fn reopen(&self, inst: &Instance, conn: &Arc<Conn>, fh: Fh, ino: Ino, flags: OpenFlags) {
        let device = match self.tree.read().get(ino).map(|n| &n.kind) {
            Some(NodeKind::Device(d)) if d.instance == inst.id => Some(d.device),
            _ => None,
        };
        match device {
            Some(device) => {
                debug!("driver {}: re-opening fh {fh}", inst.name());
                conn.call(Call::Open { device, flags }, &[], Parked::Reopen { fh }, 0);
            }
            None => self.reopen_failed(fh, Errno::ENODEV),
        }
    }

    /// The re-open of `fh` failed with `err`: the file is dead, and its
    /// waiting calls get `err`.
    pub(super) fn reopen_failed(&self, fh: Fh, err: Errno) {
        let waiters = match self.files.lock().get_mut(&fh) {
            Some(f) => match std::mem::replace(&mut f.link, Link::Dead) {
                Link::Waiting { waiters, .. } => waiters,
                other => {
                    f.link = other;
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        for w in waiters {
            w.parked.fail(err);
        }
    }

    /// What to do with an incarnation's open files when it died: files that
    /// survive restarts wait for the next incarnation (a re-open in flight
    /// is retried), the others are dead. With `quarantined`, all are dead.
    pub fn orphan_files(&self, inst: &Instance, quarantined: bool) {
        let survive = inst.manifest.handles_survive_restart && !quarantined;
        let mut failed = Vec::new();
        for f in self.files.lock().values_mut().filter(|f| f.instance == inst.id) {
            let dead_link = match &f.link {
                Link::Live { conn, .. } => conn.is_dead(),
                Link::Waiting { .. } => true,
                Link::Dead | Link::Gone => false,
            };
            if !dead_link {
                continue;
            }
            if survive {
                match &mut f.link {
                    Link::Waiting { reopening, .. } => *reopening = false,
                    other => *other = Link::Waiting { waiters: Vec::new(), reopening: false },
                }
            } else if let Link::Waiting { waiters, .. } = std::mem::replace(&mut f.link, Link::Dead) {
                failed.extend(waiters);
            }
        }
        for w in failed {
            w.parked.fail(Errno::EIO);
        }
    }

    /// Calls waiting on files (for a restarting driver) whose caller was
    /// signalled end with `EINTR`. `signalled` says whether a caller thread
    /// has a signal pending; waiters younger than `min_age` are left alone.
    /// Returns how many ended.
    pub fn interrupt_waiters(&self, min_age: std::time::Duration, signalled: &dyn Fn(u32) -> bool) -> usize {
        let candidates: Vec<(Fh, u32)> = self
            .files
            .lock()
            .iter()
            .flat_map(|(fh, f)| match &f.link {
                Link::Waiting { waiters, .. } => waiters
                    .iter()
                    .filter(|w| w.pid != 0 && w.since.elapsed() >= min_age)
                    .map(|w| (*fh, w.pid))
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            })
            .collect();
        let hit: Vec<(Fh, u32)> = candidates.into_iter().filter(|(_, pid)| signalled(*pid)).collect();
        let mut ended = Vec::new();
        if !hit.is_empty() {
            let mut files = self.files.lock();
            for (fh, pid) in &hit {
                if let Some(Link::Waiting { waiters, .. }) = files.get_mut(fh).map(|f| &mut f.link) {
                    let (out, keep): (Vec<Waiter>, Vec<Waiter>) =
                        std::mem::take(waiters).into_iter().partition(|w| w.pid == *pid);
                    *waiters = keep;
                    ended.extend(out);
                }
            }
        }
        let n = ended.len();
        for w in ended {
            debug!("caller {} of a call waiting for a restart was signalled; answering EINTR", w.pid);
            w.parked.fail(Errno::EINTR);
        }
        n
    }

    /// Closes open file `fh` (FUSE release).
    pub fn release(&self, fh: Fh) {
        let Some(f) = self.files.lock().remove(&fh) else { return };
        if f.backing {
            self.release_backing(f.ino);
        }
        match f.link {
            Link::Live { conn, handle } => {
                conn.call(Call::Close { handle }, &[], Parked::Discard, 0);
            }
            Link::Waiting { waiters, .. } => {
                for w in waiters {
                    w.parked.fail(Errno::EBADF);
                }
            }
            Link::Dead | Link::Gone => {}
        }
    }

    /// Records who to tell when `fh`'s poll readiness changes; returns false
    /// if there is no such file.
    pub fn set_poll(&self, fh: Fh, waker: Box<dyn PollWaker>) -> bool {
        match self.files.lock().get_mut(&fh) {
            Some(f) => {
                f.poll = Some(waker);
                true
            }
            None => false,
        }
    }

    /// A driver says `handle`'s readiness changed: its pollers are told.
    pub(super) fn poll_wake(&self, conn: &Arc<Conn>, handle: Handle) {
        let wakers: Vec<Box<dyn PollWaker>> = self
            .files
            .lock()
            .values_mut()
            .filter(|f| matches!(&f.link, Link::Live { conn: c, handle: h } if *h == handle && Arc::ptr_eq(c, conn)))
            .filter_map(|f| f.poll.take())
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// The number of open files (for status and tests).
    pub fn open_files(&self) -> usize {
        self.files.lock().len()
    }

    /// A new file handle.
    pub(super) fn new_fh(&self) -> Fh {
        Fh(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }
}
