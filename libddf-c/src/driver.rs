//! The driver side: a C driver is a table of operations that the Rust
//! runtime (`ddf::driver::run`) serves.
//!
//! `ddf_driver_run` copies the table, builds a `ddf::driver::Driver` whose
//! methods call the table's functions (a NULL entry answers what the Rust
//! trait's default answers), and runs it: the handshake with ddm, `init`,
//! then one request at a time. Each callback gets a `ddf_ctx *` that is
//! valid for that callback only, on the runtime's thread: the context
//! functions below check both, so a context kept and used later, or from
//! another thread, is an API violation and not a use of freed memory.
//!
//! Deferred replies are in [`crate::reply`]; a [`ddf_waker`] lets another
//! thread have the runtime call `wake`.
//!
//! The operation table grows at its end only. A driver passes the size of
//! the table it was built with: an older, shorter table gets the defaults
//! for what it lacks; a newer, longer one is refused by an older library
//! unless the entries it does not know are NULL.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CString};
use std::os::fd::{BorrowedFd, IntoRawFd};
use std::process::ExitCode;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use ddf::driver::{self, poll_events, Context, Driver, ReadReply, Waker, WriteReply};
use ddf::proto::{DeviceClass, DeviceId, Handle, OpenFlags, RequestId};
use ddf::Errno;

use crate::ffi::{bytes_arg, fd_is_open, guard, neg, put_opt, set_last_error, status_arg, str_arg, violation};
use crate::handles::Table;
use crate::reply::{self, ddf_reply, Pending};

/// A character device: a stream, no size, no offsets.
pub const DDF_CLASS_CHAR: c_int = 0;
/// A block device: a size, reads and writes at offsets.
pub const DDF_CLASS_BLOCK: c_int = 1;

/// What the runtime lends a callback: valid during that callback only, on
/// the thread that called `ddf_driver_run`. Opaque.
#[derive(Debug)]
pub struct ddf_ctx {
    _opaque: [u8; 0],
}

/// Wakes the driver's runtime from another thread (see `ddf_waker_new`).
/// Opaque.
#[derive(Debug)]
pub struct ddf_waker {
    _opaque: [u8; 0],
}

