//! What every entry point shares: panics kept inside, API violations ended
//! cleanly, arguments from C checked, errors as negative errno values.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::AssertUnwindSafe;

use ddf::Errno;

thread_local! {
    /// The message of the last failure on this thread (`ddf_last_error`).
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records why the current call fails, for `ddf_last_error`.
pub(crate) fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

/// The last failure's message on this thread, or NULL.
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}

/// Runs the body of the entry point `func`. A panic inside it is logged and
/// becomes `on_panic`: it never unwinds into C.
pub(crate) fn guard<T>(func: &'static str, on_panic: T, body: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            let msg = format!("internal error in {func}: {what}");
            ::log::error!(target: crate::log::target(), "{msg}");
            set_last_error(&msg);
            on_panic
        }
    }
}

/// Ends the process: its C code broke a rule that the header states for
/// `func`. The message says which and where; it goes to the log (ddm's log,
/// for a driver) before the process aborts.
pub(crate) fn violation(func: &str, what: std::fmt::Arguments<'_>) -> ! {
    crate::log::emergency(&format!("API violation in {func}: {what}; ending the process"));
    std::process::abort()
}

/// `-errno`, as C wants it.
pub(crate) fn neg(e: Errno) -> c_int {
    -e.0
}

/// The largest errno value Linux uses (`MAX_ERRNO`).
const MAX_ERRNO: c_int = 4095;

/// A negative errno from C (`-EAGAIN`) as an [`Errno`]; anything else is a
/// violation.
pub(crate) fn errno_arg(func: &str, what: &str, v: c_int) -> Errno {
    if (-MAX_ERRNO..=-1).contains(&v) {
        Errno(-v)
    } else {
        violation(func, format_args!("{what} is {v}, not a negative errno (-1 to -{MAX_ERRNO})"))
    }
}

/// What a callback returned: 0 or a negative errno; anything else is a
/// violation.
pub(crate) fn status_arg(func: &str, v: c_int) -> Result<(), Errno> {
    if v == 0 {
        Ok(())
    } else {
        Err(errno_arg(func, "the return value", v))
    }
}

/// A C string argument the header says is not NULL. Not UTF-8 is `EINVAL`.
///
/// # Safety
/// A non-NULL `p` must point to a NUL-terminated string that stays valid
/// and unchanged for `'a` (the header's promise for every string argument).
pub(crate) unsafe fn str_arg<'a>(func: &str, what: &str, p: *const c_char) -> Result<&'a str, c_int> {
    if p.is_null() {
        violation(func, format_args!("{what} is NULL"));
    }
    // SAFETY: non-NULL, and NUL-terminated as the caller promises.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|_| {
        set_last_error(&format!("{func}: {what} is not UTF-8"));
        -libc::EINVAL
    })
}

/// A C string argument that may be NULL (then `None`).
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(func: &str, what: &str, p: *const c_char) -> Result<Option<&'a str>, c_int> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: as the caller promises.
    unsafe { str_arg(func, what, p) }.map(Some)
}

/// `len` bytes at `p`; `p` may be NULL only when `len` is 0.
///
/// # Safety
/// A non-NULL `p` must point to `len` readable bytes that stay unchanged for
/// `'a` (the header's promise for every buffer argument).
pub(crate) unsafe fn bytes_arg<'a>(func: &str, what: &str, p: *const c_void, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    if p.is_null() {
        violation(func, format_args!("{what} is NULL with a length of {len}"));
    }
    if len > isize::MAX as usize {
        violation(func, format_args!("the length of {what} ({len}) is larger than any buffer"));
    }
    // SAFETY: non-NULL, `len` readable bytes as the caller promises, and
    // `len` fits an isize.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
}

/// `len` writable bytes at `p`; `p` may be NULL only when `len` is 0.
///
/// # Safety
/// A non-NULL `p` must point to `len` writable bytes that nothing else uses
/// for `'a`.
pub(crate) unsafe fn bytes_out<'a>(func: &str, what: &str, p: *mut c_void, len: usize) -> &'a mut [u8] {
    if len == 0 {
        return &mut [];
    }
    if p.is_null() {
        violation(func, format_args!("{what} is NULL with a length of {len}"));
    }
    if len > isize::MAX as usize {
        violation(func, format_args!("the length of {what} ({len}) is larger than any buffer"));
    }
    // SAFETY: non-NULL, `len` writable bytes owned by the call as the caller
    // promises, and `len` fits an isize.
    unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) }
}

/// Stores `v` through an out-pointer the header says is not NULL.
///
/// # Safety
/// A non-NULL `p` must be valid for a write of a `T`.
pub(crate) unsafe fn put<T>(func: &str, what: &str, p: *mut T, v: T) {
    if p.is_null() {
        violation(func, format_args!("{what} is NULL"));
    }
    // SAFETY: non-NULL and writable as the caller promises.
    unsafe { p.write(v) };
}

/// Stores `v` through an out-pointer that may be NULL (then nothing).
///
/// # Safety
/// A non-NULL `p` must be valid for a write of a `T`.
pub(crate) unsafe fn put_opt<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: as the caller promises.
        unsafe { p.write(v) };
    }
}

/// Whether `fd` is an open descriptor of this process.
pub(crate) fn fd_is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD only reads the descriptor table entry of `fd`.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_errnos_pass_and_zero_is_success() {
        assert_eq!(errno_arg("t", "x", -libc::EAGAIN), Errno::EAGAIN);
        assert_eq!(status_arg("t", 0), Ok(()));
        assert_eq!(status_arg("t", -libc::ENXIO), Err(Errno::ENXIO));
        assert_eq!(neg(Errno::EIO), -libc::EIO);
    }

    #[test]
    fn a_panic_in_a_body_becomes_the_fallback_and_a_message() {
        let v = guard("ddf_test", -libc::EIO, || -> c_int { panic!("boom") });
        assert_eq!(v, -libc::EIO);
        let msg = last_error();
        assert!(!msg.is_null());
        // SAFETY: last_error returns a live NUL-terminated string of this thread.
        let text = unsafe { CStr::from_ptr(msg) }.to_str().unwrap_or_default().to_owned();
        assert!(text.contains("internal error in ddf_test: boom"), "{text}");
    }

    #[test]
    fn strings_must_be_utf8() {
        let bad = b"\xff\xfe\0";
        // SAFETY: a NUL-terminated byte string.
        let r = unsafe { str_arg("t", "name", bad.as_ptr().cast()) };
        assert_eq!(r, Err(-libc::EINVAL));
        // SAFETY: as above.
        assert_eq!(unsafe { opt_str_arg("t", "name", std::ptr::null()) }, Ok(None));
    }

    #[test]
    fn descriptors_are_checked() {
        assert!(fd_is_open(0) || fd_is_open(1) || fd_is_open(2));
        assert!(!fd_is_open(-1));
        assert!(!fd_is_open(1 << 20));
    }
}
