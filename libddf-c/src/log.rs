//! Logging into ddm's log.
//!
//! A driver's standard error is ddm's, so a driver logs by writing lines
//! there: `ddf_log` writes one line through the same logger the Rust
//! drivers use (env_logger: time, level, the driver's instance name, the
//! message), filtered by `RUST_LOG` as theirs are (default `info`).

use std::ffi::{c_char, c_int, CStr};
use std::sync::{Once, OnceLock};

/// Level of a message: an error (something failed).
pub const DDF_LOG_ERROR: c_int = 1;
/// Level of a message: a warning.
pub const DDF_LOG_WARN: c_int = 2;
/// Level of a message: information (shown by default).
pub const DDF_LOG_INFO: c_int = 3;
/// Level of a message: debugging (shown with `RUST_LOG=debug`).
pub const DDF_LOG_DEBUG: c_int = 4;
/// Level of a message: tracing (shown with `RUST_LOG=trace`).
pub const DDF_LOG_TRACE: c_int = 5;

/// The driver's instance name, once its run started.
static INSTANCE: OnceLock<String> = OnceLock::new();

/// Sets up the logger once per process, as the Rust drivers do (a program
/// that set up its own first keeps it).
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(ddf::driver::init_logging);
}

/// Names the log lines after the driver instance from now on.
pub(crate) fn set_instance(name: &str) {
    let _ = INSTANCE.set(name.to_owned());
}

/// The target log lines carry: the instance name, or `ddf` before a run.
pub(crate) fn target() -> &'static str {
    INSTANCE.get().map_or("ddf", String::as_str)
}

/// Logs an error that must be seen even when errors are filtered out: the
/// last words before the process ends.
pub(crate) fn emergency(msg: &str) {
    init();
    if ::log::log_enabled!(target: target(), ::log::Level::Error) {
        ::log::error!(target: target(), "{msg}");
    } else {
        eprintln!("{}: {msg}", target());
    }
}

/// Writes `msg` to the log at `level` (`DDF_LOG_ERROR` ... `DDF_LOG_TRACE`),
/// as one line naming the driver instance. For a driver, the log is ddm's
/// log. `ddf_logf` (below) formats with printf first.
///
/// `msg` must not be NULL; bytes that are not UTF-8 are shown as U+FFFD.
/// Returns 0, or `-EINVAL` for a level out of range (the message is then
/// logged as an error). Any thread, also before `ddf_driver_run`.
///
/// # Safety
/// `msg` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ddf_log(level: c_int, msg: *const c_char) -> c_int {
    crate::ffi::guard("ddf_log", -libc::EIO, || {
        init();
        if msg.is_null() {
            crate::ffi::violation("ddf_log", format_args!("msg is NULL"));
        }
        // SAFETY: non-NULL and NUL-terminated, as the header requires.
        let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
        let (lvl, rc) = match level {
            DDF_LOG_ERROR => (::log::Level::Error, 0),
            DDF_LOG_WARN => (::log::Level::Warn, 0),
            DDF_LOG_INFO => (::log::Level::Info, 0),
            DDF_LOG_DEBUG => (::log::Level::Debug, 0),
            DDF_LOG_TRACE => (::log::Level::Trace, 0),
            _ => (::log::Level::Error, -libc::EINVAL),
        };
        ::log::log!(target: target(), lvl, "{text}");
        rc
    })
}
