//! `ddm`, the device driver manager of ddf.
//!
//! It starts every driver as its own process, shows their devices as files
//! under a FUSE mount (`/ddf` by default; the root is the null bus), turns
//! file operations on those files into libDriver calls, and answers `ddmctl`
//! on its control socket. See `ARCHITECTURE.md` and ddm(8).
//!
//! Under systemd (`dist/ddm.service`, `Type=notify`) it says when it is
//! ready, what it runs and that it is alive ([`ddm_fs::service`]), and logs
//! to the journal with fields ([`ddm_fs::logging`]).
//!
//! **Where the drivers are.** `--driver-dir`, else the directory of the
//! `ddm` executable if the built-in drivers are there (a build tree:
//! `target/release`), else `../libexec/ddf` beside it (an installed tree:
//! `PREFIX/sbin/ddm` and `PREFIX/libexec/ddf/ddf-*`, as `scripts/install`
//! lays them out).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use fuser::{Config, MountOption, SessionACL};
use log::{error, info, warn};
use nix::sys::signal::{SigSet, Signal};

use ddm_fs::core::{spawn_named, Config as CoreConfig, Core};
use ddm_fs::logging::{self, Chosen, Target};
use ddm_fs::manifest::{Manifest, ManifestError};
use ddm_fs::monitor::Monitor;
use ddm_fs::{control, dma, fs, interrupt, plug, service, spawn, supervise};

/// A built-in driver whose executable tells where the drivers are.
const PROBE_DRIVER: &str = "ddf-null";

