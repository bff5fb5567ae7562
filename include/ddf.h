/*
 * ddf.h: the C API of libddf (libddf.so.0), the libraries of the ddf
 * user-space device driver framework.
 *
 * A driver is a program that ddm starts (from a manifest): its main fills a
 * struct ddf_driver_ops and calls ddf_driver_run. A client is any program
 * that wants to call a driver without FUSE in the path (ddf_connect_device)
 * or look at ddm's device tree (ddf_ddm_tree, ddf_ddm_find).
 *
 * Build: cc prog.c $(pkg-config --cflags --libs ddf)
 *
 * Conventions, for every function below:
 *
 * - Errors are negative errno values (-EINVAL, -EIO ...); 0 or a count is
 *   success. ddf_last_error() may say more about the last failure.
 *
 * - Ownership: strings and buffers passed in stay the caller's and are
 *   copied if kept. What the library returns (strings, nodes) stays the
 *   library's, valid for as long as each function says. Handles
 *   (ddf_reply, ddf_waker, ddf_ddm, ddf_client, ddf_nodes) are the
 *   caller's until the call that consumes or frees them.
 *
 * - Threads: a ddf_ctx is valid during its callback only, on the thread
 *   that called ddf_driver_run ("runtime thread, in a callback"). Replies
 *   and wakers may be used from any thread.
 *
 * - API violations: passing NULL where a function says it must not be,
 *   a handle that was answered or freed (a reply answered twice), a
 *   handle of the wrong kind, a ddf_ctx outside its callback or on another
 *   thread, or a callback that returns something other than 0 or a
 *   negative errno. The library does not guess: it logs what was violated
 *   and where, then ends the process with abort(). For a driver ddm logs
 *   the death and restarts it; nothing else is affected.
 *
 * - No Rust panic crosses into C: an internal error of the library is
 *   logged and answered -EIO.
 *
 * - Compatibility: the soname is libddf.so.0 and every symbol carries the
 *   version of the release that added it (DDF_0.1 ...). A later
 *   libddf.so.0 only adds; a program built against this header runs on
 *   it without being rebuilt. struct ddf_driver_ops grows at its end
 *   only, which is why ddf_driver_run takes its size.
 */

#ifndef DDF_H
#define DDF_H

/* Generated from libddf-c/src by cbindgen (libddf-c/cbindgen.toml); do not edit:
 * libddf-c/tests/header.rs fails when this file is not what the sources generate. */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/** Where ddm's control socket is unless told otherwise. */
#define DDF_DEFAULT_CONTROL_SOCKET "/run/ddf/control.sock"

/**
 * A character device: a stream, no size, no offsets.
 */
#define DDF_CLASS_CHAR 0

/**
 * A block device: a size, reads and writes at offsets.
 */
#define DDF_CLASS_BLOCK 1

/**
 * Level of a message: an error (something failed).
 */
#define DDF_LOG_ERROR 1

/**
 * Level of a message: a warning.
 */
#define DDF_LOG_WARN 2

/**
 * Level of a message: information (shown by default).
 */
#define DDF_LOG_INFO 3

/**
 * Level of a message: debugging (shown with `RUST_LOG=debug`).
 */
#define DDF_LOG_DEBUG 4

/**
 * Level of a message: tracing (shown with `RUST_LOG=trace`).
 */
#define DDF_LOG_TRACE 5

/**
 * A direct link to the driver of one device. Opaque.
 */
typedef struct ddf_client ddf_client;

/**
 * What the runtime lends a callback: valid during that callback only, on
 * the thread that called `ddf_driver_run`. Opaque.
 */
typedef struct ddf_ctx ddf_ctx;

/**
 * A connection to ddm's control socket. Opaque.
 */
typedef struct ddf_ddm ddf_ddm;

/**
 * A list of nodes of the device tree (`ddf_ddm_tree`, `ddf_ddm_find`).
 * Opaque; read it with `ddf_nodes_count` and `ddf_nodes_get`.
 */
typedef struct ddf_nodes ddf_nodes;

/**
 * A request waiting for its answer: a read's, a write's or an ioctl's.
 * Opaque; see `ddf_reply_data`, `ddf_reply_written`, `ddf_reply_ioctl` and
 * `ddf_reply_error`.
 */
typedef struct ddf_reply ddf_reply;

