//! The client side: libDDM (`tree`, `find`) and libDriver's client proxy.
//!
//! A program connects to ddm's control socket (`ddf_ddm_connect`), then
//! either looks at the tree (`ddf_ddm_tree`, `ddf_ddm_find`), or turns an
//! open device file into a direct link to its driver
//! (`ddf_connect_device`): opening the file was the permission check (the
//! kernel's), and the link gets the access the file was opened with, for
//! that device only. Calls on the link (`ddf_client_*`) go straight to the
//! driver process, with neither FUSE nor ddm in the path. A link does not
//! survive a restart of the driver: its calls then fail with
//! `-ECONNRESET` (or `-EPIPE`), and the program connects again.
//!
//! Every handle here is for one thread at a time (a call on a client blocks
//! until the driver answers); different handles may be used from different
//! threads.

use std::ffi::{c_char, c_int, c_void, CString};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ddf::ddm::{Ddm, DdmError};
use ddf::driver::{Client, ClientError};
use ddf::ipc::IpcError;
use ddf::proto::{DeviceClass, Handle, NodeInfo, OpenFlags, Query};

use crate::ffi::{bytes_arg, bytes_out, fd_is_open, guard, neg, opt_str_arg, put, put_opt, set_last_error, violation};
use crate::handles::Table;

/// Where ddm's control socket is unless told otherwise (the header
/// defines it as `DDF_DEFAULT_CONTROL_SOCKET`; `tests/header.rs` checks
/// that the two agree).
const DEFAULT_CONTROL_SOCKET: &str = ddf::ddm::DEFAULT_CONTROL_SOCKET;

/// A connection to ddm's control socket. Opaque.
#[derive(Debug)]
pub struct ddf_ddm {
    _opaque: [u8; 0],
}

/// A direct link to the driver of one device. Opaque.
#[derive(Debug)]
pub struct ddf_client {
    _opaque: [u8; 0],
}

/// A list of nodes of the device tree (`ddf_ddm_tree`, `ddf_ddm_find`).
/// Opaque; read it with `ddf_nodes_count` and `ddf_nodes_get`.
#[derive(Debug)]
pub struct ddf_nodes {
    _opaque: [u8; 0],
}

/// One node of the device tree: a bus (a directory) or a device (a file).
/// The library owns it and its strings, until `ddf_nodes_free`. Read it
/// through the pointer `ddf_nodes_get` returns; never allocate or copy
/// one: later libraries may add fields at the end.
#[repr(C)]
#[derive(Debug)]
pub struct ddf_node {
    /// The path below the mount (`"pci/0000:00:01.0"`); `""` for the root.
    pub path: *const c_char,
    /// `"char"`, `"block"`, or `"bus"`.
    pub dev_class: *const c_char,
    /// The driver instance serving it, or NULL.
    pub driver: *const c_char,
    /// That driver's process id while it runs, else -1.
    pub pid: i32,
    /// The state as people read it (`"running"`, `"unbound: ..."`), or NULL.
    pub state: *const c_char,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// The kind of bus it sits on (`"pci"`), for devices a bus driver
    /// reported, or NULL.
    pub bus: *const c_char,
    /// Its address on that bus, or NULL.
    pub address: *const c_char,
    /// How many identifiers (`vendor`, `device` ...) it has.
    pub meta_count: usize,
    /// Their names, `meta_count` of them.
    pub meta_keys: *const *const c_char,
    /// Their values, in the same order.
    pub meta_values: *const *const c_char,
}

/// The memory behind a [`ddf_nodes`]: the nodes C reads and the strings
/// they point into.
#[derive(Debug)]
struct Nodes {
    nodes: Vec<ddf_node>,
    _strings: Vec<CString>,
    _arrays: Vec<Vec<*const c_char>>,
}

// SAFETY: the raw pointers in `nodes` and `_arrays` point only into the
// strings and arrays this same value owns, which are never changed after it
// is built; moving the value between threads moves no pointee.
unsafe impl Send for Nodes {}

