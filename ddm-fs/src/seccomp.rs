//! The system call filter of a driver process (seccomp), built with
//! `seccompiler` in ddm before the fork and installed in the child between
//! fork and exec, after the credential switch and Landlock.
//!
//! Every driver gets the **base list**: what a Rust program on the libddf
//! runtime needs to start and to serve its socket (memory, threads, signals,
//! time, reading and writing descriptors it holds, opening files, which
//! Landlock confines, and `execve`, because the filter is already there
//! when ddm execs the driver). A manifest's `[sandbox] syscalls` adds names
//! to it. Some base calls are allowed only with harmless arguments:
//!
//! | call | allowed when |
//! | --- | --- |
//! | `ioctl` | the command is a terminal query or a descriptor flag (`TCGETS`, `TIOCGWINSZ`, `FIONREAD`, `FIONBIO`, `FIOCLEX`, `FIONCLEX`); a manifest naming `ioctl` allows every command |
//! | `clone` | it starts a thread (`CLONE_THREAD`) in no new namespace; `clone3`, whose flags a filter cannot see, fails with `ENOSYS` so that the C library falls back to `clone` |
//! | `tgkill` | the signal goes to a thread of the driver itself (ddm writes the driver's pid into the filter in the child, after the fork) |
//! | `prctl` | it names a thread or mapping, or asks for no new privileges or the seccomp mode |
//! | `prlimit64` | it reads the driver's own limits |
//! | `seccomp` | it adds a filter (filters only ever narrow what is allowed) |
//!
//! Everything else is refused: no sockets of its own, no `ptrace`, no
//! signals to other processes, no mounts, no namespaces, no changes of
//! user, no `process_vm_*`, no `bpf`, no `io_uring`.
//!
//! **What a refused call does** depends on [`SeccompMode`]: `enforce` (the
//! default) makes the kernel send `SIGSYS` (`SECCOMP_RET_TRAP`) without
//! making the call. The libddf runtime's handler reports the call's number
//! (the signal's `si_syscall`) to ddm on the driver's socket and then dies
//! of `SIGSYS`; ddm logs it by name, counts it and restarts the driver like
//! any crash. A program that is not built on libddf, or that replaces the
//! handler, gains nothing by it: the call was never made. `log` lets the
//! call through and the kernel logs it (audit record type 1326), which ddm
//! reads from `/dev/kmsg` and names in its log: the way to learn what a new
//! driver needs. `off` installs no filter.
//!
//! **execve** stays in the base list because the exec of the driver runs
//! under the filter; it widens nothing: a program it starts keeps the
//! filter, the Landlock domain (which lets it execute only the driver and
//! the shared libraries), the user and `no_new_privs`. The libddf runtime
//! forbids `execve` and `execveat` for itself once it runs (a filter of its
//! own on top of ddm's), so a driver built on libddf that tries to run a
//! program dies of `SIGSYS` like any other violation.
//!
//! Names are the kernel's (`syscalls` crate) for this machine's
//! architecture; a name the architecture lacks is an error in a manifest,
//! and skipped in the base list (`open` exists on x86_64, not on aarch64).

use std::collections::BTreeMap;
use std::str::FromStr;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch,
};
use syscalls::Sysno;

/// What a driver's system call filter does with a call outside its list
/// (a manifest's `[sandbox] seccomp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// The call is refused and the driver dies of `SIGSYS`.
    Enforce,
    /// The call is made, and the kernel logs it (ddm names it in its log):
    /// how to find what a new driver needs.
    Log,
    /// No filter.
    Off,
}

impl SeccompMode {
    /// The value of `DDF_SECCOMP` that tells the driver runtime.
    pub fn as_str(self) -> &'static str {
        match self {
            SeccompMode::Enforce => "enforce",
            SeccompMode::Log => "log",
            SeccompMode::Off => "off",
        }
    }
}

/// The number of the system call called `name` on this architecture.
pub fn number(name: &str) -> Option<i64> {
    Sysno::from_str(name).ok().map(|s| i64::from(s.id()))
}

/// The name of system call `nr` of this architecture.
pub fn name(nr: i64) -> Option<&'static str> {
    usize::try_from(nr).ok().and_then(Sysno::new).map(|s| s.name())
}

/// This architecture's `AUDIT_ARCH_*` value (the `si_arch` of `SIGSYS`).
pub const NATIVE_ARCH: u32 = if cfg!(target_arch = "x86_64") {
    0xC000_003E
} else if cfg!(target_arch = "aarch64") {
    0xC000_00B7
} else if cfg!(target_arch = "riscv64") {
    0xC000_00F3
} else {
    0
};