/**
 * Wakes the driver's runtime from another thread (see `ddf_waker_new`).
 * Opaque.
 */
typedef struct ddf_waker ddf_waker;

/**
 * One node of the device tree: a bus (a directory) or a device (a file).
 * The library owns it and its strings, until `ddf_nodes_free`. Read it
 * through the pointer `ddf_nodes_get` returns; never allocate or copy
 * one: later libraries may add fields at the end.
 */
typedef struct ddf_node {
  /**
   * The path below the mount (`"pci/0000:00:01.0"`); `""` for the root.
   */
  const char *path;
  /**
   * `"char"`, `"block"`, or `"bus"`.
   */
  const char *dev_class;
  /**
   * The driver instance serving it, or NULL.
   */
  const char *driver;
  /**
   * That driver's process id while it runs, else -1.
   */
  int32_t pid;
  /**
   * The state as people read it (`"running"`, `"unbound: ..."`), or NULL.
   */
  const char *state;
  /**
   * Permission bits.
   */
  uint32_t mode;
  /**
   * Owner.
   */
  uint32_t uid;
  /**
   * Group.
   */
  uint32_t gid;
  /**
   * Size in bytes.
   */
  uint64_t size;
  /**
   * The kind of bus it sits on (`"pci"`), for devices a bus driver
   * reported, or NULL.
   */
  const char *bus;
  /**
   * Its address on that bus, or NULL.
   */
  const char *address;
  /**
   * How many identifiers (`vendor`, `device` ...) it has.
   */
  size_t meta_count;
  /**
   * Their names, `meta_count` of them.
   */
  const char *const *meta_keys;
  /**
   * Their values, in the same order.
   */
  const char *const *meta_values;
} ddf_node;

/**
 * The DMA memory ddm granted this driver (see `ddf_dma`).
 */
typedef struct ddf_dma_info {
  /**
   * Where it is mapped in this process, read-write: valid until
   * `ddf_driver_run` returns, from any thread.
   */
  void *addr;
  /**
   * Its size in bytes (a whole number of pages).
   */
  size_t len;
  /**
   * The size of its pages; each page is physically contiguous.
   */
  size_t page_size;
  /**
   * How many segments it has: one per page (see `ddf_dma_segment_at`).
   */
  size_t segments;
  /**
   * 1 if ddm holds the pages with a long-term pin (neither swapped nor
   * migrated), 0 if they are locked only.
   */
  int pinned;
} ddf_dma_info;

/**
 * One physically contiguous piece of the DMA memory (see
 * `ddf_dma_segment_at`).
 */
typedef struct ddf_dma_segment {
  /**
   * Its offset in the region.
   */
  size_t offset;
  /**
   * Its physical address: the bus address a device is given, without an
   * IOMMU.
   */
  uint64_t addr;
  /**
   * Its length in bytes.
   */
  size_t len;
} ddf_dma_segment;

/**
 * The operations of a C driver. Every entry may be NULL: the runtime then
 * answers as a device without that operation (below). `data` is the
 * pointer given to `ddf_driver_run`; `ctx` is valid during the call only.
 * Every callback runs on the thread that called `ddf_driver_run`, one at a
 * time.
 *
 * Entries are only ever added at the end: pass `sizeof` of the table to
 * `ddf_driver_run`, so that a newer library knows which entries an older
 * driver has.
 */