static DDMS: Table<Arc<Mutex<Ddm>>> = Table::new("a ddm connection", "freed");
static CLIENTS: Table<Arc<Mutex<Client>>> = Table::new("a client", "freed");
static NODES: Table<Box<Nodes>> = Table::new("a list of nodes", "freed");

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The errno for a failed link.
fn ipc_errno(e: &IpcError) -> c_int {
    match e {
        IpcError::Send(io) | IpcError::Recv(io) | IpcError::Setup(io) => io.raw_os_error().unwrap_or(libc::EIO),
        IpcError::WouldBlock => libc::EAGAIN,
        IpcError::Closed => libc::ECONNRESET,
        IpcError::TooLarge { .. } => libc::EMSGSIZE,
        IpcError::Truncated
        | IpcError::Malformed { .. }
        | IpcError::Decode(_)
        | IpcError::Trailing(_)
        | IpcError::Encode(_)
        | IpcError::TooManyFds(_)
        | IpcError::Version { .. } => libc::EPROTO,
    }
}

/// A failed call to ddm as C sees it: the message for `ddf_last_error`,
/// and a negative errno.
fn ddm_failed(e: &DdmError) -> c_int {
    set_last_error(&ddf::error_chain(e));
    -match e {
        DdmError::Connect { source, .. } | DdmError::Ipc(source) => ipc_errno(source),
        DdmError::Refused(_) => libc::EPERM,
        DdmError::Unexpected(_) => libc::EPROTO,
    }
}

/// A failed call to a driver as C sees it.
fn client_failed(e: &ClientError) -> c_int {
    set_last_error(&ddf::error_chain(e));
    match e {
        ClientError::Ipc(i) => -ipc_errno(i),
        ClientError::Errno(e) => neg(*e),
        ClientError::Protocol(_) | ClientError::Ring(_) => -libc::EPROTO,
        ClientError::TooLong(_) => -libc::EMSGSIZE,
    }
}

/// Stores `v` in `table` and its handle through the out-argument `what`;
/// returns 0.
///
/// # Safety
/// `out` is NULL (an API violation) or writable.
unsafe fn hand_out<T, P>(func: &str, what: &str, table: &Table<T>, out: *mut *mut P, v: T) -> c_int {
    let h = table.insert(v);
    // SAFETY: NULL (a violation `put` reports) or writable, as the caller promises.
    unsafe { put(func, what, out, h) };
    0
}

fn ddm_of(func: &str, ddm: *mut ddf_ddm) -> Arc<Mutex<Ddm>> {
    DDMS.expect_with(func, "ddm", ddm, |d| d.clone())
}

fn client_of(func: &str, client: *const ddf_client) -> Arc<Mutex<Client>> {
    CLIENTS.expect_with(func, "client", client, |c| c.clone())
}

/// Connects to ddm's control socket at `socket` (NULL: the default,
/// `DDF_DEFAULT_CONTROL_SOCKET`) and checks the protocol version. Stores
/// the connection in `*ddm`; free it with `ddf_ddm_free`.
///
/// Returns 0, or a negative errno: `-ENOENT` or `-ECONNREFUSED` (no ddm
/// there), `-EACCES`, `-EPROTO` (another protocol version) ...;
/// `ddf_last_error` says more. Any thread. API violation: `ddm` NULL.
///
/// # Safety
/// `socket` is NULL or a NUL-terminated string; `ddm` is writable.
#[no_mangle]
pub unsafe extern "C" fn ddf_ddm_connect(socket: *const c_char, ddm: *mut *mut ddf_ddm) -> c_int {
    const F: &str = "ddf_ddm_connect";
    guard(F, -libc::EIO, || {
        if ddm.is_null() {
            violation(F, format_args!("ddm is NULL"));
        }
        // SAFETY: as the header requires.
        let path = match unsafe { opt_str_arg(F, "socket", socket) } {
            Ok(p) => p.unwrap_or(DEFAULT_CONTROL_SOCKET),
            Err(e) => return e,
        };
        match Ddm::connect(Path::new(path)) {
            // SAFETY: `ddm` is writable, as the header requires.
            Ok(d) => unsafe { hand_out(F, "ddm", &DDMS, ddm, Arc::new(Mutex::new(d))) },
            Err(e) => ddm_failed(&e),
        }
    })
}

