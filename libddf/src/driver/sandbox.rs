//! The driver's side of its system call filter.
//!
//! The DDM installs the filter before it execs the driver and says so in
//! [`SECCOMP_ENV`]. A refused call then makes the kernel send `SIGSYS`
//! without making the call (`SECCOMP_RET_TRAP`). The handler installed here
//! tells the DDM which call it was (the signal's `si_syscall`, in a
//! [`DriverToDdm::SandboxViolation`] on the driver's socket) and lets the
//! process die of `SIGSYS`, so that the DDM logs the call by name and
//! restarts the driver like any crash.
//!
//! The runtime also adds a filter of its own on top of the DDM's: once it
//! runs, `execve` and `execveat` are refused too (the DDM's filter must
//! allow them, for its exec of the driver), unless the manifest names them
//! (`DDF_SECCOMP` then ends in `+exec`). A filter only ever narrows what
//! the kernel allows.
//!
//! Everything the handler does is async-signal-safe: it reads the siginfo,
//! encodes a frame into a buffer on its stack from a prefix prepared at
//! start, makes one `send(2)`, and raises `SIGSYS` again with the default
//! action.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use log::warn;
use seccompiler::{SeccompAction, SeccompFilter, TargetArch};

use super::SECCOMP_ENV;
use crate::proto::DriverToDdm;

/// The socket the handler reports on.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

/// The start of the report's header: the variant index of
/// [`DriverToDdm::SandboxViolation`] as postcard encodes it, and its length.
static PREFIX: OnceLock<([u8; 5], usize)> = OnceLock::new();

/// `si_code` of a `SIGSYS` sent by a seccomp filter.
const SYS_SECCOMP: i32 = 1;

/// The head of a `siginfo_t` for `SIGSYS` (`_sigsys` in the kernel's
/// union, which starts where a pointer is aligned after the three ints).
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    call_addr: *mut libc::c_void,
    syscall: i32,
    arch: u32,
}

/// Sets up reporting and the runtime's own filter, if the DDM runs this
/// driver under a filter; `fd` is the socket to the DDM.
pub(super) fn install(fd: i32) {
    let value = std::env::var(SECCOMP_ENV).unwrap_or_default();
    let (mode, exec) = match value.split_once('+') {
        Some((mode, "exec")) => (mode, true),
        _ => (value.as_str(), false),
    };
    let action = match mode {
        "enforce" => SeccompAction::Trap,
        "log" => SeccompAction::Log,
        _ => return,
    };
    let Some(prefix) = header_prefix() else {
        warn!("cannot encode a sandbox report; refused system calls will go unnamed");
        return;
    };
    let _ = PREFIX.set(prefix);
    REPORT_FD.store(fd, Ordering::Release);
    // SAFETY: a zeroed sigaction is valid; the handler is an extern "C"
    // function of the signature SA_SIGINFO expects, and it only makes
    // async-signal-safe calls.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_sigsys;
        sa.sa_sigaction = handler as libc::sighandler_t;
        // Reset to the default action on entry and leave SIGSYS unblocked,
        // so that raising it again in the handler ends the process.
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        warn!("cannot handle SIGSYS: {}; refused system calls will go unnamed", std::io::Error::last_os_error());
    }
    if !exec {
        if let Err(e) = forbid_exec(action) {
            warn!("cannot add the runtime's own system call filter (no execve): {e}");
        }
    }
}

/// Refuses `execve` and `execveat` from now on, in every thread.
fn forbid_exec(action: SeccompAction) -> Result<(), String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("{e:?}"))?;
    let rules = [libc::SYS_execve, libc::SYS_execveat].into_iter().map(|nr| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch).map_err(|e| e.to_string())?;
    let prog = seccompiler::BpfProgram::try_from(filter).map_err(|e| e.to_string())?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| e.to_string())
}

/// The postcard bytes of the variant index of `SandboxViolation`: the
/// encoding of one with both fields 0, less those two one-byte zeros.
fn header_prefix() -> Option<([u8; 5], usize)> {
    let bytes = postcard::to_stdvec(&DriverToDdm::SandboxViolation { syscall: 0, arch: 0 }).ok()?;
    let len = bytes.len().checked_sub(2).filter(|n| (1..=5).contains(n))?;
    let mut prefix = [0u8; 5];
    prefix[..len].copy_from_slice(&bytes[..len]);
    Some((prefix, len))
}