typedef struct ddf_driver_ops {
  /**
   * Called once before any request: register devices here
   * (`ddf_add_device`). Returns 0, or a negative errno that ends the
   * driver. NULL: nothing to do.
   */
  int (*init)(struct ddf_ctx *ctx,
              void *data);
  /**
   * Called once when ddm asks the driver to stop, before
   * `ddf_driver_run` returns. NULL: nothing to do.
   */
  void (*fini)(struct ddf_ctx *ctx,
               void *data);
  /**
   * Opens `device` (the number `ddf_add_device` gave) with the `open(2)`
   * `flags`; stores the driver's handle for this open in `*handle` and
   * returns 0, or returns a negative errno. NULL: `-ENXIO`.
   */
  int (*open)(struct ddf_ctx *ctx,
              void *data,
              uint32_t device,
              int flags,
              uint64_t *handle);
  /**
   * The last close of `handle`. Answer any request of it still parked.
   * NULL: nothing to do.
   */
  void (*close)(struct ddf_ctx *ctx,
                void *data,
                uint64_t handle);
  /**
   * Reads up to `len` bytes at `offset` (always 0 on a character
   * device). Answer `reply` now or later (`ddf_reply_data`,
   * `ddf_reply_error`). NULL: `-EINVAL`.
   */
  void (*read)(struct ddf_ctx *ctx,
               void *data,
               uint64_t handle,
               uint64_t offset,
               uint32_t len,
               struct ddf_reply *reply);
  /**
   * Writes the `len` bytes at `buf` at `offset`; `buf` is valid during
   * the call only (copy what you keep). Answer `reply` now or later
   * (`ddf_reply_written`, `ddf_reply_error`). NULL: `-EINVAL`.
   */
  void (*write)(struct ddf_ctx *ctx,
                void *data,
                uint64_t handle,
                uint64_t offset,
                const uint8_t *buf,
                size_t len,
                struct ddf_reply *reply);
  /**
   * Device control `cmd`, with `in_len` input bytes at `input` (valid during
   * the call only) and room for `out_len` output bytes. Answer `reply`
   * now or later (`ddf_reply_ioctl`, `ddf_reply_error`). NULL: `-ENOTTY`.
   */
  void (*ioctl)(struct ddf_ctx *ctx,
                void *data,
                uint64_t handle,
                uint32_t cmd,
                const uint8_t *input,
                size_t in_len,
                uint32_t out_len,
                struct ddf_reply *reply);
  /**
   * Which of the `poll(2)` `events` (`POLLIN`, `POLLOUT` ...) are ready
   * now. When that changes later, call `ddf_poll_wake`. NULL: readable
   * and writable.
   */
  uint32_t (*poll)(struct ddf_ctx *ctx,
                   void *data,
                   uint64_t handle,
                   uint32_t events);
  /**
   * The caller of request `request` (see `ddf_reply_id`) gave up: answer
   * the reply kept for it now (`ddf_reply_error(reply, -EINTR)`). NULL:
   * nothing (the reply is answered when the driver gets to it).
   */
  void (*cancel)(struct ddf_ctx *ctx,
                 void *data,
                 uint64_t request);
  /**
   * A descriptor registered with `ddf_watch` under `token` is readable.
   * NULL: nothing.
   */
  void (*ready)(struct ddf_ctx *ctx,
                void *data,
                uint64_t token);
  /**
   * A `ddf_waker` was woken (wakes that come before the runtime gets to
   * them are merged into one call). NULL: nothing.
   */
  void (*wake)(struct ddf_ctx *ctx,
               void *data);
} ddf_driver_ops;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The version of the libddf that is loaded (for example `"0.1.0"`), which
 * may be newer than the one the program was built against.
 *
 * Returns a static string; never NULL. Any thread.
 */
const char *ddf_version(void);

/**
 * A message saying why the last failed `ddf_` call of this thread failed
 * (for example the DDM's words when it refused a connection), or NULL if
 * there is none.
 *
 * The string belongs to the library and stays valid until the next `ddf_`
 * call on this thread. Any thread.
 */
const char *ddf_last_error(void);

/**
 * Connects to ddm's control socket at `socket` (NULL: the default,
 * `DDF_DEFAULT_CONTROL_SOCKET`) and checks the protocol version. Stores
 * the connection in `*ddm`; free it with `ddf_ddm_free`.
 *
 * Returns 0, or a negative errno: `-ENOENT` or `-ECONNREFUSED` (no ddm
 * there), `-EACCES`, `-EPROTO` (another protocol version) ...;
 * `ddf_last_error` says more. Any thread. API violation: `ddm` NULL.
 *
 * # Safety
 * `socket` is NULL or a NUL-terminated string; `ddm` is writable.
 */
int ddf_ddm_connect(const char *socket,
                    struct ddf_ddm **ddm);

/**
 * Closes a connection to ddm (clients it made stay usable). API
 * violation: `ddm` NULL, freed already, or not a ddm connection.
 *
 * # Safety
 * None beyond the handle rules.
 */
void ddf_ddm_free(struct ddf_ddm *ddm);