/// Closes a connection to ddm (clients it made stay usable). API
/// violation: `ddm` NULL, freed already, or not a ddm connection.
///
/// # Safety
/// None beyond the handle rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_ddm_free(ddm: *mut ddf_ddm) {
    const F: &str = "ddf_ddm_free";
    guard(F, (), || drop(DDMS.expect_take(F, "ddm", ddm)));
}

/// Opens a direct link to the driver of the device file open as `fd` (a
/// file under ddm's mount, opened with `open(2)`: that open is the
/// permission check, the same as for the Rust client). The link may do
/// what the file's open mode allows, on that device only. Stores it in
/// `*client`; free it with `ddf_client_free`. `fd` stays the caller's.
///
/// Returns 0, or a negative errno: `-EBADF` (`fd` not open), `-EPERM` (ddm
/// refused: the file is not a device of its mount ...; `ddf_last_error`
/// has its words), `-ECONNRESET` (the link broke) ... Any thread. API
/// violations: `ddm` or `client` NULL, `ddm` not a connection.
///
/// # Safety
/// `client` is writable.
#[no_mangle]
pub unsafe extern "C" fn ddf_connect_device(ddm: *mut ddf_ddm, fd: c_int, client: *mut *mut ddf_client) -> c_int {
    const F: &str = "ddf_connect_device";
    guard(F, -libc::EIO, || {
        let d = ddm_of(F, ddm);
        if client.is_null() {
            violation(F, format_args!("client is NULL"));
        }
        if !fd_is_open(fd) {
            set_last_error(&format!("{F}: descriptor {fd} is not open"));
            return -libc::EBADF;
        }
        // SAFETY: `fd` is open (checked above); the File is never dropped
        // (ManuallyDrop), so the caller's descriptor is not closed.
        let file = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let result = lock(&d).connect_device(&file);
        match result {
            // SAFETY: `client` is writable, as the header requires.
            Ok(c) => unsafe { hand_out(F, "client", &CLIENTS, client, Arc::new(Mutex::new(c))) },
            Err(e) => ddm_failed(&e),
        }
    })
}

/// Closes a direct link (the driver closes the handles it still has open).
/// API violation: `client` NULL, freed already, or not a client.
///
/// # Safety
/// None beyond the handle rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_client_free(client: *mut ddf_client) {
    const F: &str = "ddf_client_free";
    guard(F, (), || drop(CLIENTS.expect_take(F, "client", client)));
}

/// The access the link was granted: `O_RDONLY`, `O_WRONLY` or `O_RDWR`,
/// as the device file was opened. API violation: `client` NULL, freed, or
/// not a client.
///
/// # Safety
/// None beyond the handle rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_client_access(client: *const ddf_client) -> c_int {
    const F: &str = "ddf_client_access";
    guard(F, -libc::EIO, || lock(&client_of(F, client)).access().bits())
}

/// Opens the device on the link with `open(2)` `flags` (asking for no more
/// than the granted access); stores the driver's handle in `*handle`.
/// Returns 0, or a negative errno: the driver's answer (`-ENXIO` ...),
/// `-EPERM` (more access than granted), `-ECONNRESET` (the link broke).
/// API violations: `client` or `handle` NULL, `client` not a client.
///
/// # Safety
/// `handle` is writable.
#[no_mangle]
pub unsafe extern "C" fn ddf_client_open(client: *mut ddf_client, flags: c_int, handle: *mut u64) -> c_int {
    const F: &str = "ddf_client_open";
    guard(F, -libc::EIO, || {
        let c = client_of(F, client);
        if handle.is_null() {
            violation(F, format_args!("handle is NULL"));
        }
        let result = lock(&c).open(OpenFlags(flags));
        match result {
            Ok(h) => {
                // SAFETY: non-NULL (checked) and writable, as the header requires.
                unsafe { put(F, "handle", handle, h.0) };
                0
            }
            Err(e) => client_failed(&e),
        }
    })
}