/// The operations of a C driver. Every entry may be NULL: the runtime then
/// answers as a device without that operation (below). `data` is the
/// pointer given to `ddf_driver_run`; `ctx` is valid during the call only.
/// Every callback runs on the thread that called `ddf_driver_run`, one at a
/// time.
///
/// Entries are only ever added at the end: pass `sizeof` of the table to
/// `ddf_driver_run`, so that a newer library knows which entries an older
/// driver has.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ddf_driver_ops {
    /// Called once before any request: register devices here
    /// (`ddf_add_device`). Returns 0, or a negative errno that ends the
    /// driver. NULL: nothing to do.
    pub init: Option<unsafe extern "C" fn(ctx: *mut ddf_ctx, data: *mut c_void) -> c_int>,
    /// Called once when ddm asks the driver to stop, before
    /// `ddf_driver_run` returns. NULL: nothing to do.
    pub fini: Option<unsafe extern "C" fn(ctx: *mut ddf_ctx, data: *mut c_void)>,
    /// Opens `device` (the number `ddf_add_device` gave) with the `open(2)`
    /// `flags`; stores the driver's handle for this open in `*handle` and
    /// returns 0, or returns a negative errno. NULL: `-ENXIO`.
    pub open: Option<
        unsafe extern "C" fn(
            ctx: *mut ddf_ctx,
            data: *mut c_void,
            device: u32,
            flags: c_int,
            handle: *mut u64,
        ) -> c_int,
    >,
    /// The last close of `handle`. Answer any request of it still parked.
    /// NULL: nothing to do.
    pub close: Option<unsafe extern "C" fn(ctx: *mut ddf_ctx, data: *mut c_void, handle: u64)>,
    /// Reads up to `len` bytes at `offset` (always 0 on a character
    /// device). Answer `reply` now or later (`ddf_reply_data`,
    /// `ddf_reply_error`). NULL: `-EINVAL`.
    pub read: Option<
        unsafe extern "C" fn(
            ctx: *mut ddf_ctx,
            data: *mut c_void,
            handle: u64,
            offset: u64,
            len: u32,
            reply: *mut ddf_reply,
        ),
    >,
    /// Writes the `len` bytes at `buf` at `offset`; `buf` is valid during
    /// the call only (copy what you keep). Answer `reply` now or later
    /// (`ddf_reply_written`, `ddf_reply_error`). NULL: `-EINVAL`.
    pub write: Option<
        unsafe extern "C" fn(
            ctx: *mut ddf_ctx,
            data: *mut c_void,
            handle: u64,
            offset: u64,
            buf: *const u8,
            len: usize,
            reply: *mut ddf_reply,
        ),
    >,
    /// Device control `cmd`, with `in_len` input bytes at `input` (valid during
    /// the call only) and room for `out_len` output bytes. Answer `reply`
    /// now or later (`ddf_reply_ioctl`, `ddf_reply_error`). NULL: `-ENOTTY`.
    pub ioctl: Option<
        unsafe extern "C" fn(
            ctx: *mut ddf_ctx,
            data: *mut c_void,
            handle: u64,
            cmd: u32,
            input: *const u8,
            in_len: usize,
            out_len: u32,
            reply: *mut ddf_reply,
        ),
    >,
    /// Which of the `poll(2)` `events` (`POLLIN`, `POLLOUT` ...) are ready
    /// now. When that changes later, call `ddf_poll_wake`. NULL: readable
    /// and writable.
    pub poll: Option<unsafe extern "C" fn(ctx: *mut ddf_ctx, data: *mut c_void, handle: u64, events: u32) -> u32>,
    /// The caller of request `request` (see `ddf_reply_id`) gave up: answer
    /// the reply kept for it now (`ddf_reply_error(reply, -EINTR)`). NULL:
    /// nothing (the reply is answered when the driver gets to it).
    pub cancel: Option<unsafe extern "C" fn(ctx: *mut ddf_ctx, data: *mut c_void, request: u64)>,
    /// A descriptor registered with `ddf_watch` under `token` is readable.
    /// NULL: nothing.
    pub ready: Option<unsafe extern "C" fn(ctx: *mut ddf_ctx, data: *mut c_void, token: u64)>,
    /// A `ddf_waker` was woken (wakes that come before the runtime gets to
    /// them are merged into one call). NULL: nothing.
    pub wake: Option<unsafe extern "C" fn(ctx: *mut ddf_ctx, data: *mut c_void)>,
}

/// What a run keeps for the C side: the strings its context hands out.
#[derive(Debug)]
pub(crate) struct Run {
    instance: CString,
    params: Vec<(CString, CString)>,
}

thread_local! {
    /// The context of the callback this thread is in, if any.
    static CURRENT: Cell<Option<(NonNull<Context>, *const Run)>> = const { Cell::new(None) };
}

/// Runs `f` with the context `ctx` stands for; ends the process if `ctx` is
/// not the context of a callback running on this thread now.
pub(crate) fn with_ctx<R>(func: &str, ctx: *mut ddf_ctx, f: impl FnOnce(&mut Context, &Run) -> R) -> R {
    if ctx.is_null() {
        violation(func, format_args!("ctx is NULL"));
    }
    let Some((context, run)) = CURRENT.get() else {
        violation(
            func,
            format_args!(
                "ctx {ctx:p} used outside a callback (a ctx is valid during its callback only, \
                 on the thread that called ddf_driver_run)"
            ),
        )
    };
    if run.cast::<ddf_ctx>() != ctx.cast_const() {
        violation(func, format_args!("ctx {ctx:p} is not the ctx of the running callback"));
    }
    // SAFETY: CURRENT holds a context only while `CDriver::call` runs a C
    // callback on this thread; it was made from the `&mut Context` that call
    // holds, which nothing else uses until the callback returns. The C side
    // runs one library call at a time on this thread, so this is the only
    // reference made from it now. `run` points into the boxed `Run` the
    // driver owns for the whole run.
    let (context, run) = unsafe { (&mut *context.as_ptr(), &*run) };
    f(context, run)
}

