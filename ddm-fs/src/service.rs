//! ddm as a systemd service (`Type=notify`, see `dist/ddm.service` and the
//! `ddm.service` section of ddm(8)).
//!
//! When `NOTIFY_SOCKET` is set (systemd sets it for a `Type=notify`
//! service), ddm tells the service manager through the `sd-notify` crate:
//!
//! - `READY=1` once the mount answers (a `stat` of the mount point through
//!   the FUSE mount succeeds) and the built-in drivers were waited for, with
//!   a `STATUS=` line;
//! - `STATUS=` again whenever a driver starts, becomes ready, dies or is
//!   revived: one line, `serving /ddf: 5 drivers running, 0 restarting,
//!   0 quarantined, 0 stopped`;
//! - `WATCHDOG=1` every half `WATCHDOG_USEC` (systemd's `WatchdogSec=`), from
//!   ddm's service watchdog thread, but only after a health check passes:
//!   the tree and every driver's state can be locked, and the mount answers
//!   a `statfs` (which the kernel never answers from a cache: it goes
//!   through a FUSE worker). A ddm whose locks or FUSE workers hang stops
//!   sending it, and systemd restarts it;
//! - `STOPPING=1` when it begins to shut down.
//!
//! Without `NOTIFY_SOCKET` all of this is skipped. Nothing here ever blocks
//! ddm on the service manager: a notification is one datagram, and a
//! failure to send one is logged at debug level.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ddf::proto::DriverState;
use log::debug;
use sd_notify::NotifyState;

use crate::core::{Core, Event, Listener};

/// Whether ddm was started by a service manager that listens for
/// notifications.
pub fn under_service_manager() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!("sd_notify {states:?}: {e}");
    }
}

/// The one-line summary for `STATUS=`.
pub fn summary(core: &Core, mountpoint: &str) -> String {
    let (mut running, mut restarting, mut failed, mut stopped) = (0, 0, 0, 0);
    for inst in core.all() {
        match inst.state() {
            DriverState::Running => running += 1,
            DriverState::Starting | DriverState::Restarting => restarting += 1,
            DriverState::Failed => failed += 1,
            DriverState::Stopped => stopped += 1,
        }
    }
    let s = |n: usize| if n == 1 { "" } else { "s" };
    format!(
        "serving {mountpoint}: {running} driver{} running, {restarting} restarting, {failed} quarantined, {stopped} stopped",
        s(running)
    )
}

/// Waits until `mountpoint` is the root of a mount that answers (its
/// device differs from its parent's), at most `timeout`.
pub fn wait_mounted(mountpoint: &Path, timeout: Duration) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = mountpoint.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let end = Instant::now() + timeout;
    loop {
        let ours = std::fs::metadata(mountpoint).map(|m| m.dev());
        let theirs = std::fs::metadata(&parent).map(|m| m.dev());
        if let (Ok(a), Ok(b)) = (ours, theirs) {
            if a != b {
                return true;
            }
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `READY=1` with the summary.
pub fn ready(core: &Core, mountpoint: &str) {
    let status = summary(core, mountpoint);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping drivers and unmounting")]);
}

/// Sends `STATUS=` when the drivers' states change.
#[derive(Debug)]
pub struct StatusReporter {
    /// The mount point, as the summary names it.
    pub mountpoint: String,
}

impl Listener for StatusReporter {
    fn on_event(&self, core: &Arc<Core>, event: &Event) {
        match event {
            Event::Started { .. } | Event::Ready { .. } | Event::Died { .. } | Event::Revived { .. } => {
                let status = summary(core, &self.mountpoint);
                send(&[NotifyState::Status(&status)]);
            }
            Event::DeviceAdded { .. }
            | Event::BusAdded { .. }
            | Event::NodeRemoved { .. }
            | Event::BoundNodeRemoved { .. }
            | Event::Released { .. }
            | Event::PermChanged { .. }
            | Event::Bound { .. }
            | Event::Unbound { .. } => {}
        }
    }
}

/// How often to send `WATCHDOG=1`: half of what the service manager asked
/// for (`WATCHDOG_USEC`, for this process), if it asked.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// The service watchdog: every `interval`, checks that ddm is healthy and
/// then sends `WATCHDOG=1`. Runs until ddm stops.
pub fn watchdog(core: Arc<Core>, mountpoint: PathBuf, interval: Duration) {
    loop {
        std::thread::sleep(interval);
        if core.is_stopping() {
            return;
        }
        match healthy(&core, &mountpoint) {
            Ok(()) => send(&[NotifyState::Watchdog]),
            Err(why) => log::error!("service watchdog: {why}; not telling systemd that ddm is alive"),
        }
    }
}

/// The health check behind `WATCHDOG=1`. A deadlock or hung FUSE workers
/// make it hang, which is the point: no ping, and systemd acts.
fn healthy(core: &Core, mountpoint: &Path) -> Result<(), String> {
    drop(core.tree.read());
    for inst in core.all() {
        drop(inst.live.lock());
    }
    nix::sys::statfs::statfs(mountpoint).map(|_| ()).map_err(|e| format!("statfs {}: {e}", mountpoint.display()))
}