/// A system call as people read it: `socket (41)`, or its number and
/// architecture when it is not this machine's own (a 32-bit call).
pub fn describe(nr: i64, arch: u32) -> String {
    match name(nr) {
        Some(n) if arch == NATIVE_ARCH => format!("{n} ({nr})"),
        _ => format!("number {nr} of architecture {arch:#x}"),
    }
}

/// What every driver may call without conditions.
const BASE: &[&str] = &[
    // Descriptors it holds.
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "lseek",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fstat",
    "newfstatat",
    "statx",
    "fstatfs",
    "statfs",
    "fsync",
    "fdatasync",
    "ftruncate",
    "eventfd2",
    "pipe2",
    "memfd_create",
    // Files, which Landlock confines.
    "openat",
    "open",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getdents64",
    "getcwd",
    // Waiting.
    "poll",
    "ppoll",
    "pselect6",
    "select",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "futex",
    "sched_yield",
    "nanosleep",
    "clock_nanosleep",
    // Sockets it was given (its link to ddm, direct clients).
    "sendmsg",
    "recvmsg",
    "sendto",
    "recvfrom",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
    // Memory.
    "brk",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "msync",
    "mincore",
    // Threads and the C library's start-up.
    "clone3",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "set_tid_address",
    "arch_prctl",
    "exit",
    "exit_group",
    "restart_syscall",
    "sched_getaffinity",
    "getrlimit",
    // Signals to itself.
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "sigaltstack",
    // Who and when.
    "getpid",
    "gettid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "getrandom",
    "uname",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "getrusage",
    // The exec of the driver itself (see the module documentation).
    "execve",
];

/// `ioctl` commands every driver may use. (Their type is `c_ulong` with
/// glibc, `c_int` with musl: hence the casts.)
#[allow(clippy::unnecessary_cast)]
const IOCTLS: &[u64] = &[
    libc::TCGETS as u64,
    libc::TIOCGWINSZ as u64,
    libc::FIONREAD as u64,
    libc::FIONBIO as u64,
    libc::FIOCLEX as u64,
    libc::FIONCLEX as u64,
];

/// `prctl` options every driver may use (`PR_SET_VMA` names anonymous
/// mappings; not in every libc crate yet).
const PRCTLS: &[u64] = &[
    libc::PR_SET_NAME as u64,
    libc::PR_GET_NAME as u64,
    libc::PR_SET_NO_NEW_PRIVS as u64,
    libc::PR_GET_NO_NEW_PRIVS as u64,
    libc::PR_GET_SECCOMP as u64,
    libc::PR_GET_DUMPABLE as u64,
    0x5356_4d41,
];

/// Namespace flags of `clone`: a thread may make none.
const CLONE_NEWANY: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// Stands for the driver's pid in the filter until the child, which knows
/// it, writes it in (above any pid the kernel hands out: `pid_max` is at
/// most 2^22).
const PID_PLACEHOLDER: u32 = 0x7DDF_5EC0;

/// `BPF_JMP | BPF_JEQ | BPF_K`: where a compared constant sits.
const BPF_JEQ_K: u16 = 0x15;

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused the rules.
    #[error("cannot build the system call filter")]
    Build(#[source] seccompiler::BackendError),
    /// The compiled filter does not hold the pid placeholder as expected.
    #[error("the system call filter has {found} places for the driver's pid, not {want}")]
    PidSlots {
        /// Places found.
        found: usize,
        /// Places expected (one per rule that names the pid).
        want: usize,
    },
}

/// A driver's filters, compiled, ready to install in the child.
#[derive(Debug)]
pub struct Filters {
    /// In the order they are installed.
    progs: Vec<BpfProgram>,
    /// Where in `progs` the driver's pid goes: (program, instruction);
    /// `None` when the manifest allows `tgkill` whatever its arguments.
    pid_slot: Option<(usize, usize)>,
    /// What the driver runtime is told (`DDF_SECCOMP`).
    pub mode: SeccompMode,
}

/// Whether this kernel filters system calls (`PR_GET_SECCOMP` answers
/// `EINVAL` when it was built without seccomp).
pub fn available() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no pointer and only returns a number.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP) >= 0 }
}