/// The C driver, as the Rust runtime sees it.
#[derive(Debug)]
struct CDriver {
    ops: ddf_driver_ops,
    data: *mut c_void,
    run: Box<Run>,
}

impl CDriver {
    /// Calls into C with `ctx` lent for the duration.
    fn call<R>(&mut self, ctx: &mut Context, f: impl FnOnce(*mut ddf_ctx, *mut c_void) -> R) -> R {
        let run: *const Run = &*self.run;
        let prev = CURRENT.replace(Some((NonNull::from(ctx), run)));
        let out = f(run.cast_mut().cast(), self.data);
        CURRENT.set(prev);
        out
    }
}

// The numbers C sees for the Rust ids, in one place.
fn device_to_c(d: DeviceId) -> u32 {
    d.0
}
fn device_from_c(d: u32) -> DeviceId {
    DeviceId(d)
}
fn handle_from_c(h: u64) -> Handle {
    Handle(h)
}
fn handle_to_c(h: Handle) -> u64 {
    h.0
}
fn request_to_c(id: RequestId) -> u64 {
    id.0
}

/// Why a C driver could not be built from its start parameters.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StartFailed(String);

impl Driver for CDriver {
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        let Some(f) = self.ops.init else { return Ok(()) };
        // SAFETY: a function of the driver's table, called with the context
        // and data pointer its header contract names.
        let rc = self.call(ctx, |c, d| unsafe { f(c, d) });
        status_arg("the driver's init", rc)
    }

    fn fini(&mut self, ctx: &mut Context) {
        if let Some(f) = self.ops.fini {
            // SAFETY: as in `init`.
            self.call(ctx, |c, d| unsafe { f(c, d) });
        }
    }

    fn open(&mut self, ctx: &mut Context, device: DeviceId, flags: OpenFlags) -> Result<Handle, Errno> {
        let Some(f) = self.ops.open else { return Err(Errno::ENXIO) };
        let mut handle: u64 = 0;
        let out: *mut u64 = &mut handle;
        // SAFETY: as in `init`; `out` is a live u64 for the call.
        let rc = self.call(ctx, |c, d| unsafe { f(c, d, device_to_c(device), flags.0, out) });
        status_arg("the driver's open", rc).map(|()| handle_from_c(handle))
    }

    fn close(&mut self, ctx: &mut Context, handle: Handle) {
        if let Some(f) = self.ops.close {
            // SAFETY: as in `init`.
            self.call(ctx, |c, d| unsafe { f(c, d, handle_to_c(handle)) });
        }
    }

    fn read(&mut self, ctx: &mut Context, handle: Handle, offset: u64, len: u32, reply: ReadReply) {
        let Some(f) = self.ops.read else { return reply.error(Errno::EINVAL) };
        let r = reply::give(Pending::Read(reply));
        // SAFETY: as in `init`.
        self.call(ctx, |c, d| unsafe { f(c, d, handle_to_c(handle), offset, len, r) });
    }

    fn write(&mut self, ctx: &mut Context, handle: Handle, offset: u64, data: &[u8], reply: WriteReply) {
        let Some(f) = self.ops.write else { return reply.error(Errno::EINVAL) };
        let r = reply::give(Pending::Write(reply));
        // SAFETY: as in `init`; `data` outlives the call.
        self.call(ctx, |c, d| unsafe { f(c, d, handle_to_c(handle), offset, data.as_ptr(), data.len(), r) });
    }

    fn ioctl(
        &mut self,
        ctx: &mut Context,
        handle: Handle,
        cmd: u32,
        input: &[u8],
        out_len: u32,
        reply: driver::IoctlReply,
    ) {
        let Some(f) = self.ops.ioctl else { return reply.error(Errno::ENOTTY) };
        let r = reply::give(Pending::Ioctl(reply));
        // SAFETY: as in `init`; `input` outlives the call.
        self.call(ctx, |c, d| unsafe { f(c, d, handle_to_c(handle), cmd, input.as_ptr(), input.len(), out_len, r) });
    }

    fn poll(&mut self, ctx: &mut Context, handle: Handle, events: u32) -> u32 {
        match self.ops.poll {
            // SAFETY: as in `init`.
            Some(f) => self.call(ctx, |c, d| unsafe { f(c, d, handle_to_c(handle), events) }),
            None => {
                events
                    & (poll_events::POLLIN | poll_events::POLLOUT | poll_events::POLLRDNORM | poll_events::POLLWRNORM)
            }
        }
    }

    fn cancel(&mut self, ctx: &mut Context, id: RequestId) {
        if let Some(f) = self.ops.cancel {
            // SAFETY: as in `init`.
            self.call(ctx, |c, d| unsafe { f(c, d, request_to_c(id)) });
        }
    }

    fn ready(&mut self, ctx: &mut Context, token: u64) {
        if let Some(f) = self.ops.ready {
            // SAFETY: as in `init`.
            self.call(ctx, |c, d| unsafe { f(c, d, token) });
        }
    }

    fn wake(&mut self, ctx: &mut Context) {
        if let Some(f) = self.ops.wake {
            // SAFETY: as in `init`.
            self.call(ctx, |c, d| unsafe { f(c, d) });
        }
    }
}