/// Reads up to `len` bytes (at most 128 KiB per call) at `offset` into
/// `buf`. Returns the number of bytes read, 0 at end of file, or a negative
/// errno (the driver's answer, `-EBADF` for a handle the link did not open
/// or a link without read access, `-ECONNRESET` ...). A read the driver
/// parks blocks until it answers. API violations: `client` NULL or not a
/// client, `buf` NULL with `len` not 0.
///
/// # Safety
/// `buf` points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ddf_client_read(
    client: *mut ddf_client,
    handle: u64,
    offset: u64,
    buf: *mut c_void,
    len: usize,
) -> libc::ssize_t {
    const F: &str = "ddf_client_read";
    guard(F, -libc::EIO as libc::ssize_t, || {
        let c = client_of(F, client);
        // SAFETY: as the header requires.
        let out = unsafe { bytes_out(F, "buf", buf, len) };
        let result = lock(&c).read(Handle(handle), offset, out);
        match result {
            Ok(n) => n as libc::ssize_t,
            Err(e) => client_failed(&e) as libc::ssize_t,
        }
    })
}

/// Writes the `len` bytes at `buf` (at most 128 KiB per call) at `offset`.
/// Returns the number of bytes the driver took, or a negative errno (as
/// for `ddf_client_read`). API violations: `client` NULL or not a client,
/// `buf` NULL with `len` not 0.
///
/// # Safety
/// `buf` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ddf_client_write(
    client: *mut ddf_client,
    handle: u64,
    offset: u64,
    buf: *const c_void,
    len: usize,
) -> libc::ssize_t {
    const F: &str = "ddf_client_write";
    guard(F, -libc::EIO as libc::ssize_t, || {
        let c = client_of(F, client);
        // SAFETY: as the header requires.
        let data = unsafe { bytes_arg(F, "buf", buf, len) };
        let result = lock(&c).write(Handle(handle), offset, data);
        match result {
            Ok(n) => n as libc::ssize_t,
            Err(e) => client_failed(&e) as libc::ssize_t,
        }
    })
}

/// Device control `cmd` with the `in_len` bytes at `input`; the driver's
/// output goes to `out` (room for `out_len` bytes), its length to
/// `*out_got` and `ioctl(2)`'s return value to `*result` (each if not
/// NULL). Returns 0, or a negative errno (the driver's answer: `-ENOTTY`
/// for a command it does not know ...). API violations: `client` NULL or
/// not a client, a buffer NULL with its length not 0.
///
/// # Safety
/// `input` points to `in_len` readable bytes, `out` to `out_len` writable
/// ones; `out_got` and `result` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ddf_client_ioctl(
    client: *mut ddf_client,
    handle: u64,
    cmd: u32,
    input: *const c_void,
    in_len: usize,
    out: *mut c_void,
    out_len: usize,
    out_got: *mut usize,
    result: *mut i32,
) -> c_int {
    const F: &str = "ddf_client_ioctl";
    guard(F, -libc::EIO, || {
        let c = client_of(F, client);
        // SAFETY: as the header requires.
        let (inb, outb) = unsafe { (bytes_arg(F, "input", input, in_len), bytes_out(F, "out", out, out_len)) };
        let answer = lock(&c).ioctl(Handle(handle), cmd, inb, outb);
        match answer {
            Ok((r, n)) => {
                // SAFETY: NULL or writable, as the header requires.
                unsafe {
                    put_opt(out_got, n);
                    put_opt(result, r);
                }
                0
            }
            Err(e) => client_failed(&e),
        }
    })
}

