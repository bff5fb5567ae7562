//! Deferred replies: the answer to a read, write or ioctl, now or later.
//!
//! The runtime hands the driver's `read`, `write` and `ioctl` a
//! `ddf_reply *`. The driver answers it exactly once, with the
//! `ddf_reply_*` call that fits the request, during the callback or any time
//! later, from the runtime's thread (a `wake` or `ready` callback) or from
//! any other thread: the answer goes straight to the DDM's socket, which
//! takes whole messages from several threads at once. Answering consumes
//! the handle; answering it again is an API violation, which the library
//! recognises because a handle is a number it never reuses (see
//! `handles.rs`).

use std::ffi::{c_int, c_void};

use ddf::driver::{IoctlReply, ReadReply, WriteReply};

use crate::ffi::{bytes_arg, errno_arg, guard, violation};
use crate::handles::Table;

/// A request waiting for its answer: a read's, a write's or an ioctl's.
/// Opaque; see `ddf_reply_data`, `ddf_reply_written`, `ddf_reply_ioctl` and
/// `ddf_reply_error`.
#[derive(Debug)]
pub struct ddf_reply {
    _opaque: [u8; 0],
}

/// A reply the driver holds.
#[derive(Debug)]
pub(crate) enum Pending {
    Read(ReadReply),
    Write(WriteReply),
    Ioctl(IoctlReply),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Read(_) => "a read",
            Pending::Write(_) => "a write",
            Pending::Ioctl(_) => "an ioctl",
        }
    }
}

/// Every reply given to C and not answered yet.
static REPLIES: Table<Pending> = Table::new("a reply", "answered");

/// Hands a reply to C.
pub(crate) fn give(p: Pending) -> *mut ddf_reply {
    REPLIES.insert(p)
}

/// Takes the reply behind `r` for an answer; a handle that is not a reply
/// waiting for its answer ends the process.
fn take(func: &str, r: *mut ddf_reply) -> Pending {
    REPLIES.expect_take(func, "reply", r)
}

/// Looks at the reply behind `r` without answering it.
fn peek<R>(func: &str, r: *const ddf_reply, f: impl FnOnce(&Pending) -> R) -> R {
    REPLIES.expect_with(func, "reply", r, |p| f(p))
}

fn wrong_kind(func: &str, p: &Pending, fits: &str) -> ! {
    violation(func, format_args!("the reply is the answer to {}; {func} answers {fits}", p.kind()))
}

/// Answers a read with `len` bytes at `data` (cut to `ddf_reply_max_len`);
/// `len` 0 is end of file. The bytes are copied: `data` is the caller's
/// again on return.
///
/// Consumes `reply`. `data` may be NULL only when `len` is 0. Returns 0.
/// Any thread. API violations: `reply` NULL, already answered, or not the
/// reply of a read.
///
/// # Safety
/// `data` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ddf_reply_data(reply: *mut ddf_reply, data: *const c_void, len: usize) -> c_int {
    guard("ddf_reply_data", 0, || {
        const F: &str = "ddf_reply_data";
        match take(F, reply) {
            Pending::Read(r) => {
                // SAFETY: `data` holds `len` bytes, as the header requires.
                let bytes = unsafe { bytes_arg(F, "data", data, len) };
                r.data(bytes);
                0
            }
            other => wrong_kind(F, &other, "a read"),
        }
    })
}

/// Answers a write: `len` bytes were taken (at most what the write
/// brought).
///
/// Consumes `reply`. Returns 0. Any thread. API violations: `reply` NULL,
/// already answered, or not the reply of a write.
///
/// # Safety
/// None beyond the handle rules above.
#[no_mangle]
pub unsafe extern "C" fn ddf_reply_written(reply: *mut ddf_reply, len: u32) -> c_int {
    guard("ddf_reply_written", 0, || {
        const F: &str = "ddf_reply_written";
        match take(F, reply) {
            Pending::Write(w) => {
                w.written(len);
                0
            }
            other => wrong_kind(F, &other, "a write"),
        }
    })
}