/// The rules of a driver whose manifest adds `extra` names to the base
/// list: syscall number to the rules any one of which allows it (none:
/// always allowed).
fn rules(extra: &[String]) -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in BASE.iter().filter_map(|n| number(n)) {
        rules.insert(nr, Vec::new());
    }
    let any_of = |arg: u8, len: Len, values: &[u64]| -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
        values.iter().map(|v| SeccompRule::new(vec![Cond::new(arg, len.clone(), Op::Eq, *v)?])).collect()
    };
    let mut cond = |name: &str, rs: Vec<SeccompRule>| {
        if let Some(nr) = number(name) {
            rules.insert(nr, rs);
        }
    };
    cond("ioctl", any_of(1, Len::Dword, IOCTLS)?);
    cond("prctl", any_of(0, Len::Dword, PRCTLS)?);
    let thread = libc::CLONE_THREAD as u64;
    cond(
        "clone",
        vec![SeccompRule::new(vec![
            Cond::new(0, Len::Qword, Op::MaskedEq(thread), thread)?,
            Cond::new(0, Len::Qword, Op::MaskedEq(CLONE_NEWANY), 0)?,
        ])?],
    );
    cond(
        "prlimit64",
        vec![SeccompRule::new(vec![Cond::new(0, Len::Dword, Op::Eq, 0)?, Cond::new(2, Len::Qword, Op::Eq, 0)?])?],
    );
    cond("tgkill", vec![SeccompRule::new(vec![Cond::new(0, Len::Dword, Op::Eq, u64::from(PID_PLACEHOLDER))?])?]);
    cond("seccomp", any_of(0, Len::Dword, &[u64::from(libc::SECCOMP_SET_MODE_FILTER)])?);
    // What the manifest names is allowed whatever the arguments.
    for nr in extra.iter().filter_map(|n| number(n)) {
        rules.insert(nr, Vec::new());
    }
    Ok(rules)
}