/**
 * Opens a direct link to the driver of the device file open as `fd` (a
 * file under ddm's mount, opened with `open(2)`: that open is the
 * permission check, the same as for the Rust client). The link may do
 * what the file's open mode allows, on that device only. Stores it in
 * `*client`; free it with `ddf_client_free`. `fd` stays the caller's.
 *
 * Returns 0, or a negative errno: `-EBADF` (`fd` not open), `-EPERM` (ddm
 * refused: the file is not a device of its mount ...; `ddf_last_error`
 * has its words), `-ECONNRESET` (the link broke) ... Any thread. API
 * violations: `ddm` or `client` NULL, `ddm` not a connection.
 *
 * # Safety
 * `client` is writable.
 */
int ddf_connect_device(struct ddf_ddm *ddm,
                       int fd,
                       struct ddf_client **client);

/**
 * Closes a direct link (the driver closes the handles it still has open).
 * API violation: `client` NULL, freed already, or not a client.
 *
 * # Safety
 * None beyond the handle rules.
 */
void ddf_client_free(struct ddf_client *client);

/**
 * The access the link was granted: `O_RDONLY`, `O_WRONLY` or `O_RDWR`,
 * as the device file was opened. API violation: `client` NULL, freed, or
 * not a client.
 *
 * # Safety
 * None beyond the handle rules.
 */
int ddf_client_access(const struct ddf_client *client);

/**
 * Opens the device on the link with `open(2)` `flags` (asking for no more
 * than the granted access); stores the driver's handle in `*handle`.
 * Returns 0, or a negative errno: the driver's answer (`-ENXIO` ...),
 * `-EPERM` (more access than granted), `-ECONNRESET` (the link broke).
 * API violations: `client` or `handle` NULL, `client` not a client.
 *
 * # Safety
 * `handle` is writable.
 */
int ddf_client_open(struct ddf_client *client,
                    int flags,
                    uint64_t *handle);

/**
 * Reads up to `len` bytes (at most 128 KiB per call) at `offset` into
 * `buf`. Returns the number of bytes read, 0 at end of file, or a negative
 * errno (the driver's answer, `-EBADF` for a handle the link did not open
 * or a link without read access, `-ECONNRESET` ...). A read the driver
 * parks blocks until it answers. API violations: `client` NULL or not a
 * client, `buf` NULL with `len` not 0.
 *
 * # Safety
 * `buf` points to `len` writable bytes.
 */
ssize_t ddf_client_read(struct ddf_client *client,
                        uint64_t handle,
                        uint64_t offset,
                        void *buf,
                        size_t len);

/**
 * Writes the `len` bytes at `buf` (at most 128 KiB per call) at `offset`.
 * Returns the number of bytes the driver took, or a negative errno (as
 * for `ddf_client_read`). API violations: `client` NULL or not a client,
 * `buf` NULL with `len` not 0.
 *
 * # Safety
 * `buf` points to `len` readable bytes.
 */
ssize_t ddf_client_write(struct ddf_client *client,
                         uint64_t handle,
                         uint64_t offset,
                         const void *buf,
                         size_t len);

/**
 * Device control `cmd` with the `in_len` bytes at `input`; the driver's
 * output goes to `out` (room for `out_len` bytes), its length to
 * `*out_got` and `ioctl(2)`'s return value to `*result` (each if not
 * NULL). Returns 0, or a negative errno (the driver's answer: `-ENOTTY`
 * for a command it does not know ...). API violations: `client` NULL or
 * not a client, a buffer NULL with its length not 0.
 *
 * # Safety
 * `input` points to `in_len` readable bytes, `out` to `out_len` writable
 * ones; `out_got` and `result` are NULL or writable.
 */
int ddf_client_ioctl(struct ddf_client *client,
                     uint64_t handle,
                     uint32_t cmd,
                     const void *input,
                     size_t in_len,
                     void *out,
                     size_t out_len,
                     size_t *out_got,
                     int32_t *result);

/**
 * Closes a handle the link opened. Returns 0, or a negative errno. API
 * violation: `client` NULL or not a client.
 *
 * # Safety
 * None beyond the handle rules.
 */
int ddf_client_close(struct ddf_client *client,
                     uint64_t handle);

/**
 * The whole device tree, parents before children. Stores the list in
 * `*nodes`; free it with `ddf_nodes_free`. Returns 0, or a negative errno
 * (`ddf_last_error` says more). API violations: `ddm` or `nodes` NULL,
 * `ddm` not a connection.
 *
 * # Safety
 * `nodes` is writable.
 */
int ddf_ddm_tree(struct ddf_ddm *ddm,
                 struct ddf_nodes **nodes);