/// Closes a handle the link opened. Returns 0, or a negative errno. API
/// violation: `client` NULL or not a client.
///
/// # Safety
/// None beyond the handle rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_client_close(client: *mut ddf_client, handle: u64) -> c_int {
    const F: &str = "ddf_client_close";
    guard(F, -libc::EIO, || {
        let c = client_of(F, client);
        let result = lock(&c).close(Handle(handle));
        result.map_or_else(|e| client_failed(&e), |()| 0)
    })
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Builds what C reads from the DDM's answer.
fn nodes_of(list: Vec<NodeInfo>) -> Box<Nodes> {
    let mut strings: Vec<CString> = Vec::new();
    let mut arrays: Vec<Vec<*const c_char>> = Vec::new();
    let mut s = |v: &str| -> *const c_char {
        let c = cstring(v);
        // The CString's heap buffer does not move when the CString does.
        let p = c.as_ptr();
        strings.push(c);
        p
    };
    let mut nodes = Vec::with_capacity(list.len());
    for n in &list {
        let class = match n.class {
            Some(DeviceClass::Char) => "char",
            Some(DeviceClass::Block) => "block",
            None => "bus",
        };
        let state = n.state_text.clone().or_else(|| n.state.map(|st| st.as_str().to_owned()));
        let keys: Vec<*const c_char> = n.meta.iter().map(|(k, _)| s(k)).collect();
        let values: Vec<*const c_char> = n.meta.iter().map(|(_, v)| s(v)).collect();
        let node = ddf_node {
            path: s(&n.path),
            dev_class: s(class),
            driver: n.driver.as_deref().map_or(std::ptr::null(), &mut s),
            pid: n.pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(-1),
            state: state.as_deref().map_or(std::ptr::null(), &mut s),
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            size: n.size,
            bus: n.bus.as_deref().map_or(std::ptr::null(), &mut s),
            address: n.address.as_deref().map_or(std::ptr::null(), &mut s),
            meta_count: n.meta.len(),
            // A Vec's heap buffer does not move when the Vec does.
            meta_keys: keys.as_ptr(),
            meta_values: values.as_ptr(),
        };
        arrays.push(keys);
        arrays.push(values);
        nodes.push(node);
    }
    Box::new(Nodes { nodes, _strings: strings, _arrays: arrays })
}

/// The whole device tree, parents before children. Stores the list in
/// `*nodes`; free it with `ddf_nodes_free`. Returns 0, or a negative errno
/// (`ddf_last_error` says more). API violations: `ddm` or `nodes` NULL,
/// `ddm` not a connection.
///
/// # Safety
/// `nodes` is writable.
#[no_mangle]
pub unsafe extern "C" fn ddf_ddm_tree(ddm: *mut ddf_ddm, nodes: *mut *mut ddf_nodes) -> c_int {
    const F: &str = "ddf_ddm_tree";
    guard(F, -libc::EIO, || {
        let d = ddm_of(F, ddm);
        if nodes.is_null() {
            violation(F, format_args!("nodes is NULL"));
        }
        let result = lock(&d).tree();
        match result {
            // SAFETY: `nodes` is writable, as the header requires.
            Ok(list) => unsafe { hand_out(F, "nodes", &NODES, nodes, nodes_of(list)) },
            Err(e) => ddm_failed(&e),
        }
    })
}