/// A LEB128 varint of `v` into `out` at `at`; returns the new end.
fn varint(out: &mut [u8], mut at: usize, mut v: u32) -> usize {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[at] = byte;
            return at + 1;
        }
        out[at] = byte | 0x80;
        at += 1;
    }
}

/// The whole frame of a report (length prefix and header), without
/// allocating; returns its length.
fn encode_report(out: &mut [u8; 32], prefix: &([u8; 5], usize), syscall: i32, arch: u32) -> usize {
    let (bytes, len) = prefix;
    let mut at = 4;
    out[at..at + len].copy_from_slice(&bytes[..*len]);
    at += len;
    // postcard writes an i32 zig-zag encoded.
    let zigzag = ((syscall << 1) ^ (syscall >> 31)) as u32;
    at = varint(out, at, zigzag);
    at = varint(out, at, arch);
    out[..4].copy_from_slice(&((at - 4) as u32).to_le_bytes());
    at
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t, whose
    // head SigsysInfo mirrors.
    let si = unsafe { &*(info as *const SigsysInfo) };
    let fd = REPORT_FD.load(Ordering::Acquire);
    if si.code == SYS_SECCOMP && fd >= 0 {
        if let Some(prefix) = PREFIX.get() {
            let mut frame = [0u8; 32];
            let len = encode_report(&mut frame, prefix, si.syscall, si.arch);
            // SAFETY: send(2) reads `len` bytes of a live stack buffer; a
            // full socket fails at once (MSG_DONTWAIT) and the report is lost.
            unsafe { libc::send(fd, frame.as_ptr().cast(), len, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        }
    }
    // SA_RESETHAND made the action the default one again: die of SIGSYS.
    // SAFETY: raise(3) is async-signal-safe; ending the process is the point.
    unsafe { libc::raise(libc::SIGSYS) };
}

/// `ddmctl inject NAME forbidden-syscall`: opens a socket, traces another
/// process and runs a program, the way a compromised driver would. Under
/// an enforcing filter the first of them kills the driver; without one
/// they are made harmless (the socket is closed, pid 1 is not ours to
/// trace, `/` is no program) and the runtime goes on.
pub(super) fn try_forbidden() {
    // SAFETY: socket(2) and close(2) on the descriptor it returned.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd >= 0 {
            libc::close(fd);
        }
    }
    // SAFETY: PTRACE_PEEKDATA of a process we do not trace only fails.
    unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, 1 as libc::pid_t, 0usize, 0usize) };
    let argv: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: execve(2) with a NUL-terminated path and empty, NULL-ended
    // argument and environment lists; "/" is a directory, so it fails.
    unsafe { libc::execve(c"/".as_ptr(), argv.as_ptr(), argv.as_ptr()) };
    warn!("forbidden-syscall: socket, ptrace and execve did not kill this driver: it runs without an enforcing system call filter");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_handlers_report_is_the_frame_ddm_decodes() {
        let prefix = header_prefix().unwrap();
        for (nr, arch) in [(41, 0xC000_003Eu32), (0, 0), (101, 0x4000_0003), (-1, u32::MAX), (i32::MAX, 7)] {
            let mut out = [0u8; 32];
            let len = encode_report(&mut out, &prefix, nr, arch);
            let want = DriverToDdm::SandboxViolation { syscall: nr, arch };
            assert_eq!(&out[..len], crate::ipc::encode_frame(&want, &[]).unwrap().as_slice(), "{nr} {arch}");
        }
    }

    #[test]
    fn the_siginfo_head_has_the_kernels_layout() {
        // _sigsys: the call address right after the three ints (aligned),
        // then the call's number and its architecture.
        let ptr = std::mem::size_of::<*mut libc::c_void>();
        assert_eq!(std::mem::offset_of!(SigsysInfo, call_addr), if ptr == 8 { 16 } else { 12 });
        assert_eq!(std::mem::offset_of!(SigsysInfo, syscall), std::mem::offset_of!(SigsysInfo, call_addr) + ptr);
        assert_eq!(std::mem::offset_of!(SigsysInfo, arch), std::mem::offset_of!(SigsysInfo, syscall) + 4);
    }
}