/**
 * The nodes that answer a query (libDDM's find; `ddmctl find`): each
 * argument that is not NULL must match. `bus`: the kind of bus a node sits
 * on (`"pci"`) or the bus's path; `dev_class`: `"char"`, `"block"` or
 * `"bus"`; `name`, `driver`: globs (`"key*"`) on the node's name and its
 * driver's; `state`: `"running"`, `"failed"`, `"unbound"` ... Stores the
 * list in `*nodes`; free it with `ddf_nodes_free`. Returns 0, or a
 * negative errno (`-EINVAL` for a string that is not UTF-8). API
 * violations: `ddm` or `nodes` NULL, `ddm` not a connection.
 *
 * # Safety
 * Each string is NULL or NUL-terminated; `nodes` is writable.
 */
int ddf_ddm_find(struct ddf_ddm *ddm,
                 const char *bus,
                 const char *dev_class,
                 const char *name,
                 const char *driver,
                 const char *state,
                 struct ddf_nodes **nodes);

/**
 * How many nodes the list holds. API violation: `nodes` NULL, freed, or
 * not a list.
 *
 * # Safety
 * None beyond the handle rules.
 */
size_t ddf_nodes_count(const struct ddf_nodes *nodes);

/**
 * Node number `index` (from 0) of the list, or NULL past the end. It stays
 * valid until `ddf_nodes_free`. API violation: `nodes` NULL, freed, or not
 * a list.
 *
 * # Safety
 * None beyond the handle rules.
 */
const struct ddf_node *ddf_nodes_get(const struct ddf_nodes *nodes,
                                     size_t index);

/**
 * Frees a list of nodes and everything its nodes point to. API violation:
 * `nodes` NULL, freed already, or not a list.
 *
 * # Safety
 * None beyond the handle rules.
 */
void ddf_nodes_free(struct ddf_nodes *nodes);

/**
 * Fills `*info` with where the driver's DMA memory is mapped, its size,
 * page size, number of segments and whether it is pinned. Returns 0, or
 * `-ENOENT` if the driver has none (its manifest has no `[dma]` table).
 * Runtime thread, in a callback. API violations: `ctx` or `info` NULL.
 *
 * # Safety
 * `info` points to a writable `struct ddf_dma_info`.
 */
int ddf_dma(struct ddf_ctx *ctx,
            struct ddf_dma_info *info);

/**
 * Fills `*segment` with segment `index` of the DMA memory (in the
 * region's order: its offset, physical address and length). Returns 0,
 * `-ENOENT` if the driver has no DMA memory, `-ERANGE` if `index` is not
 * below `ddf_dma_info::segments`. Runtime thread, in a callback. API
 * violations: `ctx` or `segment` NULL.
 *
 * # Safety
 * `segment` points to a writable `struct ddf_dma_segment`.
 */
int ddf_dma_segment_at(struct ddf_ctx *ctx,
                       size_t index,
                       struct ddf_dma_segment *segment);

/**
 * Stores in `*addr` the bus address of the byte at `offset` in the DMA
 * memory. Returns 0, `-ENOENT` if the driver has no DMA memory, `-ERANGE`
 * if `offset` is not inside it. Runtime thread, in a callback. API
 * violations: `ctx` or `addr` NULL.
 *
 * # Safety
 * `addr` points to a writable `uint64_t`.
 */
int ddf_dma_bus_addr(struct ddf_ctx *ctx,
                     size_t offset,
                     uint64_t *addr);

/**
 * Whether the `len` bytes at `offset` in the DMA memory are physically
 * contiguous (one bus address and a length describe them to a device):
 * 1 if they are, 0 if not, `-ENOENT` if the driver has no DMA memory,
 * `-ERANGE` if they are not all inside it. Runtime thread, in a callback.
 * API violations: `ctx` NULL.
 *
 * # Safety
 * None beyond the context rules.
 */
int ddf_dma_contiguous(struct ddf_ctx *ctx,
                       size_t offset,
                       size_t len);