/// Copies the driver's table of `size` bytes. A shorter table (an older
/// driver) gets NULL for what it lacks; a longer one (a driver built for a
/// newer library) is refused unless what this library does not know is
/// all NULL.
///
/// # Safety
/// `ops` points to `size` readable bytes.
unsafe fn copy_ops(ops: *const ddf_driver_ops, size: usize) -> Result<ddf_driver_ops, String> {
    const F: &str = "ddf_driver_run";
    const OURS: usize = std::mem::size_of::<ddf_driver_ops>();
    if ops.is_null() {
        violation(F, format_args!("ops is NULL"));
    }
    if size % std::mem::size_of::<usize>() != 0 || size == 0 {
        violation(F, format_args!("ops_size is {size}: pass sizeof of the struct ddf_driver_ops"));
    }
    // SAFETY: `ops` holds `size` bytes, as the header requires.
    let bytes = unsafe { bytes_arg(F, "ops", ops.cast(), size) };
    if size > OURS && bytes[OURS..].iter().any(|b| *b != 0) {
        return Err(format!(
            "the driver's table of operations is {size} bytes and sets entries past the {OURS} this libddf {} \
             knows (was the driver built for a newer libddf?)",
            env!("CARGO_PKG_VERSION")
        ));
    }
    let mut table = ddf_driver_ops {
        init: None,
        fini: None,
        open: None,
        close: None,
        read: None,
        write: None,
        ioctl: None,
        poll: None,
        cancel: None,
        ready: None,
        wake: None,
    };
    let n = size.min(OURS);
    // SAFETY: copies whole entries (`n` is a multiple of the pointer size)
    // of function pointers or NULL, the only values the header allows in
    // the table, into a table of the same layout.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut table as *mut ddf_driver_ops).cast::<u8>(), n) };
    Ok(table)
}

/// Whether a driver runs in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Serves the driver described by `ops` until ddm tells it to stop or goes
/// away: the handshake with ddm (over the socket ddm passed the process),
/// then `init`, then the requests, one at a time, calling the table's
/// functions with `data`. Call it from `main` of a driver that ddm starts;
/// return what it returns.
///
/// `ops` must not be NULL; `ops_size` is `sizeof` of the table the driver
/// was built with. The table is copied; `data` is the driver's, passed to
/// every callback and never looked at. Returns the process's exit code: 0
/// after a requested stop or when ddm closed the link, 1 after an error
/// (logged: no socket from ddm, `init` failed, a protocol error, a table
/// made for a newer library, an internal error). Once per process; a
/// second call is an API violation.
///
/// # Safety
/// `ops` points to `ops_size` readable bytes holding NULL or functions of
/// the signatures above.
#[no_mangle]
pub unsafe extern "C" fn ddf_driver_run(ops: *const ddf_driver_ops, ops_size: usize, data: *mut c_void) -> c_int {
    guard("ddf_driver_run", 1, || {
        crate::log::init();
        if RUNNING.swap(true, Ordering::SeqCst) {
            violation("ddf_driver_run", format_args!("called a second time in one process"));
        }
        // SAFETY: as the header requires of `ops`.
        let table = match unsafe { copy_ops(ops, ops_size) } {
            Ok(t) => t,
            Err(why) => {
                ::log::error!(target: crate::log::target(), "{why}");
                return 1;
            }
        };
        let code = driver::run(|start| {
            crate::log::set_instance(&start.instance);
            let cstr = |s: &str| CString::new(s).map_err(|_| StartFailed(format!("{s:?} has a NUL byte")));
            let params = start
                .params
                .iter()
                .map(|(k, v)| Ok((cstr(k)?, cstr(v)?)))
                .collect::<Result<Vec<_>, StartFailed>>()
                .map_err(|e| StartFailed(format!("parameter {e}")))?;
            let run = Box::new(Run { instance: cstr(&start.instance)?, params });
            Ok::<CDriver, StartFailed>(CDriver { ops: table, data, run })
        });
        if code == ExitCode::SUCCESS {
            0
        } else {
            1
        }
    })
}

