/* hello.c: ddf-hello, the driver of /ddf/hello, in C.
 *
 * Every open of /ddf/hello reads "hello\n", then end of file. The ioctl
 * HELLO_GET_GREETINGS answers how many greetings the device has given: a
 * count the driver keeps in ddm's state store, so that it survives a crash
 * and restart of the driver, and shows as a counter in `ddmctl status`.
 *
 * Build: cc -o ddf-hello hello.c $(pkg-config --cflags --libs ddf)
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <ddf.h>

#include "hello.h"

#define GREETING "hello\n"
#define MAX_OPEN 64

struct hello {
    uint32_t device;
    uint64_t greetings;
    /* Per open: whether it is in use, and how much of GREETING it read. */
    struct {
        int used;
        size_t pos;
    } open[MAX_OPEN];
};

static int hello_init(ddf_ctx *ctx, void *data)
{
    struct hello *h = data;
    uint64_t saved;

    /* What an earlier incarnation left in the state store, if anything. */
    if (ddf_state_get(ctx, "greetings", &saved, sizeof saved) == sizeof saved)
        h->greetings = saved;
    ddf_logf(DDF_LOG_INFO, "hello: libddf %s, %llu greetings so far", ddf_version(),
             (unsigned long long)h->greetings);
    ddf_counter_set(ctx, "greetings", h->greetings);
    return ddf_add_device(ctx, "hello", DDF_CLASS_CHAR, 0, &h->device);
}

static int hello_open(ddf_ctx *ctx, void *data, uint32_t device, int flags, uint64_t *handle)
{
    struct hello *h = data;

    (void)ctx;
    (void)flags;
    if (device != h->device)
        return -ENXIO;
    for (uint64_t i = 0; i < MAX_OPEN; i++) {
        if (!h->open[i].used) {
            h->open[i].used = 1;
            h->open[i].pos = 0;
            *handle = i;
            return 0;
        }
    }
    return -EMFILE;
}

static void hello_close(ddf_ctx *ctx, void *data, uint64_t handle)
{
    struct hello *h = data;

    (void)ctx;
    if (handle < MAX_OPEN)
        h->open[handle].used = 0;
}

static void hello_read(ddf_ctx *ctx, void *data, uint64_t handle, uint64_t offset, uint32_t len,
                       ddf_reply *reply)
{
    struct hello *h = data;
    size_t left, n;

    (void)offset;
    if (handle >= MAX_OPEN || !h->open[handle].used) {
        ddf_reply_error(reply, -EBADF);
        return;
    }
    left = strlen(GREETING) - h->open[handle].pos;
    n = len < left ? len : left;
    if (n > 0 && n == left) {
        /* The greeting is complete: count it, in the state store first, so
         * that a greeting the reader got is never forgotten. */
        h->greetings++;
        ddf_state_save(ctx, "greetings", &h->greetings, sizeof h->greetings, NULL, 0);
        ddf_counter_set(ctx, "greetings", h->greetings);
    }
    ddf_reply_data(reply, GREETING + h->open[handle].pos, n);
    h->open[handle].pos += n;
}

static void hello_ioctl(ddf_ctx *ctx, void *data, uint64_t handle, uint32_t cmd, const uint8_t *in,
                        size_t in_len, uint32_t out_len, ddf_reply *reply)
{
    struct hello *h = data;

    (void)ctx;
    (void)handle;
    (void)in;
    (void)in_len;
    if (cmd != HELLO_GET_GREETINGS) {
        ddf_reply_error(reply, -ENOTTY);
        return;
    }
    if (out_len < sizeof h->greetings) {
        ddf_reply_error(reply, -EINVAL);
        return;
    }
    ddf_reply_ioctl(reply, 0, &h->greetings, sizeof h->greetings);
}

int main(void)
{
    static struct hello hello;
    static const struct ddf_driver_ops ops = {
        .init = hello_init,
        .open = hello_open,
        .close = hello_close,
        .read = hello_read,
        .ioctl = hello_ioctl,
    };

    return ddf_driver_run(&ops, sizeof ops, &hello);
}