/// Where an installed tree keeps the drivers, relative to `ddm`'s directory.
const INSTALLED_DRIVER_DIR: &str = "../libexec/ddf";

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
    /// the ddm executable if the drivers are there, else ../libexec/ddf
    /// beside it].
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

    /// What to log: a level (error, warn, info, debug, trace, off) or
    /// TARGET=LEVEL directives, comma-separated, as RUST_LOG takes them
    /// (this option wins over RUST_LOG) [default: info,fuser=warn].
    #[arg(long, value_name = "LEVEL", value_parser = logging::parse_filter)]
    pub log_level: Option<String>,

    /// Where to log: auto (the journal when standard error is connected to
    /// it, as under systemd; else standard error), journal, or stderr.
    #[arg(long, value_name = "TARGET", value_enum, default_value_t = Target::Auto)]
    pub log_target: Target,

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

    /// Close a control connection that sends nothing, or takes no answer,
    /// for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub control_timeout: u64,
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
        "{0} holds a dead FUSE mount that is not ddf's (Transport endpoint is not connected); run `umount -l {0}` and start ddm again"
    )]
    DeadMount(PathBuf),
    #[error("cannot detach the dead ddf mount on {0}; run `umount -l {0}` and start ddm again")]
    DeadDdfMount(PathBuf, #[source] nix::Error),
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
    let args = Args::parse();
    match logging::init(args.log_level.as_deref(), args.log_target) {
        Chosen::Journal | Chosen::Stderr => {}
        Chosen::StderrNoJournal(e) => warn!("cannot reach the journal ({e}); logging to standard error"),
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ddm: {}", ddf::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Checks the mount point, creating it if missing. A dead mount of ddf's
/// own on it (a ddm that was killed: the FUSE file system `ddf` with no
/// server behind it, "Transport endpoint is not connected") is detached
/// first, and logged; any other dead mount is refused.
fn check_mountpoint(path: &Path) -> Result<(), StartError> {
    // Stacked dead mounts are cleared one by one, a few at most.
    for _ in 0..8 {
        // The kernel may answer a stat of a dead mount from its cache:
        // reading the directory is what asks the file system.
        let looked = std::fs::metadata(path).and_then(|m| match m.is_dir() {
            true => std::fs::read_dir(path).map(|mut entries| Some(entries.next().is_some())),
            false => Ok(None),
        });
        match looked {
            Ok(None) => return Err(StartError::NotDir(path.to_owned())),
            Ok(Some(true)) => return Err(StartError::NotEmpty(path.to_owned())),
            Ok(Some(false)) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                let Some(mount) = dead_ddf_mount(path) else {
                    return Err(StartError::DeadMount(path.to_owned()));
                };
                nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH)
                    .map_err(|e| StartError::DeadDdfMount(path.to_owned(), e))?;
                warn!(
                    "{}: a dead ddf mount was left here (its ddm died without unmounting); detached it (lazy unmount)",
                    mount.display()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return std::fs::create_dir_all(path).map_err(|e| StartError::Mountpoint(path.to_owned(), e));
            }
            Err(e) => return Err(StartError::Mountpoint(path.to_owned(), e)),
        }
    }
    Err(StartError::DeadMount(path.to_owned()))
}

/// The absolute path of the mount on `path`, if the topmost mount there is
/// a FUSE file system named `ddf` (per `/proc/self/mountinfo`). Its parent
/// is alive, so it is resolved; the dead last component is not touched.
fn dead_ddf_mount(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    let parent = abs.parent()?;
    let full = std::fs::canonicalize(parent).ok()?.join(abs.file_name()?);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let ours = is_ddf_mount(&mountinfo, &full.to_string_lossy())?;
    ours.then_some(full)
}

/// Whether the topmost mount on `point` in a `mountinfo` text is a FUSE
/// file system named `ddf` (type `fuse` or `fuse.ddf`, source `ddf`); `None`
/// when nothing is mounted there.
fn is_ddf_mount(mountinfo: &str, point: &str) -> Option<bool> {
    // The last line for a mount point is the mount on top.
    mountinfo.lines().rev().find_map(|line| {
        // id parent major:minor root MOUNTPOINT options... - TYPE SOURCE super-options
        let (head, tail) = line.split_once(" - ")?;
        let at = unescape_mountinfo(head.split(' ').nth(4)?);
        let mut tail = tail.split(' ');
        let (fstype, source) = (tail.next()?, unescape_mountinfo(tail.next()?));
        (at == point).then(|| (fstype == "fuse" || fstype == "fuse.ddf") && source == "ddf")
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
        None => default_driver_dir(&std::env::current_exe().map_err(StartError::DriverDir)?),
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
    // The monitor before the plugin manager: a device is shown added
    // before it is shown bound (the plugin manager binds from the event).
    let monitor = Monitor::new();
    core.listen(monitor.clone());
    core.listen(Arc::new(plug::PlugManager));
    let shown_mountpoint = std::fs::canonicalize(&args.mountpoint).unwrap_or_else(|_| args.mountpoint.clone());
    let shown_mountpoint = shown_mountpoint.display().to_string();
    if service::under_service_manager() {
        core.listen(Arc::new(service::StatusReporter { mountpoint: shown_mountpoint.clone() }));
    }

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
    let rights = control::Rights { mount_dev, admin_gid, mountpoint: shown_mountpoint.clone(), monitor };
    let limits = control::Limits { timeout: Duration::from_secs(args.control_timeout), ..control::Limits::default() };
    spawn_named("control-accept", move || control::serve(c, listener, rights, limits));
    let c = core.clone();
    spawn_named("interrupts", move || interrupt::watch(c));
    let c = core.clone();
    spawn_named("watchdog", move || supervise::watchdog(c));

    info!("mounted {}, control socket {}", args.mountpoint.display(), args.socket.display());
    if service::under_service_manager() {
        // Ready once the mount answers, not merely once it was made.
        if service::wait_mounted(&args.mountpoint, start_timeout) {
            service::ready(&core, &shown_mountpoint);
        } else {
            error!("{} does not answer as a mount; not telling systemd that ddm is ready", args.mountpoint.display());
        }
        if let Some(every) = service::watchdog_interval() {
            let (c, mnt) = (core.clone(), args.mountpoint.clone());
            spawn_named("sd-watchdog", move || service::watchdog(c, mnt, every));
        }
    }
    let sig = signals.wait().map_err(StartError::Signals)?;
    service::stopping();
    info!("{sig:?}: stopping drivers and unmounting {}", args.mountpoint.display());
    shutdown(&core, &args.mountpoint, &args.socket);
    // The FUSE threads are not joined: a client may still hold a file open on
    // a lazily detached mount. Exiting closes /dev/fuse, which ends the
    // connection for everyone.
    std::mem::forget(session);
    Ok(())
}

/// The driver directory when `--driver-dir` is not given: `exe`'s own
/// directory if the built-in drivers are there (a build tree), else
/// `../libexec/ddf` beside it if that exists (an installed tree), else
/// `exe`'s directory (and the drivers' absence is reported as they start).
fn default_driver_dir(exe: &Path) -> PathBuf {
    let own = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if own.join(PROBE_DRIVER).is_file() {
        return own;
    }
    let installed = own.join(INSTALLED_DRIVER_DIR);
    if installed.join(PROBE_DRIVER).is_file() {
        // `PREFIX/libexec/ddf`, without the `..`.
        return std::fs::canonicalize(&installed).unwrap_or(installed);
    }
    own
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
    fn only_a_fuse_mount_named_ddf_is_taken_for_ours() {
        let info = "\
36 25 0:32 / /tmp/a rw,nosuid - tmpfs tmpfs rw
37 25 0:33 / /tmp/a rw,nosuid,nodev - fuse.ddf ddf rw,user_id=0
38 25 0:34 / /tmp/b rw - fuse.sshfs host:/x rw
39 25 0:35 / /tmp/with\\040space rw - fuse ddf rw
40 25 0:36 / /tmp/c rw - fuse.ddf ddf rw
41 25 0:37 / /tmp/c rw - ext4 /dev/vda rw
";
        assert_eq!(is_ddf_mount(info, "/tmp/a"), Some(true), "the topmost mount counts");
        assert_eq!(is_ddf_mount(info, "/tmp/b"), Some(false));
        assert_eq!(is_ddf_mount(info, "/tmp/with space"), Some(true));
        assert_eq!(is_ddf_mount(info, "/tmp/c"), Some(false), "something else is mounted over it");
        assert_eq!(is_ddf_mount(info, "/tmp/none"), None);
        assert_eq!(unescape_mountinfo("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mountinfo("trailing\\04"), "trailing\\04");
    }

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

    #[test]
    fn drivers_are_found_beside_ddm_or_in_the_installed_libexec() {
        let dir = tempfile::tempdir().unwrap();
        let sbin = dir.path().join("sbin");
        let libexec = dir.path().join("libexec/ddf");
        std::fs::create_dir_all(&sbin).unwrap();
        std::fs::create_dir_all(&libexec).unwrap();
        let ddm = sbin.join("ddm");
        // Neither: ddm's own directory.
        assert_eq!(default_driver_dir(&ddm), sbin);
        // Installed.
        std::fs::write(libexec.join(PROBE_DRIVER), "").unwrap();
        assert_eq!(default_driver_dir(&ddm), std::fs::canonicalize(&libexec).unwrap());
        // A build tree: the drivers beside ddm win.
        std::fs::write(sbin.join(PROBE_DRIVER), "").unwrap();
        assert_eq!(default_driver_dir(&ddm), sbin);
    }
}