/// Registers a device named `name` (a file name under the bus the driver
/// is attached to: no `/`) of class `dev_class` (`DDF_CLASS_CHAR` or
/// `DDF_CLASS_BLOCK`) and `size` bytes (0 for a character device). Stores
/// the driver's number for it, which `open` gets, in `*device` (if not
/// NULL).
///
/// Returns 0; `-EINVAL` for a class out of range or a name that is not
/// UTF-8; `-EIO` if ddm cannot be told. ddm checks the name and ends a
/// driver whose name is not a valid file name. Runtime thread, in a
/// callback. API violations: `ctx` or `name` NULL.
///
/// # Safety
/// `name` is a NUL-terminated string; `device` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ddf_add_device(
    ctx: *mut ddf_ctx,
    name: *const c_char,
    dev_class: c_int,
    size: u64,
    device: *mut u32,
) -> c_int {
    const F: &str = "ddf_add_device";
    guard(F, -libc::EIO, || {
        with_ctx(F, ctx, |ctx, _| {
            // SAFETY: as the header requires.
            let name = match unsafe { str_arg(F, "name", name) } {
                Ok(n) => n,
                Err(e) => return e,
            };
            let class = match dev_class {
                DDF_CLASS_CHAR => DeviceClass::Char,
                DDF_CLASS_BLOCK => DeviceClass::Block,
                other => {
                    set_last_error(&format!("{F}: class {other} is neither DDF_CLASS_CHAR nor DDF_CLASS_BLOCK"));
                    return -libc::EINVAL;
                }
            };
            match ctx.add_device(name, class, size) {
                Ok(d) => {
                    // SAFETY: NULL or writable, as the header requires.
                    unsafe { put_opt(device, device_to_c(d)) };
                    0
                }
                Err(e) => neg(e),
            }
        })
    })
}

/// Removes the device the driver numbered `device` from the tree; its open
/// files fail from now on. Returns 0, or `-EIO` if ddm cannot be told.
/// Runtime thread, in a callback. API violation: `ctx` NULL.
///
/// # Safety
/// None beyond the context rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_remove_device(ctx: *mut ddf_ctx, device: u32) -> c_int {
    const F: &str = "ddf_remove_device";
    guard(F, -libc::EIO, || {
        with_ctx(F, ctx, |ctx, _| ctx.remove_device(device_from_c(device)).map_or_else(neg, |()| 0))
    })
}

/// The instance name ddm gave this driver (the manifest's `name`). The
/// string belongs to the library and stays valid until `ddf_driver_run`
/// returns. Runtime thread, in a callback. API violation: `ctx` NULL.
///
/// # Safety
/// None beyond the context rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_instance(ctx: *mut ddf_ctx) -> *const c_char {
    const F: &str = "ddf_instance";
    guard(F, std::ptr::null(), || with_ctx(F, ctx, |_, run| run.instance.as_ptr()))
}

