//! Interrupting parked requests whose caller was signalled.
//!
//! When a process blocked in `read` on a FUSE file is signalled, the kernel
//! sends `FUSE_INTERRUPT` and waits for the file system to answer the
//! original request. fuser 0.18 answers `FUSE_INTERRUPT` itself with
//! `ENOSYS` (its `src/request.rs`), after which the kernel stops sending
//! interrupts and just waits: `timeout 1 cat /ddf/keyboard0` would hang in
//! state D forever.
//!
//! The way around it without patching fuser: a watcher thread looks at every
//! request that has been waiting for a while, parked with a driver or queued
//! on a file whose driver restarts, and reads `/proc/<tid>/status` of the
//! calling thread (FUSE tells us the thread id). If a signal is pending
//! there (`SigPnd` or `ShdPnd`, minus `SigBlk`), the caller wants out: the
//! request is answered `EINTR` at once, the driver is sent a cancel for it,
//! and the driver's eventual answer is dropped. The caller then sees
//! `EINTR` (and its signal): `cat` dies of its `SIGTERM`, a Python reader
//! runs its handler and retries the read (PEP 475), which is exactly what a
//! read interrupted on any Linux device does.
//!
//! Cost: the scan looks only at requests older than [`MIN_AGE`], every
//! [`PERIOD`]; an idle DDM scans nothing. Latency from signal to return is at
//! most about `PERIOD + MIN_AGE`.

use std::sync::Arc;
use std::time::Duration;

use ddf::proto::{DdmToDriver, Errno, RequestId};
use log::debug;

use crate::core::Core;
use crate::reply::Parked;

/// How often parked requests are checked.
pub const PERIOD: Duration = Duration::from_millis(20);

/// Requests younger than this are left alone (most answers come sooner).
pub const MIN_AGE: Duration = Duration::from_millis(10);

/// Whether thread `tid` has a signal pending that it does not block.
pub fn signal_pending(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        // The caller is gone: nothing waits for the answer any more.
        return true;
    };
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    let blocked = field("SigBlk:");
    // SIGKILL (bit 8) cannot be blocked.
    pending & (!blocked | (1 << (libc::SIGKILL - 1))) != 0
}

/// Runs the watcher until the DDM stops.
pub fn watch(core: Arc<Core>) {
    loop {
        std::thread::sleep(PERIOD);
        if core.is_stopping() {
            return;
        }
        scan(&core, MIN_AGE, &signal_pending);
    }
}

/// One look at every request older than `min_age`: those whose caller
/// `signalled` says was signalled end with `EINTR` (a parked one is also
/// cancelled with its driver). Returns how many ended.
pub fn scan(core: &Core, min_age: Duration, signalled: &dyn Fn(u32) -> bool) -> usize {
    let mut ended = core.interrupt_waiters(min_age, signalled);
    for inst in core.all() {
        let Some(conn) = inst.conn() else { continue };
        let old: Vec<(RequestId, u32)> = conn
            .pending
            .lock()
            .iter()
            .filter(|(_, p)| p.pid != 0 && p.parked.is_awaited() && p.since.elapsed() >= min_age)
            .map(|(id, p)| (*id, p.pid))
            .collect();
        for (id, pid) in old {
            if !signalled(pid) {
                continue;
            }
            let parked = match conn.pending.lock().get_mut(&id) {
                Some(p) => std::mem::replace(&mut p.parked, Parked::Discard),
                None => continue,
            };
            debug!("driver {}: caller {pid} of request {} was signalled; answering EINTR", inst.name(), id.0);
            parked.fail(Errno::EINTR);
            ended += 1;
            let _ = conn.send(&DdmToDriver::Cancel { id }, &[]);
        }
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_thread_has_no_pending_signal_and_a_missing_one_counts_as_gone() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        assert!(!signal_pending(tid));
        assert!(signal_pending(u32::MAX / 2));
    }
}