/**
 * Serves the driver described by `ops` until ddm tells it to stop or goes
 * away: the handshake with ddm (over the socket ddm passed the process),
 * then `init`, then the requests, one at a time, calling the table's
 * functions with `data`. Call it from `main` of a driver that ddm starts;
 * return what it returns.
 *
 * `ops` must not be NULL; `ops_size` is `sizeof` of the table the driver
 * was built with. The table is copied; `data` is the driver's, passed to
 * every callback and never looked at. Returns the process's exit code: 0
 * after a requested stop or when ddm closed the link, 1 after an error
 * (logged: no socket from ddm, `init` failed, a protocol error, a table
 * made for a newer library, an internal error). Once per process; a
 * second call is an API violation.
 *
 * # Safety
 * `ops` points to `ops_size` readable bytes holding NULL or functions of
 * the signatures above.
 */
int ddf_driver_run(const struct ddf_driver_ops *ops,
                   size_t ops_size,
                   void *data);

/**
 * Registers a device named `name` (a file name under the bus the driver
 * is attached to: no `/`) of class `dev_class` (`DDF_CLASS_CHAR` or
 * `DDF_CLASS_BLOCK`) and `size` bytes (0 for a character device). Stores
 * the driver's number for it, which `open` gets, in `*device` (if not
 * NULL).
 *
 * Returns 0; `-EINVAL` for a class out of range or a name that is not
 * UTF-8; `-EIO` if ddm cannot be told. ddm checks the name and ends a
 * driver whose name is not a valid file name. Runtime thread, in a
 * callback. API violations: `ctx` or `name` NULL.
 *
 * # Safety
 * `name` is a NUL-terminated string; `device` is NULL or writable.
 */
int ddf_add_device(struct ddf_ctx *ctx,
                   const char *name,
                   int dev_class,
                   uint64_t size,
                   uint32_t *device);

/**
 * Removes the device the driver numbered `device` from the tree; its open
 * files fail from now on. Returns 0, or `-EIO` if ddm cannot be told.
 * Runtime thread, in a callback. API violation: `ctx` NULL.
 *
 * # Safety
 * None beyond the context rules.
 */
int ddf_remove_device(struct ddf_ctx *ctx,
                      uint32_t device);

/**
 * The instance name ddm gave this driver (the manifest's `name`). The
 * string belongs to the library and stays valid until `ddf_driver_run`
 * returns. Runtime thread, in a callback. API violation: `ctx` NULL.
 *
 * # Safety
 * None beyond the context rules.
 */
const char *ddf_instance(struct ddf_ctx *ctx);

/**
 * The value of the manifest parameter `key` (`[params]`; numbers and
 * booleans come as their TOML text), or NULL if there is none. The string
 * belongs to the library and stays valid until `ddf_driver_run` returns.
 * Runtime thread, in a callback. API violations: `ctx` or `key` NULL.
 *
 * # Safety
 * `key` is a NUL-terminated string.
 */
const char *ddf_param(struct ddf_ctx *ctx,
                      const char *key);

/**
 * How many parameters the driver was started with. Runtime thread, in a
 * callback. API violation: `ctx` NULL.
 *
 * # Safety
 * None beyond the context rules.
 */
size_t ddf_param_count(struct ddf_ctx *ctx);

/**
 * Parameter number `index` (from 0, in key order): stores its key and
 * value in `*key` and `*value` (each if not NULL; strings valid until
 * `ddf_driver_run` returns). Returns 0, or `-ENOENT` past the last one.
 * Runtime thread, in a callback. API violation: `ctx` NULL.
 *
 * # Safety
 * `key` and `value` are NULL or writable.
 */
int ddf_param_at(struct ddf_ctx *ctx,
                 size_t index,
                 const char **key,
                 const char **value);

/**
 * Calls the `ready` callback with `token` whenever descriptor `fd` is
 * readable. The driver keeps owning `fd`: call `ddf_unwatch` before it
 * closes it. Returns 0, or `-EBADF` if `fd` is not open. Runtime thread,
 * in a callback. API violation: `ctx` NULL.
 *
 * # Safety
 * None beyond the context rules.
 */
int ddf_watch(struct ddf_ctx *ctx,
              int fd,
              uint64_t token);

/**
 * Stops watching what was registered under `token`. Returns 0. Runtime
 * thread, in a callback. API violation: `ctx` NULL.
 *
 * # Safety
 * None beyond the context rules.
 */
int ddf_unwatch(struct ddf_ctx *ctx,
                uint64_t token);

/**
 * Tells the pollers of `handle` that its readiness changed (after `poll`
 * said "not ready"). Cheap when nobody waits. Returns 0. Runtime thread,
 * in a callback. API violation: `ctx` NULL.
 *
 * # Safety
 * None beyond the context rules.
 */