/// The value of the manifest parameter `key` (`[params]`; numbers and
/// booleans come as their TOML text), or NULL if there is none. The string
/// belongs to the library and stays valid until `ddf_driver_run` returns.
/// Runtime thread, in a callback. API violations: `ctx` or `key` NULL.
///
/// # Safety
/// `key` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ddf_param(ctx: *mut ddf_ctx, key: *const c_char) -> *const c_char {
    const F: &str = "ddf_param";
    guard(F, std::ptr::null(), || {
        with_ctx(F, ctx, |_, run| {
            // SAFETY: as the header requires.
            let Ok(key) = (unsafe { str_arg(F, "key", key) }) else { return std::ptr::null() };
            run.params
                .iter()
                .rev()
                .find(|(k, _)| k.to_bytes() == key.as_bytes())
                .map_or(std::ptr::null(), |(_, v)| v.as_ptr())
        })
    })
}

/// How many parameters the driver was started with. Runtime thread, in a
/// callback. API violation: `ctx` NULL.
///
/// # Safety
/// None beyond the context rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_param_count(ctx: *mut ddf_ctx) -> usize {
    const F: &str = "ddf_param_count";
    guard(F, 0, || with_ctx(F, ctx, |_, run| run.params.len()))
}

/// Parameter number `index` (from 0, in key order): stores its key and
/// value in `*key` and `*value` (each if not NULL; strings valid until
/// `ddf_driver_run` returns). Returns 0, or `-ENOENT` past the last one.
/// Runtime thread, in a callback. API violation: `ctx` NULL.
///
/// # Safety
/// `key` and `value` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ddf_param_at(
    ctx: *mut ddf_ctx,
    index: usize,
    key: *mut *const c_char,
    value: *mut *const c_char,
) -> c_int {
    const F: &str = "ddf_param_at";
    guard(F, -libc::EIO, || {
        with_ctx(F, ctx, |_, run| match run.params.get(index) {
            Some((k, v)) => {
                // SAFETY: NULL or writable, as the header requires.
                unsafe {
                    put_opt(key, k.as_ptr());
                    put_opt(value, v.as_ptr());
                }
                0
            }
            None => -libc::ENOENT,
        })
    })
}

/// Calls the `ready` callback with `token` whenever descriptor `fd` is
/// readable. The driver keeps owning `fd`: call `ddf_unwatch` before it
/// closes it. Returns 0, or `-EBADF` if `fd` is not open. Runtime thread,
/// in a callback. API violation: `ctx` NULL.
///
/// # Safety
/// None beyond the context rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_watch(ctx: *mut ddf_ctx, fd: c_int, token: u64) -> c_int {
    const F: &str = "ddf_watch";
    guard(F, -libc::EIO, || {
        with_ctx(F, ctx, |ctx, _| {
            if !fd_is_open(fd) {
                set_last_error(&format!("{F}: descriptor {fd} is not open"));
                return -libc::EBADF;
            }
            ctx.watch(&fd, token);
            0
        })
    })
}

/// Stops watching what was registered under `token`. Returns 0. Runtime
/// thread, in a callback. API violation: `ctx` NULL.
///
/// # Safety
/// None beyond the context rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_unwatch(ctx: *mut ddf_ctx, token: u64) -> c_int {
    const F: &str = "ddf_unwatch";
    guard(F, -libc::EIO, || {
        with_ctx(F, ctx, |ctx, _| {
            ctx.unwatch(token);
            0
        })
    })
}

/// Tells the pollers of `handle` that its readiness changed (after `poll`
/// said "not ready"). Cheap when nobody waits. Returns 0. Runtime thread,
/// in a callback. API violation: `ctx` NULL.
///
/// # Safety
/// None beyond the context rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_poll_wake(ctx: *mut ddf_ctx, handle: u64) -> c_int {
    const F: &str = "ddf_poll_wake";
    guard(F, -libc::EIO, || {
        with_ctx(F, ctx, |ctx, _| {
            ctx.poll_wake(handle_from_c(handle));
            0
        })
    })
}

/// Asks the runtime to stop after this callback: `fini`, then
/// `ddf_driver_run` returns 0. Runtime thread, in a callback. API
/// violation: `ctx` NULL.
///
/// # Safety
/// None beyond the context rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_stop(ctx: *mut ddf_ctx) {
    const F: &str = "ddf_stop";
    guard(F, (), || with_ctx(F, ctx, |ctx, _| ctx.stop()));
}

/// Every waker given to C and not freed.
static WAKERS: Table<Waker> = Table::new("a waker", "freed");

