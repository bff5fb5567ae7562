//! `ddm`, the device driver manager of ddf.
//!
//! It starts every driver as its own process, shows their devices as files
//! under a FUSE mount (`/ddf` by default; the root is the null bus), turns
//! file operations on those files into libDriver calls, and answers `ddmctl`
//! on its control socket. See `ARCHITECTURE.md` and ddm(8).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use fuser::{Config, MountOption, SessionACL};
use log::{error, info, warn};
use nix::sys::signal::{SigSet, Signal};

use ddm_fs::core::{spawn_named, Config as CoreConfig, Core};
use ddm_fs::manifest::{Manifest, ManifestError};
use ddm_fs::{control, dma, fs, interrupt, plug, spawn, supervise};

/// The device driver manager: mounts the ddf file system and runs drivers.
#[derive(Debug, Parser)]
#[command(name = "ddm", version, about, long_about = None)]
pub struct Args {
    /// Where to mount the device tree (created if missing; must be empty).
    #[arg(default_value = "/ddf")]
    pub mountpoint: PathBuf,

    /// Control socket for ddmctl.
    #[arg(long, value_name = "PATH", default_value = ddf::ddm::DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,

    /// Directory holding the driver executables [default: the directory of
    /// the ddm executable].
    #[arg(long, value_name = "DIR")]
    pub driver_dir: Option<PathBuf>,

    /// Load one more driver from its manifest file (repeatable).
    #[arg(long = "manifest", value_name = "FILE")]
    pub manifests: Vec<PathBuf>,

    /// Do not start the built-in drivers (null, keyboard, ramdisk).
    #[arg(long)]
    pub no_builtin: bool,

    /// FUSE worker threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,

    /// How long to wait for each driver to become ready at start, in seconds.
    #[arg(long, default_value_t = 10)]
    pub start_timeout: u64,

    /// Members of this group (name or number) may use ddmctl's commands that
    /// change things, besides root.
    #[arg(long, value_name = "GROUP")]
    pub admin_group: Option<String>,

    /// Add permission rules from FILE after the built-in ones (repeatable;
    /// see ddf.rules(5)).
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,

    /// Where the permission state (chmod, chown, ACLs made on the mount) is kept.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ddf")]
    pub state_dir: PathBuf,

    /// The shared-memory fast path for calls to drivers (`off`: every call
    /// takes the driver's socket).
    #[arg(long, value_name = "on|off", env = "DDF_FAST_PATH", default_value = "on", value_parser = ["on", "off"])]
    pub fast_path: String,

    /// The most DMA memory (manifests' [dma]) all drivers together may hold,
    /// as a size: 64M, 1G, 0 for none.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub dma_limit: u64,

    /// Take DMA memory only from the huge pages reserved beforehand
    /// (vm.nr_hugepages); never let the kernel allocate more.
    #[arg(long)]
    pub dma_reserved_only: bool,
}

/// Parses a size argument (`64M`, `1G`, `67108864`).
fn parse_size(s: &str) -> Result<u64, String> {
    ddf::params::parse_size(s).map_err(|e| e.to_string())
}