/// Answers an ioctl: `ioctl(2)` returns `result` to the caller, and the
/// `len` bytes at `out` (cut to `ddf_reply_max_len`) are its output.
///
/// Consumes `reply`. `out` may be NULL only when `len` is 0. Returns 0. Any
/// thread. API violations: `reply` NULL, already answered, or not the reply
/// of an ioctl.
///
/// # Safety
/// `out` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ddf_reply_ioctl(reply: *mut ddf_reply, result: i32, out: *const c_void, len: usize) -> c_int {
    guard("ddf_reply_ioctl", 0, || {
        const F: &str = "ddf_reply_ioctl";
        match take(F, reply) {
            Pending::Ioctl(r) => {
                // SAFETY: `out` holds `len` bytes, as the header requires.
                let bytes = unsafe { bytes_arg(F, "out", out, len) };
                r.ok(result, bytes);
                0
            }
            other => wrong_kind(F, &other, "an ioctl"),
        }
    })
}

/// Answers any request with an error: `err` is a negative errno
/// (`-EAGAIN`, `-EINTR` ...), which the caller's system call returns.
///
/// Consumes `reply`. Returns 0. Any thread. API violations: `reply` NULL or
/// already answered, `err` not between -4095 and -1.
///
/// # Safety
/// None beyond the handle rules above.
#[no_mangle]
pub unsafe extern "C" fn ddf_reply_error(reply: *mut ddf_reply, err: c_int) -> c_int {
    guard("ddf_reply_error", 0, || {
        const F: &str = "ddf_reply_error";
        let p = take(F, reply);
        let e = errno_arg(F, "err", err);
        match p {
            Pending::Read(r) => r.error(e),
            Pending::Write(w) => w.error(e),
            Pending::Ioctl(i) => i.error(e),
        }
        0
    })
}

/// The id of the request `reply` answers: what the `cancel` callback names
/// when the caller gave up on it.
///
/// Does not consume `reply`. Any thread. API violation: `reply` NULL or
/// already answered.
///
/// # Safety
/// None beyond the handle rules above.
#[no_mangle]
pub unsafe extern "C" fn ddf_reply_id(reply: *const ddf_reply) -> u64 {
    guard("ddf_reply_id", 0, || {
        peek("ddf_reply_id", reply, |p| match p {
            Pending::Read(r) => r.id().0,
            Pending::Write(w) => w.id().0,
            Pending::Ioctl(i) => i.id().0,
        })
    })
}

/// The most bytes the caller takes: of a read's data, or of an ioctl's
/// output (0 for a write).
///
/// Does not consume `reply`. Any thread. API violation: `reply` NULL or
/// already answered.
///
/// # Safety
/// None beyond the handle rules above.
#[no_mangle]
pub unsafe extern "C" fn ddf_reply_max_len(reply: *const ddf_reply) -> u32 {
    guard("ddf_reply_max_len", 0, || {
        peek("ddf_reply_max_len", reply, |p| match p {
            Pending::Read(r) => r.max_len(),
            Pending::Write(_) => 0,
            Pending::Ioctl(i) => i.max_len(),
        })
    })
}

/// The `open(2)` flags of the file at the time of a read (`O_NONBLOCK`: a
/// read with nothing to give answers `-EAGAIN` instead of waiting); 0 for a
/// write or an ioctl.
///
/// Does not consume `reply`. Any thread. API violation: `reply` NULL or
/// already answered.
///
/// # Safety
/// None beyond the handle rules above.
#[no_mangle]
pub unsafe extern "C" fn ddf_reply_flags(reply: *const ddf_reply) -> c_int {
    guard("ddf_reply_flags", 0, || {
        peek("ddf_reply_flags", reply, |p| match p {
            Pending::Read(r) => r.flags().0,
            Pending::Write(_) | Pending::Ioctl(_) => 0,
        })
    })
}