/// A new waker: any thread may call `ddf_waker_wake` on it to have the
/// runtime call the `wake` callback soon. Free it with `ddf_waker_free`.
/// Never NULL. Runtime thread, in a callback. API violation: `ctx` NULL.
///
/// # Safety
/// None beyond the context rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_waker_new(ctx: *mut ddf_ctx) -> *mut ddf_waker {
    const F: &str = "ddf_waker_new";
    guard(F, std::ptr::null_mut(), || {
        let waker = with_ctx(F, ctx, |ctx, _| ctx.waker());
        WAKERS.insert(waker)
    })
}

/// Has the runtime call `wake` soon. Returns 0. Any thread. API violation:
/// `waker` NULL, freed, or not a waker.
///
/// # Safety
/// None beyond the handle rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_waker_wake(waker: *const ddf_waker) -> c_int {
    const F: &str = "ddf_waker_wake";
    guard(F, -libc::EIO, || {
        WAKERS.expect_with(F, "waker", waker, |w| w.clone()).wake();
        0
    })
}

/// Frees a waker. Any thread. API violation: `waker` NULL, freed already,
/// or not a waker.
///
/// # Safety
/// None beyond the handle rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_waker_free(waker: *mut ddf_waker) {
    const F: &str = "ddf_waker_free";
    guard(F, (), || drop(WAKERS.expect_take(F, "waker", waker)));
}

/// Copies the bytes an earlier incarnation of this driver saved under `key`
/// (the state store: they survive a crash and restart of the driver) into
/// `buf`, at most `len` of them. Returns the number of bytes saved, which
/// may be more than `len` (call with `len` 0 to learn the size), or
/// `-ENOENT` if nothing is saved under `key`. What this incarnation saves
/// is for the next one: it does not change what this call returns.
/// Runtime thread, in a callback. API violations: `ctx` or `key` NULL,
/// `buf` NULL with `len` not 0.
///
/// # Safety
/// `key` is a NUL-terminated string; `buf` points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ddf_state_get(
    ctx: *mut ddf_ctx,
    key: *const c_char,
    buf: *mut c_void,
    len: usize,
) -> libc::ssize_t {
    const F: &str = "ddf_state_get";
    guard(F, -libc::EIO as libc::ssize_t, || {
        with_ctx(F, ctx, |ctx, _| {
            // SAFETY: as the header requires.
            let key = match unsafe { str_arg(F, "key", key) } {
                Ok(k) => k,
                Err(e) => return e as libc::ssize_t,
            };
            // SAFETY: as the header requires.
            let out = unsafe { crate::ffi::bytes_out(F, "buf", buf, len) };
            match ctx.state(key) {
                Some(s) => {
                    let n = s.bytes.len().min(out.len());
                    out[..n].copy_from_slice(&s.bytes[..n]);
                    s.bytes.len() as libc::ssize_t
                }
                None => -libc::ENOENT as libc::ssize_t,
            }
        })
    })
}

/// A new descriptor (close-on-exec, the caller's to close) for descriptor
/// number `index` saved under `key` by an earlier incarnation (a memfd
/// holding a disk ...). Returns it, or `-ENOENT` if there is no such
/// descriptor. Runtime thread, in a callback. API violations: `ctx` or `key`
/// NULL.
///
/// # Safety
/// `key` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ddf_state_fd(ctx: *mut ddf_ctx, key: *const c_char, index: usize) -> c_int {
    const F: &str = "ddf_state_fd";
    guard(F, -libc::EIO, || {
        with_ctx(F, ctx, |ctx, _| {
            // SAFETY: as the header requires.
            let key = match unsafe { str_arg(F, "key", key) } {
                Ok(k) => k,
                Err(e) => return e,
            };
            match ctx.state(key).and_then(|s| s.fds.get(index)) {
                Some(fd) => match fd.try_clone() {
                    Ok(dup) => dup.into_raw_fd(),
                    Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
                },
                None => -libc::ENOENT,
            }
        })
    })
}

