//! Confining driver processes: another user, Landlock, and a system call
//! filter.
//!
//! Every driver runs as its own process with `PR_SET_NO_NEW_PRIVS`. On top
//! of that, as its manifest's `[sandbox]` table says:
//!
//! - **user**: the driver runs as this user (and its groups) instead of
//!   ddm's. The built-in drivers that need nothing of root (null, ramdisk,
//!   vbus) run as `nobody`.
//! - **Landlock** (on unless `landlock = false`): the driver can open no file
//!   but what it needs to run (its executable, the system's shared
//!   libraries, its own `/proc` entry) and the paths the manifest names
//!   (`read = ["/sys"]`, `write = [...]`). Descriptors it inherits (its
//!   socket) or is given (a memfd) work as before. On a kernel without
//!   Landlock the driver starts unconfined, with a warning.
//! - **seccomp** (`seccomp = "enforce"` unless the manifest says `"log"` or
//!   `"off"`): the driver may make only the system calls of the base list
//!   and those its manifest adds (`syscalls = ["socket"]`); see
//!   [`crate::seccomp`]. Installed last, right before the exec.
//!
//! Everything that allocates (path strings, the user's groups) is prepared
//! in ddm before the fork; what runs in the child between fork and exec
//! ([`Prepared::apply`]) is system calls only, as it must be.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::manifest::Sandbox;

/// `landlock_create_ruleset(2)`, `landlock_add_rule(2)`,
/// `landlock_restrict_self(2)`: the same numbers on every architecture.
const SYS_LANDLOCK_CREATE_RULESET: libc::c_long = 444;
const SYS_LANDLOCK_ADD_RULE: libc::c_long = 445;
const SYS_LANDLOCK_RESTRICT_SELF: libc::c_long = 446;
const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;

// Filesystem access rights (linux/landlock.h).
const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;
/// Rights that make sense on a file (the others only on directories).
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;

/// The rights the kernel of a Landlock ABI version knows (all of them are
/// denied unless a rule grants them).
fn handled(abi: i64) -> u64 {
    let mut rights = (1u64 << 13) - 1; // ABI 1: bits 0-12
    if abi >= 2 {
        rights |= 1 << 13; // REFER
    }
    if abi >= 3 {
        rights |= TRUNCATE;
    }
    if abi >= 5 {
        rights |= IOCTL_DEV;
    }
    rights
}

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// A sandbox ready to apply in the child.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Switch to this user and group, with these supplementary groups.
    ids: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    /// Landlock: the rights the kernel handles (all denied unless granted),
    /// and paths with the rights they get.
    landlock: Option<(u64, Vec<(CString, u64)>)>,
    /// The system call filters.
    seccomp: Option<crate::seccomp::Filters>,
}

/// Why a sandbox could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The manifest names a user this system does not have.
    #[error("no user {0:?} (sandbox.user takes a user name or number)")]
    NoUser(String),
    /// A path is not a valid C string.
    #[error("bad path {0:?}")]
    BadPath(String),
    /// The system call filter.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

/// The Landlock ABI version this kernel has, or `None`.
pub fn landlock_abi() -> Option<i64> {
    // SAFETY: the "get version" form of landlock_create_ruleset takes no
    // pointer (NULL, 0) and only returns a number.
    let v = unsafe {
        libc::syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v)
}

/// Prepares the sandbox of a driver whose executable is `exec`.
pub fn prepare(sandbox: &Sandbox, exec: &Path, name: &str) -> Result<Prepared, SandboxError> {
    let mut p = Prepared::default();
    if let Some(user) = &sandbox.user {
        let found = match user.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten(),
            Err(_) => nix::unistd::User::from_name(user).ok().flatten(),
        };
        let u = found.ok_or_else(|| SandboxError::NoUser(user.clone()))?;
        let cname = CString::new(u.name.as_bytes()).map_err(|_| SandboxError::NoUser(user.clone()))?;
        let groups = nix::unistd::getgrouplist(&cname, u.gid)
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|_| vec![u.gid.as_raw()]);
        p.ids = Some((u.uid.as_raw(), u.gid.as_raw(), groups));
    }
    if sandbox.landlock {
        match landlock_abi() {
            None => log::warn!("driver {name}: this kernel has no Landlock; starting it unconfined"),
            Some(abi) => {
                let all = handled(abi);
                let read = READ_FILE | READ_DIR | (all & IOCTL_DEV);
                let mut rules: Vec<(CString, u64)> = Vec::new();
                let mut add = |path: &Path, rights: u64| -> Result<(), SandboxError> {
                    let c = CString::new(path.as_os_str().as_bytes())
                        .map_err(|_| SandboxError::BadPath(path.display().to_string()))?;
                    rules.push((c, rights & all));
                    Ok(())
                };
                // What any program needs to start: its executable and the
                // dynamic loader's libraries.
                add(exec, READ_FILE | EXECUTE)?;
                for lib in ["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache"] {
                    add(Path::new(lib), READ_FILE | READ_DIR | EXECUTE)?;
                }
                // Its own /proc entry (the Rust runtime reads it): opened in
                // the child, /proc/self is the child's.
                add(Path::new("/proc/self"), READ_FILE | READ_DIR)?;
                for path in &sandbox.read {
                    add(Path::new(path), read)?;
                }
                for path in &sandbox.write {
                    add(Path::new(path), read | WRITE_FILE | TRUNCATE)?;
                }
                p.landlock = Some((all, rules));
            }
        }
    }
    p.seccomp = crate::seccomp::prepare(sandbox.seccomp, &sandbox.syscalls, name)?;
    Ok(p)
}

