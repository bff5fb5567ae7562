//! Starting driver processes: the [`Launcher`] of a running `ddm`.
//!
//! Each incarnation is a new process of the driver's executable with one
//! inherited socket (descriptor 3, named by `DDF_SOCKET_FD`), its instance
//! name in `DDF_INSTANCE`, standard input closed, and, between fork and exec,
//! its own user, `PR_SET_PDEATHSIG`, `PR_SET_NO_NEW_PRIVS` and Landlock
//! ([`crate::sandbox`]). A reaper thread per process waits for it and hands
//! its end to [`crate::supervise::reap`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ddf::driver::{INSTANCE_ENV, SOCKET_FD_ENV};
use ddf::ipc::Channel;
use log::info;

use crate::conn::Conn;
use crate::core::{spawn_named, Core, Instance, Launcher, SpawnError};
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

/// Starts drivers as processes.
#[derive(Debug, Default)]
pub struct ProcessLauncher;

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
        let child = spawn_child(cmd).map_err(|e| SpawnError::Exec(inst.exec.clone(), Arc::new(e)))?;
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
