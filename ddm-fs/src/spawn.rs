//! Starting driver processes: the [`Launcher`] of a running `ddm`.
//!
//! Each incarnation is a new process of the driver's executable with one
//! inherited socket (descriptor 3, named by `DDF_SOCKET_FD`), its instance
//! name in `DDF_INSTANCE`, standard input closed, and, between fork and exec,
//! its own user, `PR_SET_PDEATHSIG`, `PR_SET_NO_NEW_PRIVS` and Landlock
//! ([`crate::sandbox`]). A reaper thread per process waits for it and hands
//! its end to [`crate::supervise::reap`].
//!
//! A driver whose manifest asks for DMA memory (`[dma]`) gets it allocated
//! before its first incarnation starts ([`crate::dma`]); later incarnations
//! find it held for the instance, checked, and get the same memory.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ddf::driver::{INSTANCE_ENV, SOCKET_FD_ENV};
use ddf::ipc::Channel;
use log::{error, info};

use crate::conn::Conn;
use crate::core::{spawn_named, Core, Instance, Launcher, SpawnError};
use crate::dma::Allocator;
use crate::sync::{Mutex, Rank};

/// The descriptor number a driver finds its socket under.
const CHILD_SOCKET_FD: i32 = 3;

/// A spawn request for the spawner thread.
type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Starts `cmd` from one long-lived thread. `PR_SET_PDEATHSIG` fires when
/// the *thread* that forked the child exits, not the process: a driver
/// forked from a short-lived restart thread would be killed as soon as that
/// thread ends. So every driver is forked by this thread, which lives as
/// long as ddm.
fn spawn_child(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        spawn_named("spawner", move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(Rank::Leaf, tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock().send((cmd, reply_tx)).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    reply_rx.recv().map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Starts drivers as processes, and allocates their DMA memory.
#[derive(Debug)]
pub struct ProcessLauncher {
    dma: Allocator,
}

impl Default for ProcessLauncher {
    fn default() -> Self {
        ProcessLauncher::new(Allocator::new(crate::dma::DEFAULT_LIMIT, false))
    }
}

impl ProcessLauncher {
    /// A launcher that takes drivers' DMA memory from `dma`.
    pub fn new(dma: Allocator) -> ProcessLauncher {
        ProcessLauncher { dma }
    }
}

/// Makes sure `inst` holds the DMA memory its manifest asks for: allocated
/// at its first start, checked at each later one (and replaced if the
/// driver took pages out of it). Returns whether it was allocated now. No
/// lock is held while it allocates (which may wait for another ddm's hold
/// on the huge-page pool): `ddmctl status` and the xattrs look meanwhile.
fn ensure_dma(alloc: &Allocator, inst: &Instance) -> Result<bool, SpawnError> {
    let Some(req) = &inst.manifest.dma else { return Ok(false) };
    let stale = {
        let mut held = inst.dma.lock();
        match held.as_ref() {
            Some(r) if r.intact() => return Ok(false),
            Some(_) => held.take(),
            None => None,
        }
    };
    if stale.is_some() {
        error!(
            "driver {}: its DMA memory is not what ddm pinned any more (pages were taken out of its memfd); it gets new memory, and loses what was in it",
            inst.name()
        );
        drop(stale);
    }
    let region = alloc.allocate(inst.name(), req).map_err(|e| {
        let e = SpawnError::Dma(Arc::new(e));
        // Shown by `ddmctl status` also when this was the first start.
        inst.live.lock().last_exit = Some(format!("could not start: {}", ddf::error_chain(&e)));
        e
    })?;
    info!("driver {}: DMA memory: {}", inst.name(), region.describe());
    let mut held = inst.dma.lock();
    if held.is_some() {
        // Another start of the same instance got there first: keep that one.
        return Ok(false);
    }
    *held = Some(region);
    Ok(true)
}

impl Launcher for ProcessLauncher {
    fn launch(&self, core: &Arc<Core>, inst: &Arc<Instance>) -> Result<(), SpawnError> {
        let (ours, theirs) = Channel::pair().map_err(|e| SpawnError::Socket(Arc::new(e)))?;
        let theirs: OwnedFd = theirs.into();
        let child_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&inst.exec);
        cmd.env(SOCKET_FD_ENV, CHILD_SOCKET_FD.to_string()).env(INSTANCE_ENV, inst.name()).stdin(Stdio::null());
        let sandbox = crate::sandbox::prepare(&inst.manifest.sandbox, &inst.exec, inst.name())
            .map_err(|e| SpawnError::Sandbox(Arc::new(e)))?;
        // SAFETY: the closure runs in the forked child before exec and calls
        // only async-signal-safe functions (dup2/fcntl, prctl, and the
        // system calls of the sandbox, prepared before the fork).
        unsafe {
            cmd.pre_exec(move || {
                ddf::ipc::inherit_fd(child_fd, CHILD_SOCKET_FD)?;
                // Its own user first: a change of credentials clears the
                // parent-death signal set below.
                sandbox.apply_ids()?;
                // A driver never outlives its DDM, and never gains privileges.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0
                    || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Landlock needs no_new_privs, set just above.
                sandbox.apply_landlock()
            });
        }
        let policy = &inst.manifest.supervision;
        let conn =
            Arc::new(Conn::new(ours, policy.blocking_calls.clone(), Duration::from_millis(policy.request_timeout_ms)));
        let fresh_dma = ensure_dma(&self.dma, inst)?;
        let child = spawn_child(cmd).map_err(|e| {
            if fresh_dma {
                // Not for an instance that never ran.
                inst.free_dma();
            }
            SpawnError::Exec(inst.exec.clone(), Arc::new(e))
        })?;
        drop(theirs);
        let pid = child.id();
        core.begin_incarnation(inst, conn.clone(), Some(pid));
        info!("driver {}: started pid {pid} ({})", inst.name(), inst.exec.display());
        let core = core.clone();
        let inst = inst.clone();
        spawn_named(&format!("wait-{}", inst.name()), move || crate::supervise::reap(&core, &inst, child, &conn));
        Ok(())
    }
}