/// Leaves `len` bytes at `bytes` and `nfds` descriptors at `fds` with ddm
/// under `key`, for the next incarnation of this driver (replacing what was
/// saved under `key`). ddm handles the driver's messages in order: state
/// saved before a reply is stored before the caller sees that reply, so
/// what was acknowledged survives a crash. The descriptors stay the
/// driver's too.
///
/// Returns 0; `-EINVAL` for more than 8 descriptors or a key that is not
/// UTF-8; `-EBADF` if a descriptor is not open; `-EIO` if ddm cannot be
/// told. Runtime thread, in a callback. API violations: `ctx` or `key` NULL,
/// `bytes` NULL with `len` not 0, `fds` NULL with `nfds` not 0.
///
/// # Safety
/// `key` is a NUL-terminated string; `bytes` points to `len` readable bytes
/// and `fds` to `nfds` descriptors, open during the call.
#[no_mangle]
pub unsafe extern "C" fn ddf_state_save(
    ctx: *mut ddf_ctx,
    key: *const c_char,
    bytes: *const c_void,
    len: usize,
    fds: *const c_int,
    nfds: usize,
) -> c_int {
    const F: &str = "ddf_state_save";
    guard(F, -libc::EIO, || {
        with_ctx(F, ctx, |ctx, _| {
            // SAFETY: as the header requires.
            let key = match unsafe { str_arg(F, "key", key) } {
                Ok(k) => k,
                Err(e) => return e,
            };
            // SAFETY: as the header requires.
            let data = unsafe { bytes_arg(F, "bytes", bytes, len) };
            if nfds > ddf::ipc::MAX_FDS {
                set_last_error(&format!("{F}: {nfds} descriptors, at most {} fit", ddf::ipc::MAX_FDS));
                return -libc::EINVAL;
            }
            if nfds > 0 && fds.is_null() {
                violation(F, format_args!("fds is NULL with nfds {nfds}"));
            }
            let raw: &[c_int] = if nfds == 0 {
                &[]
            } else {
                // SAFETY: non-NULL and `nfds` (at most 8) ints, as the header requires.
                unsafe { std::slice::from_raw_parts(fds, nfds) }
            };
            if let Some(bad) = raw.iter().find(|fd| !fd_is_open(**fd)) {
                set_last_error(&format!("{F}: descriptor {bad} is not open"));
                return -libc::EBADF;
            }
            // SAFETY: every descriptor was just seen open, and the header
            // requires that they stay open during the call.
            let borrowed: Vec<BorrowedFd<'_>> = raw.iter().map(|fd| unsafe { BorrowedFd::borrow_raw(*fd) }).collect();
            ctx.save_state(key, data, &borrowed).map_or_else(neg, |()| 0)
        })
    })
}

/// Forgets what was saved under `key`. Returns 0, or `-EIO` if ddm cannot
/// be told. Runtime thread, in a callback. API violations: `ctx` or `key`
/// NULL.
///
/// # Safety
/// `key` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ddf_state_drop(ctx: *mut ddf_ctx, key: *const c_char) -> c_int {
    const F: &str = "ddf_state_drop";
    guard(F, -libc::EIO, || {
        with_ctx(F, ctx, |ctx, _| {
            // SAFETY: as the header requires.
            match unsafe { str_arg(F, "key", key) } {
                Ok(key) => ctx.drop_state(key).map_or_else(neg, |()| 0),
                Err(e) => e,
            }
        })
    })
}

/// Sets the driver's counter `name` (at most 64 bytes) to `value`;
/// `ddmctl status` shows the latest value of each counter. Returns 0;
/// `-EINVAL` for a name that is not UTF-8; `-EIO` if ddm cannot be told.
/// ddm ends a driver with more than 64 counters or a longer name. Runtime
/// thread, in a callback. API violations: `ctx` or `name` NULL.
///
/// # Safety
/// `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ddf_counter_set(ctx: *mut ddf_ctx, name: *const c_char, value: u64) -> c_int {
    const F: &str = "ddf_counter_set";
    guard(F, -libc::EIO, || {
        with_ctx(F, ctx, |ctx, _| {
            // SAFETY: as the header requires.
            match unsafe { str_arg(F, "name", name) } {
                Ok(name) => ctx.counters(&[(name, value)]).map_or_else(neg, |()| 0),
                Err(e) => e,
            }
        })
    })
}