/// Builds the filters of a driver, or `None` when it runs without one (its
/// manifest says `off`, or this kernel or architecture cannot filter; the
/// latter is logged).
pub fn prepare(mode: SeccompMode, syscalls: &[String], driver: &str) -> Result<Option<Filters>, SeccompError> {
    let refused = match mode {
        SeccompMode::Off => return Ok(None),
        SeccompMode::Enforce => SeccompAction::Trap,
        SeccompMode::Log => SeccompAction::Log,
    };
    let Ok(arch) = TargetArch::try_from(std::env::consts::ARCH) else {
        log::warn!("driver {driver}: no system call filter on {}; starting it without one", std::env::consts::ARCH);
        return Ok(None);
    };
    if !available() {
        log::warn!("driver {driver}: this kernel has no seccomp filters; starting it without one");
        return Ok(None);
    }
    // clone3 fails with ENOSYS: the C library then uses clone, whose flags
    // the main filter checks. Of two filters the kernel takes the stricter
    // answer, so the main filter must allow clone3 for ENOSYS to win.
    let mut progs = Vec::new();
    if let Some(clone3) = number("clone3") {
        let enosys = SeccompFilter::new(
            BTreeMap::from([(clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .map_err(SeccompError::Build)?;
        progs.push(BpfProgram::try_from(enosys).map_err(SeccompError::Build)?);
    }
    let rules = rules(syscalls).map_err(SeccompError::Build)?;
    let want = number("tgkill").map_or(0, |nr| usize::from(rules.get(&nr).is_some_and(|r| !r.is_empty())));
    let main = SeccompFilter::new(rules, refused, SeccompAction::Allow, arch).map_err(SeccompError::Build)?;
    let main = BpfProgram::try_from(main).map_err(SeccompError::Build)?;
    let slots: Vec<usize> = main
        .iter()
        .enumerate()
        .filter(|(_, i)| i.code == BPF_JEQ_K && i.k == PID_PLACEHOLDER)
        .map(|(n, _)| n)
        .collect();
    if slots.len() != want {
        return Err(SeccompError::PidSlots { found: slots.len(), want });
    }
    progs.push(main);
    let pid_slot = slots.first().map(|i| (progs.len() - 1, *i));
    Ok(Some(Filters { pid_slot, progs, mode }))
}

impl Filters {
    /// Writes the process's pid into the filter and installs it. Runs in
    /// the child between fork and exec, after `PR_SET_NO_NEW_PRIVS`: system
    /// calls and writes to memory prepared before the fork only.
    ///
    /// # Safety
    /// Call only in a freshly forked child that is about to exec.
    pub unsafe fn apply(&mut self) -> std::io::Result<()> {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        if let Some((p, i)) = self.pid_slot {
            self.progs[p][i].k = pid as u32;
        }
        for prog in &self.progs {
            seccompiler::apply_filter(prog).map_err(|e| match e {
                seccompiler::Error::Seccomp(e) | seccompiler::Error::Prctl(e) => e,
                _ => std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        }
        Ok(())
    }

    /// The programs, for tests.
    #[cfg(test)]
    fn programs(&self) -> &[BpfProgram] {
        &self.progs
    }
}

/// What the kernel's log says about a system call a filter in `log` mode
/// let through: the process and the call, from an audit record of type
/// 1326 (`audit: type=1326 ... pid=PID ... syscall=NR ... code=0x7ffc0000`).
pub fn parse_audit(line: &str) -> Option<(u32, i64, u32)> {
    if !line.contains("type=1326") {
        return None;
    }
    let field = |key: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(key)).map(|v| v.trim_matches(|c| c == '"' || c == ','))
    };
    // SECCOMP_RET_LOG: the call was made and logged (not a trap, not a kill).
    if field("code=")? != "0x7ffc0000" {
        return None;
    }
    let pid = field("pid=")?.parse().ok()?;
    let nr = field("syscall=")?.parse().ok()?;
    let arch = u32::from_str_radix(field("arch=")?, 16).ok()?;
    Some((pid, nr, arch))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn filters(mode: SeccompMode, syscalls: &[&str]) -> Option<Filters> {
        let syscalls: Vec<String> = syscalls.iter().map(|s| (*s).to_owned()).collect();
        prepare(mode, &syscalls, "t").unwrap()
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn names_and_numbers_go_both_ways() {
        assert_eq!(number("socket"), Some(41));
        assert_eq!(name(41), Some("socket"));
        assert_eq!(number("no_such_call"), None);
        assert_eq!(name(-1), None);
        assert_eq!(describe(101, NATIVE_ARCH), "ptrace (101)");
        assert_eq!(describe(102, 0x4000_0003), "number 102 of architecture 0x40000003");
        for n in BASE {
            assert!(number(n).is_some(), "{n} is no system call on x86_64");
        }
    }

    #[test]
    fn dangerous_calls_are_not_in_the_base_list() {
        for n in
            ["socket", "ptrace", "kill", "tkill", "mount", "unshare", "setns", "setuid", "bpf", "process_vm_writev"]
        {
            assert!(!BASE.contains(&n), "{n}");
            assert!(!rules(&[]).unwrap().contains_key(&number(n).unwrap()), "{n}");
        }
        assert!(rules(&["socket".into()]).unwrap().contains_key(&number("socket").unwrap()));
        // ioctl is conditional, unless the manifest names it.
        let ioctl = number("ioctl").unwrap();
        assert!(!rules(&[]).unwrap()[&ioctl].is_empty());
        assert!(rules(&["ioctl".into()]).unwrap()[&ioctl].is_empty());
    }

    #[test]
    fn a_filter_has_one_place_for_the_pid_and_off_has_none() {
        if TargetArch::try_from(std::env::consts::ARCH).is_err() || !available() {
            return;
        }
        let f = filters(SeccompMode::Enforce, &["socket"]).unwrap();
        let (p, i) = f.pid_slot.unwrap();
        assert_eq!(f.programs()[p][i].k, PID_PLACEHOLDER);
        let free = filters(SeccompMode::Enforce, &["tgkill"]).unwrap();
        assert_eq!(free.pid_slot, None);
        assert_eq!(f.programs().len(), 2, "the clone3 filter and the main one");
        assert!(filters(SeccompMode::Off, &[]).is_none());
        assert_eq!(filters(SeccompMode::Log, &[]).unwrap().mode, SeccompMode::Log);
    }

    #[test]
    fn audit_records_of_logged_calls_are_read() {
        let line = "6,1234,5678,-;audit: type=1326 audit(1796158358.323:2): auid=4294967295 uid=0 gid=0 \
                    ses=4294967295 pid=13026 comm=\"logt\" exe=\"/tmp/logt\" sig=0 arch=c000003e syscall=41 \
                    compat=0 ip=0x7f4b1c739dc7 code=0x7ffc0000";
        assert_eq!(parse_audit(line), Some((13026, 41, 0xC000_003E)));
        // A trap (SIGSYS) is reported by the driver itself, not here.
        assert_eq!(parse_audit(&line.replace("code=0x7ffc0000", "code=0x30000")), None);
        assert_eq!(parse_audit("6,1,2,-;EXT4-fs (loop0): mounted filesystem"), None);
        assert_eq!(parse_audit("audit: type=1326 pid=x syscall=41 arch=c000003e code=0x7ffc0000"), None);
    }
}