int ddf_poll_wake(struct ddf_ctx *ctx,
                  uint64_t handle);

/**
 * Asks the runtime to stop after this callback: `fini`, then
 * `ddf_driver_run` returns 0. Runtime thread, in a callback. API
 * violation: `ctx` NULL.
 *
 * # Safety
 * None beyond the context rules.
 */
void ddf_stop(struct ddf_ctx *ctx);

/**
 * A new waker: any thread may call `ddf_waker_wake` on it to have the
 * runtime call the `wake` callback soon. Free it with `ddf_waker_free`.
 * Never NULL. Runtime thread, in a callback. API violation: `ctx` NULL.
 *
 * # Safety
 * None beyond the context rules.
 */
struct ddf_waker *ddf_waker_new(struct ddf_ctx *ctx);

/**
 * Has the runtime call `wake` soon. Returns 0. Any thread. API violation:
 * `waker` NULL, freed, or not a waker.
 *
 * # Safety
 * None beyond the handle rules.
 */
int ddf_waker_wake(const struct ddf_waker *waker);

/**
 * Frees a waker. Any thread. API violation: `waker` NULL, freed already,
 * or not a waker.
 *
 * # Safety
 * None beyond the handle rules.
 */
void ddf_waker_free(struct ddf_waker *waker);

/**
 * Copies the bytes an earlier incarnation of this driver saved under `key`
 * (the state store: they survive a crash and restart of the driver) into
 * `buf`, at most `len` of them. Returns the number of bytes saved, which
 * may be more than `len` (call with `len` 0 to learn the size), or
 * `-ENOENT` if nothing is saved under `key`. What this incarnation saves
 * is for the next one: it does not change what this call returns.
 * Runtime thread, in a callback. API violations: `ctx` or `key` NULL,
 * `buf` NULL with `len` not 0.
 *
 * # Safety
 * `key` is a NUL-terminated string; `buf` points to `len` writable bytes.
 */
ssize_t ddf_state_get(struct ddf_ctx *ctx,
                      const char *key,
                      void *buf,
                      size_t len);

/**
 * A new descriptor (close-on-exec, the caller's to close) for descriptor
 * number `index` saved under `key` by an earlier incarnation (a memfd
 * holding a disk ...). Returns it, or `-ENOENT` if there is no such
 * descriptor. Runtime thread, in a callback. API violations: `ctx` or `key`
 * NULL.
 *
 * # Safety
 * `key` is a NUL-terminated string.
 */
int ddf_state_fd(struct ddf_ctx *ctx,
                 const char *key,
                 size_t index);

/**
 * Leaves `len` bytes at `bytes` and `nfds` descriptors at `fds` with ddm
 * under `key`, for the next incarnation of this driver (replacing what was
 * saved under `key`). ddm handles the driver's messages in order: state
 * saved before a reply is stored before the caller sees that reply, so
 * what was acknowledged survives a crash. The descriptors stay the
 * driver's too.
 *
 * Returns 0; `-EINVAL` for more than 8 descriptors or a key that is not
 * UTF-8; `-EBADF` if a descriptor is not open; `-EIO` if ddm cannot be
 * told. Runtime thread, in a callback. API violations: `ctx` or `key` NULL,
 * `bytes` NULL with `len` not 0, `fds` NULL with `nfds` not 0.
 *
 * # Safety
 * `key` is a NUL-terminated string; `bytes` points to `len` readable bytes
 * and `fds` to `nfds` descriptors, open during the call.
 */
int ddf_state_save(struct ddf_ctx *ctx,
                   const char *key,
                   const void *bytes,
                   size_t len,
                   const int *fds,
                   size_t nfds);

/**
 * Forgets what was saved under `key`. Returns 0, or `-EIO` if ddm cannot
 * be told. Runtime thread, in a callback. API violations: `ctx` or `key`
 * NULL.
 *
 * # Safety
 * `key` is a NUL-terminated string.
 */
int ddf_state_drop(struct ddf_ctx *ctx,
                   const char *key);

/**
 * Sets the driver's counter `name` (at most 64 bytes) to `value`;
 * `ddmctl status` shows the latest value of each counter. Returns 0;
 * `-EINVAL` for a name that is not UTF-8; `-EIO` if ddm cannot be told.
 * ddm ends a driver with more than 64 counters or a longer name. Runtime
 * thread, in a callback. API violations: `ctx` or `name` NULL.
 *
 * # Safety
 * `name` is a NUL-terminated string.
 */