impl Prepared {
    /// The filter's mode, if the driver gets one (what `DDF_SECCOMP` tells
    /// the driver runtime).
    pub fn seccomp_mode(&self) -> Option<crate::seccomp::SeccompMode> {
        self.seccomp.as_ref().map(|f| f.mode)
    }

    /// Installs the system call filters. Runs in the child between fork and
    /// exec, last of all, after `PR_SET_NO_NEW_PRIVS`: system calls only.
    ///
    /// # Safety
    /// Call only in a freshly forked child that is about to exec.
    pub unsafe fn apply_seccomp(&mut self) -> std::io::Result<()> {
        match &mut self.seccomp {
            // SAFETY: the caller's promise is ours.
            Some(f) => unsafe { f.apply() },
            None => Ok(()),
        }
    }

    /// Switches to the sandbox's user. Runs in the child between fork and
    /// exec: system calls only, no allocation.
    ///
    /// # Safety
    /// Call only in a freshly forked child that is about to exec.
    pub unsafe fn apply_ids(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        if let Some((uid, gid, groups)) = &self.ids {
            // SAFETY: setgroups reads `groups.len()` gids from a live slice;
            // setresgid/setresuid take plain numbers.
            unsafe {
                if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setresgid(*gid, *gid, *gid) < 0
                    || libc::setresuid(*uid, *uid, *uid) < 0
                {
                    return Err(err());
                }
            }
        }
        Ok(())
    }

    /// Confines the files the process can open (Landlock). Runs in the
    /// child between fork and exec, after `PR_SET_NO_NEW_PRIVS`: system
    /// calls only, no allocation.
    ///
    /// # Safety
    /// Call only in a freshly forked child that is about to exec.
    pub unsafe fn apply_landlock(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        if let Some((handled, rules)) = &self.landlock {
            let attr = RulesetAttr { handled_access_fs: *handled };
            // SAFETY: `attr` is a live RulesetAttr of the size passed.
            let ruleset = unsafe {
                libc::syscall(
                    SYS_LANDLOCK_CREATE_RULESET,
                    &attr as *const RulesetAttr,
                    std::mem::size_of::<RulesetAttr>(),
                    0u32,
                )
            };
            if ruleset < 0 {
                return Err(err());
            }
            let ruleset = ruleset as libc::c_int;
            for (path, rights) in rules {
                // SAFETY: `path` is a NUL-terminated string that outlives the call.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
                if fd < 0 {
                    // A path this system does not have (/lib64, ...): nothing to allow.
                    continue;
                }
                // SAFETY: fstat writes one `stat` into a live, zeroed struct.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                let is_dir = unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                let allowed = if is_dir { *rights } else { *rights & FILE_RIGHTS };
                let rule = PathBeneathAttr { allowed_access: allowed, parent_fd: fd };
                // SAFETY: `rule` is a live PathBeneathAttr; `fd` is ours and
                // closed right after.
                let rc = unsafe {
                    let rc = libc::syscall(
                        SYS_LANDLOCK_ADD_RULE,
                        ruleset,
                        LANDLOCK_RULE_PATH_BENEATH,
                        &rule as *const PathBeneathAttr,
                        0u32,
                    );
                    libc::close(fd);
                    rc
                };
                if rc < 0 {
                    return Err(err());
                }
            }
            // SAFETY: restricts only this (single-threaded, about to exec)
            // process; no_new_privs is already set, as Landlock requires.
            let rc = unsafe { libc::syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0u32) };
            // SAFETY: closing our own ruleset descriptor.
            unsafe { libc::close(ruleset) };
            if rc < 0 {
                return Err(err());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_rights_grow_with_the_abi() {
        assert_eq!(handled(1), (1 << 13) - 1);
        assert_eq!(handled(3) & TRUNCATE, TRUNCATE);
        assert_eq!(handled(4) & IOCTL_DEV, 0);
        assert_eq!(handled(5) & IOCTL_DEV, IOCTL_DEV);
    }

    #[test]
    fn the_rule_struct_is_packed_as_the_kernel_wants() {
        assert_eq!(std::mem::size_of::<PathBeneathAttr>(), 12);
        assert_eq!(std::mem::size_of::<RulesetAttr>(), 8);
    }
}