/// The nodes that answer a query (libDDM's find; `ddmctl find`): each
/// argument that is not NULL must match. `bus`: the kind of bus a node sits
/// on (`"pci"`) or the bus's path; `dev_class`: `"char"`, `"block"` or
/// `"bus"`; `name`, `driver`: globs (`"key*"`) on the node's name and its
/// driver's; `state`: `"running"`, `"failed"`, `"unbound"` ... Stores the
/// list in `*nodes`; free it with `ddf_nodes_free`. Returns 0, or a
/// negative errno (`-EINVAL` for a string that is not UTF-8). API
/// violations: `ddm` or `nodes` NULL, `ddm` not a connection.
///
/// # Safety
/// Each string is NULL or NUL-terminated; `nodes` is writable.
#[no_mangle]
pub unsafe extern "C" fn ddf_ddm_find(
    ddm: *mut ddf_ddm,
    bus: *const c_char,
    dev_class: *const c_char,
    name: *const c_char,
    driver: *const c_char,
    state: *const c_char,
    nodes: *mut *mut ddf_nodes,
) -> c_int {
    const F: &str = "ddf_ddm_find";
    guard(F, -libc::EIO, || {
        let d = ddm_of(F, ddm);
        if nodes.is_null() {
            violation(F, format_args!("nodes is NULL"));
        }
        let arg = |what: &str, p: *const c_char| -> Result<Option<String>, c_int> {
            // SAFETY: NULL or NUL-terminated, as the header requires.
            unsafe { opt_str_arg(F, what, p) }.map(|o| o.map(str::to_owned))
        };
        let query = match (|| {
            Ok::<Query, c_int>(Query {
                bus: arg("bus", bus)?,
                class: arg("dev_class", dev_class)?,
                name: arg("name", name)?,
                driver: arg("driver", driver)?,
                state: arg("state", state)?,
            })
        })() {
            Ok(q) => q,
            Err(e) => return e,
        };
        let result = lock(&d).find(&query);
        match result {
            // SAFETY: `nodes` is writable, as the header requires.
            Ok(list) => unsafe { hand_out(F, "nodes", &NODES, nodes, nodes_of(list)) },
            Err(e) => ddm_failed(&e),
        }
    })
}

/// How many nodes the list holds. API violation: `nodes` NULL, freed, or
/// not a list.
///
/// # Safety
/// None beyond the handle rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_nodes_count(nodes: *const ddf_nodes) -> usize {
    const F: &str = "ddf_nodes_count";
    guard(F, 0, || NODES.expect_with(F, "nodes", nodes, |n| n.nodes.len()))
}

/// Node number `index` (from 0) of the list, or NULL past the end. It stays
/// valid until `ddf_nodes_free`. API violation: `nodes` NULL, freed, or not
/// a list.
///
/// # Safety
/// None beyond the handle rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_nodes_get(nodes: *const ddf_nodes, index: usize) -> *const ddf_node {
    const F: &str = "ddf_nodes_get";
    guard(F, std::ptr::null(), || {
        // The node lives in a Box the table holds until ddf_nodes_free, so
        // the pointer outlives the lock.
        NODES.expect_with(F, "nodes", nodes, |n| {
            n.nodes.get(index).map_or(std::ptr::null(), |node| node as *const ddf_node)
        })
    })
}

/// Frees a list of nodes and everything its nodes point to. API violation:
/// `nodes` NULL, freed already, or not a list.
///
/// # Safety
/// None beyond the handle rules.
#[no_mangle]
pub unsafe extern "C" fn ddf_nodes_free(nodes: *mut ddf_nodes) {
    const F: &str = "ddf_nodes_free";
    guard(F, (), || drop(NODES.expect_take(F, "nodes", nodes)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_point_at_their_own_strings() {
        let info = NodeInfo {
            path: "pci/0000:00:01.0".into(),
            class: Some(DeviceClass::Block),
            driver: None,
            pid: None,
            state: None,
            mode: 0o640,
            uid: 0,
            gid: 6,
            size: 256,
            bus: Some("pci".into()),
            address: Some("0000:00:01.0".into()),
            meta: vec![("vendor".into(), "0x1af4".into())],
            state_text: Some("unbound: no driver".into()),
        };
        let n = nodes_of(vec![info]);
        let node = &n.nodes[0];
        // SAFETY: the pointers point into `n`, alive here.
        let text = |p: *const c_char| unsafe { std::ffi::CStr::from_ptr(p) }.to_str().unwrap_or("?").to_owned();
        assert_eq!(text(node.path), "pci/0000:00:01.0");
        assert_eq!(text(node.dev_class), "block");
        assert!(node.driver.is_null());
        assert_eq!(node.pid, -1);
        assert_eq!(text(node.state), "unbound: no driver");
        assert_eq!(node.meta_count, 1);
        // SAFETY: meta_count entries, alive with `n`.
        let (k, v) = unsafe { (*node.meta_keys, *node.meta_values) };
        assert_eq!((text(k), text(v)), ("vendor".to_owned(), "0x1af4".to_owned()));
    }
}