int ddf_counter_set(struct ddf_ctx *ctx,
                    const char *name,
                    uint64_t value);

/**
 * Writes `msg` to the log at `level` (`DDF_LOG_ERROR` ... `DDF_LOG_TRACE`),
 * as one line naming the driver instance. For a driver, the log is ddm's
 * log. `ddf_logf` (below) formats with printf first.
 *
 * `msg` must not be NULL; bytes that are not UTF-8 are shown as U+FFFD.
 * Returns 0, or `-EINVAL` for a level out of range (the message is then
 * logged as an error). Any thread, also before `ddf_driver_run`.
 *
 * # Safety
 * `msg` is a NUL-terminated string.
 */
int ddf_log(int level,
            const char *msg);

/**
 * Answers a read with `len` bytes at `data` (cut to `ddf_reply_max_len`);
 * `len` 0 is end of file. The bytes are copied: `data` is the caller's
 * again on return.
 *
 * Consumes `reply`. `data` may be NULL only when `len` is 0. Returns 0.
 * Any thread. API violations: `reply` NULL, already answered, or not the
 * reply of a read.
 *
 * # Safety
 * `data` points to `len` readable bytes.
 */
int ddf_reply_data(struct ddf_reply *reply,
                   const void *data,
                   size_t len);

/**
 * Answers a write: `len` bytes were taken (at most what the write
 * brought).
 *
 * Consumes `reply`. Returns 0. Any thread. API violations: `reply` NULL,
 * already answered, or not the reply of a write.
 *
 * # Safety
 * None beyond the handle rules above.
 */
int ddf_reply_written(struct ddf_reply *reply,
                      uint32_t len);

/**
 * Answers an ioctl: `ioctl(2)` returns `result` to the caller, and the
 * `len` bytes at `out` (cut to `ddf_reply_max_len`) are its output.
 *
 * Consumes `reply`. `out` may be NULL only when `len` is 0. Returns 0. Any
 * thread. API violations: `reply` NULL, already answered, or not the reply
 * of an ioctl.
 *
 * # Safety
 * `out` points to `len` readable bytes.
 */
int ddf_reply_ioctl(struct ddf_reply *reply,
                    int32_t result,
                    const void *out,
                    size_t len);

/**
 * Answers any request with an error: `err` is a negative errno
 * (`-EAGAIN`, `-EINTR` ...), which the caller's system call returns.
 *
 * Consumes `reply`. Returns 0. Any thread. API violations: `reply` NULL or
 * already answered, `err` not between -4095 and -1.
 *
 * # Safety
 * None beyond the handle rules above.
 */
int ddf_reply_error(struct ddf_reply *reply,
                    int err);

/**
 * The id of the request `reply` answers: what the `cancel` callback names
 * when the caller gave up on it.
 *
 * Does not consume `reply`. Any thread. API violation: `reply` NULL or
 * already answered.
 *
 * # Safety
 * None beyond the handle rules above.
 */
uint64_t ddf_reply_id(const struct ddf_reply *reply);

/**
 * The most bytes the caller takes: of a read's data, or of an ioctl's
 * output (0 for a write).
 *
 * Does not consume `reply`. Any thread. API violation: `reply` NULL or
 * already answered.
 *
 * # Safety
 * None beyond the handle rules above.
 */
uint32_t ddf_reply_max_len(const struct ddf_reply *reply);

/**
 * The `open(2)` flags of the file at the time of a read (`O_NONBLOCK`: a
 * read with nothing to give answers `-EAGAIN` instead of waiting); 0 for a
 * write or an ioctl.
 *
 * Does not consume `reply`. Any thread. API violation: `reply` NULL or
 * already answered.
 *
 * # Safety
 * None beyond the handle rules above.
 */
int ddf_reply_flags(const struct ddf_reply *reply);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* DDF_H */

#ifndef DDF_H_LOGF
#define DDF_H_LOGF
/** printf-style ddf_log: formats into at most 1023 bytes, then logs. */
static inline int ddf_logf(int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static inline int ddf_logf(int level, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return ddf_log(level, buf);
}
#endif /* DDF_H_LOGF */
