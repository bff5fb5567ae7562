/* ddf-features: a C driver that uses the rest of the driver API, for the
 * tests: parameters, a watched descriptor, poll, state with a descriptor,
 * removing a device, and the table of operations at other sizes.
 *
 * /ddf/params  reads its manifest parameters, one "key=value" line each
 *              (ddf_param_count, ddf_param_at), then the value of
 *              "greeting" again (ddf_param)
 * /ddf/pipe    what is written to it goes into a pipe the driver watches
 *              (ddf_watch): a read waits for the pipe, `ready` answers it;
 *              poll says POLLIN when there is something to read, and
 *              ddf_poll_wake tells pollers when it comes; a read with
 *              O_NONBLOCK and nothing there answers -EAGAIN
 * /ddf/memo    a memfd the first incarnation filled and left in the state
 *              store (ddf_state_save with a descriptor); later ones get it
 *              back (ddf_state_fd) and read the same bytes
 * /ddf/gone    removed (ddf_remove_device) when "remove gone" is written
 *              to /ddf/ctl (not by a write to gone itself: ddm tells the
 *              kernel of the removal from the thread that reads the
 *              driver's answers, and the kernel then waits for the lock
 *              that the write to the same file holds until its answer)
 * /ddf/ctl     also takes "forget memo" (ddf_state_drop) and "stop"
 *              (ddf_stop: fini, then ddf_driver_run returns 0)
 *
 * The parameter "prefix" is put before every device name. The instance
 * name picks the size of the table it passes: "short" passes
 * only up to `close` (an older driver: reads then answer the default,
 * -EINVAL), "long" passes a longer table whose extra entry is set (a
 * driver for a newer library: refused), "longnull" a longer one whose
 * extra entry is NULL (accepted).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <ddf.h>

enum dev { PARAMS, PIPE, MEMO, GONE, CTL, NDEV };
#define PIPE_TOKEN 7

struct features {
    uint32_t dev[NDEV];
    int pipe[2];
    int memo;
    char buffered[4096];
    size_t nbuffered;
    ddf_reply *waiting;     /* a read of /ddf/pipe */
    uint64_t waiting_handle;
    uint64_t params_pos[64];
    uint64_t pipe_open[16]; /* open handles of /ddf/pipe, 0 for none */
};

static int f_init(ddf_ctx *ctx, void *data)
{
    struct features *f = data;
    static const char *names[NDEV] = { "params", "pipe", "memo", "gone", "ctl" };
    const char *prefix = ddf_param(ctx, "prefix");
    for (int i = 0; i < NDEV; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s%s", prefix ? prefix : "", names[i]);
        int rc = ddf_add_device(ctx, name, i == MEMO ? DDF_CLASS_BLOCK : DDF_CLASS_CHAR, i == MEMO ? 64 : 0,
                                &f->dev[i]);
        if (rc < 0)
            return rc;
    }
    ddf_logf(DDF_LOG_INFO, "features: instance %s", ddf_instance(ctx));
    if (pipe(f->pipe) < 0)
        return -errno;
    if (ddf_watch(ctx, f->pipe[0], PIPE_TOKEN) < 0)
        return -EIO;
    f->memo = ddf_state_fd(ctx, "memo", 0);
    if (f->memo == -ENOENT) {
        char text[64];
        f->memo = memfd_create("memo", MFD_CLOEXEC);
        if (f->memo < 0)
            return -errno;
        snprintf(text, sizeof text, "left by pid %d\n", (int)getpid());
        if (pwrite(f->memo, text, strlen(text), 0) < 0)
            return -errno;
        int rc = ddf_state_save(ctx, "memo", NULL, 0, &f->memo, 1);
        if (rc < 0)
            return rc;
        ddf_log(DDF_LOG_INFO, "features: made the memo");
    } else if (f->memo < 0) {
        return f->memo;
    } else {
        ddf_log(DDF_LOG_INFO, "features: got the memo back");
    }
    return 0;
}

static int f_open(ddf_ctx *ctx, void *data, uint32_t device, int flags, uint64_t *handle)
{
    struct features *f = data;
    static uint64_t next = 1;
    (void)ctx;
    (void)flags;
    for (int i = 0; i < NDEV; i++) {
        if (f->dev[i] == device) {
            /* handle = device in the low byte, an open number above */
            *handle = (next++ << 8) | device;
            f->params_pos[*handle % 64] = 0;
            if (device == f->dev[PIPE]) {
                for (int j = 0; j < 16; j++) {
                    if (f->pipe_open[j] == 0) {
                        f->pipe_open[j] = *handle;
                        break;
                    }
                }
            }
            return 0;
        }
    }
    return -ENXIO;
}

static uint32_t dev_of(uint64_t handle)
{
    return (uint32_t)(handle & 0xff);
}

static void answer_waiting(struct features *f)
{
    if (!f->waiting || f->nbuffered == 0)
        return;
    size_t n = f->nbuffered < ddf_reply_max_len(f->waiting) ? f->nbuffered : ddf_reply_max_len(f->waiting);
    ddf_reply_data(f->waiting, f->buffered, n);
    memmove(f->buffered, f->buffered + n, f->nbuffered - n);
    f->nbuffered -= n;
    f->waiting = NULL;
}