/// Why ddm could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0} is not a directory; give ddm an empty directory to mount on")]
    NotDir(PathBuf),
    #[error("{0} is not empty; mount on an empty directory (or remove what is in it)")]
    NotEmpty(PathBuf),
    #[error(
        "{0} holds a dead FUSE mount (Transport endpoint is not connected); run `umount -l {0}` and start ddm again"
    )]
    DeadMount(PathBuf),
    #[error("cannot use {0}")]
    Mountpoint(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("cannot mount on {0} (ddm needs root and /dev/fuse)")]
    Mount(PathBuf, #[source] std::io::Error),
    #[error("cannot find the driver directory (pass --driver-dir)")]
    DriverDir(#[source] std::io::Error),
    #[error("signal setup failed")]
    Signals(#[source] nix::Error),
    #[error("no group {0:?} (--admin-group takes a group name or number)")]
    AdminGroup(String),
    #[error("bad rules, not starting")]
    Rules(#[from] access_policy::RulesError),
    #[error("cannot create the state directory {0}")]
    StateDir(PathBuf, #[source] std::io::Error),
}

/// Resolves `--admin-group`.
fn admin_gid(group: &str) -> Result<u32, StartError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(StartError::AdminGroup(group.to_owned())),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,fuser=warn")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ddm: {}", ddf::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Checks the mount point, creating it if missing.
fn check_mountpoint(path: &Path) -> Result<(), StartError> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Err(StartError::NotDir(path.to_owned())),
        Ok(_) => {
            let mut entries = std::fs::read_dir(path).map_err(|e| StartError::Mountpoint(path.to_owned(), e))?;
            if entries.next().is_some() {
                return Err(StartError::NotEmpty(path.to_owned()));
            }
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(StartError::DeadMount(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path).map_err(|e| StartError::Mountpoint(path.to_owned(), e))
        }
        Err(e) => Err(StartError::Mountpoint(path.to_owned(), e)),
    }
}

fn run(args: &Args) -> Result<(), StartError> {
    check_mountpoint(&args.mountpoint)?;
    let admin_gid = args.admin_group.as_deref().map(admin_gid).transpose()?;

    // Every thread started from here on inherits this mask: the signals
    // arrive only where main waits for them.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().map_err(StartError::Signals)?;

    let driver_dir = match &args.driver_dir {
        Some(d) => d.clone(),
        None => {
            std::env::current_exe().map_err(StartError::DriverDir)?.parent().map(Path::to_path_buf).unwrap_or_default()
        }
    };
    let mut manifests: Vec<Manifest> = if args.no_builtin { Vec::new() } else { Manifest::builtin()? };
    for m in &args.manifests {
        manifests.push(Manifest::load(m)?);
    }
    for (i, m) in manifests.iter().enumerate() {
        if manifests[..i].iter().any(|o| o.name == m.name) {
            return Err(ManifestError::Duplicate(m.name.clone()).into());
        }
    }
    let mut policy = access_policy::Policy::builtin();
    for r in &args.rules {
        policy.add_file(r)?;
    }
    std::fs::create_dir_all(&args.state_dir).map_err(|e| StartError::StateDir(args.state_dir.clone(), e))?;
    let (perms, recovered) = access_policy::PermStore::open(args.state_dir.join("permissions.json"));
    if let Some(r) = recovered {
        error!("{r}");
    }
    let listener = control::bind(&args.socket)?;
    let start_timeout = Duration::from_secs(args.start_timeout);
    let fast_path = args.fast_path == "on";
    let max_spinners = ddm_fs::fast::default_spinners();
    let config = CoreConfig { driver_dir, start_timeout, fast_path, max_spinners, fixed_spin: None };
    let core = Core::new(manifests, config, policy, perms);
    let dma = dma::Allocator::new(args.dma_limit, args.dma_reserved_only);
    core.set_launcher(Arc::new(spawn::ProcessLauncher::new(dma)));
    core.listen(Arc::new(plug::PlugManager));

    // Drivers first, so the tree is populated when the mount appears.
    for inst in core.all() {
        let inst = &inst;
        if !inst.manifest.autostart {
            continue;
        }
        if let Err(e) = core.start(inst) {
            error!("driver {}: {}", inst.name(), ddf::error_chain(&e));
            continue;
        }
        let state = inst.wait_ready(start_timeout);
        if state != ddf::proto::DriverState::Running {
            warn!("driver {}: not ready at start ({})", inst.name(), state.as_str());
        }
    }

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("ddf".into()),
        MountOption::Subtype("ddf".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(usize::from(args.threads));
    // One shared /dev/fuse descriptor: with cloned descriptors the kernel
    // takes the answer to a FUSE_INTERRUPT only on the descriptor that read
    // it, and fuser's own answer (ENOSYS) from another thread would be
    // refused and logged as an error on every Ctrl-C. Interrupts are ended
    // by the interrupt watcher either way.
    config.clone_fd = false;
    let session = fuser::Session::new(fs::DdfFs::new(core.clone()), &args.mountpoint, &config).map_err(|e| {
        core.stop_all(Duration::from_secs(1));
        StartError::Mount(args.mountpoint.clone(), e)
    })?;
    core.set_notifier(Box::new(fs::KernelNotify::start(session.notifier())));
    let session = session.spawn().map_err(|e| StartError::Mount(args.mountpoint.clone(), e))?;

    let c = core.clone();
    let mount_dev = std::fs::metadata(&args.mountpoint).map(|m| std::os::unix::fs::MetadataExt::dev(&m)).unwrap_or(0);
    let rights = control::Rights {
        mount_dev,
        admin_gid,
        mountpoint: std::fs::canonicalize(&args.mountpoint)
            .unwrap_or_else(|_| args.mountpoint.clone())
            .display()
            .to_string(),
    };
    spawn_named("control-accept", move || control::serve(c, listener, rights));
    let c = core.clone();
    spawn_named("interrupts", move || interrupt::watch(c));
    let c = core.clone();
    spawn_named("watchdog", move || supervise::watchdog(c));

    info!("serving {} (control socket {})", args.mountpoint.display(), args.socket.display());
    let sig = signals.wait().map_err(StartError::Signals)?;
    info!("{sig:?}: stopping drivers and unmounting {}", args.mountpoint.display());
    shutdown(&core, &args.mountpoint, &args.socket);
    // The FUSE threads are not joined: a client may still hold a file open on
    // a lazily detached mount. Exiting closes /dev/fuse, which ends the
    // connection for everyone.
    std::mem::forget(session);
    Ok(())
}

/// Stops drivers (failing what is in flight), unmounts, removes the socket.
fn shutdown(core: &Arc<Core>, mountpoint: &Path, socket: &Path) {
    core.stop_all(Duration::from_secs(2));
    match nix::mount::umount2(mountpoint, nix::mount::MntFlags::empty()) {
        Ok(()) => {}
        Err(nix::Error::EBUSY) => {
            warn!("{} is busy; detaching it (lazy unmount)", mountpoint.display());
            if let Err(e) = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
                error!("cannot unmount {}: {e}", mountpoint.display());
            }
        }
        Err(e) => error!("cannot unmount {}: {e}", mountpoint.display()),
    }
    let _ = std::fs::remove_file(socket);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_bad_rules_file_is_named_once_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.rules");
        std::fs::write(&path, "path /ddf/zero mode 999999\n").unwrap();
        let err = access_policy::Policy::builtin().add_file(&path).unwrap_err();
        let cause = err.to_string();
        let said = ddf::error_chain(&StartError::from(err));
        assert!(said.starts_with("bad rules, not starting: "), "{said}");
        assert_eq!(said.matches(cause.as_str()).count(), 1, "{said}");
    }
}