static void f_read(ddf_ctx *ctx, void *data, uint64_t handle, uint64_t offset, uint32_t len, ddf_reply *reply)
{
    struct features *f = data;
    uint32_t dev = dev_of(handle);
    if (dev == f->dev[PARAMS]) {
        char text[2048];
        size_t used = 0;
        const char *key, *value;
        for (size_t i = 0; i < ddf_param_count(ctx) && ddf_param_at(ctx, i, &key, &value) == 0; i++)
            used += (size_t)snprintf(text + used, sizeof text - used, "%s=%s\n", key, value);
        const char *g = ddf_param(ctx, "greeting");
        used += (size_t)snprintf(text + used, sizeof text - used, "greeting is %s\n", g ? g : "(none)");
        uint64_t *pos = &f->params_pos[handle % 64];
        size_t n = *pos < used ? used - *pos : 0;
        n = n < len ? n : len;
        ddf_reply_data(reply, text + *pos, n);
        *pos += n;
    } else if (dev == f->dev[PIPE]) {
        if (f->waiting) {
            ddf_reply_error(reply, -EBUSY);
            return;
        }
        if (f->nbuffered == 0 && (ddf_reply_flags(reply) & O_NONBLOCK)) {
            ddf_reply_error(reply, -EAGAIN);
            return;
        }
        f->waiting = reply;
        f->waiting_handle = handle;
        answer_waiting(f);
    } else if (dev == f->dev[MEMO]) {
        char buf[64];
        ssize_t n = pread(f->memo, buf, len < sizeof buf ? len : sizeof buf, (off_t)offset);
        if (n < 0)
            ddf_reply_error(reply, -errno);
        else
            ddf_reply_data(reply, buf, (size_t)n);
    } else {
        ddf_reply_data(reply, NULL, 0);
    }
}

static void f_write(ddf_ctx *ctx, void *data, uint64_t handle, uint64_t offset, const uint8_t *buf, size_t len,
                    ddf_reply *reply)
{
    struct features *f = data;
    uint32_t dev = dev_of(handle);
    (void)offset;
    if (dev == f->dev[PIPE]) {
        ssize_t n = write(f->pipe[1], buf, len);
        if (n < 0)
            ddf_reply_error(reply, -errno);
        else
            ddf_reply_written(reply, (uint32_t)n);
    } else if (dev == f->dev[CTL] && len >= 11 && memcmp(buf, "remove gone", 11) == 0) {
        int rc = ddf_remove_device(ctx, f->dev[GONE]);
        if (rc < 0)
            ddf_reply_error(reply, rc);
        else
            ddf_reply_written(reply, (uint32_t)len);
    } else if (dev == f->dev[CTL] && len >= 11 && memcmp(buf, "forget memo", 11) == 0) {
        int rc = ddf_state_drop(ctx, "memo");
        if (rc < 0)
            ddf_reply_error(reply, rc);
        else
            ddf_reply_written(reply, (uint32_t)len);
    } else if (dev == f->dev[CTL] && len >= 4 && memcmp(buf, "stop", 4) == 0) {
        ddf_stop(ctx);
        ddf_reply_written(reply, (uint32_t)len);
    } else {
        ddf_reply_error(reply, -EINVAL);
    }
}

static uint32_t f_poll(ddf_ctx *ctx, void *data, uint64_t handle, uint32_t events)
{
    struct features *f = data;
    (void)ctx;
    if (dev_of(handle) != f->dev[PIPE])
        return events & (POLLIN | POLLOUT);
    return (f->nbuffered > 0 ? POLLIN : 0) | POLLOUT;
}

static void f_ready(ddf_ctx *ctx, void *data, uint64_t token)
{
    struct features *f = data;
    if (token != PIPE_TOKEN)
        return;
    ssize_t n = read(f->pipe[0], f->buffered + f->nbuffered, sizeof f->buffered - f->nbuffered);
    if (n > 0) {
        f->nbuffered += (size_t)n;
        answer_waiting(f);
        /* Pollers of the pipe: it became readable. */
        for (int j = 0; j < 16; j++) {
            if (f->pipe_open[j] != 0 && f->nbuffered > 0)
                ddf_poll_wake(ctx, f->pipe_open[j]);
        }
    }
}

static void f_close(ddf_ctx *ctx, void *data, uint64_t handle)
{
    struct features *f = data;
    (void)ctx;
    if (f->waiting && f->waiting_handle == handle) {
        ddf_reply_error(f->waiting, -EBADF);
        f->waiting = NULL;
    }
    for (int j = 0; j < 16; j++) {
        if (f->pipe_open[j] == handle)
            f->pipe_open[j] = 0;
    }
}

static void f_fini(ddf_ctx *ctx, void *data)
{
    struct features *f = data;
    int rc = ddf_unwatch(ctx, PIPE_TOKEN);
    close(f->pipe[0]);
    close(f->pipe[1]);
    ddf_logf(DDF_LOG_INFO, "features: fini (unwatch %d)", rc);
}

/* A table as a newer header might declare it: one more entry. */
struct longer_ops {
    struct ddf_driver_ops ops;
    void (*later)(void);
};

static void later(void) {}

int main(void)
{
    static struct features f;
    static struct longer_ops table = {
        .ops = {
            .init = f_init,
            .fini = f_fini,
            .open = f_open,
            .close = f_close,
            .read = f_read,
            .write = f_write,
            .poll = f_poll,
            .ready = f_ready,
        },
    };
    const char *instance = getenv("DDF_INSTANCE");
    size_t size = sizeof table.ops;
    if (instance && strcmp(instance, "short") == 0) {
        size = offsetof(struct ddf_driver_ops, read);
    } else if (instance && strcmp(instance, "long") == 0) {
        table.later = later;
        size = sizeof table;
    } else if (instance && strcmp(instance, "longnull") == 0) {
        size = sizeof table;
    }
    return ddf_driver_run(&table.ops, size, &f);
}
