/* ddf-violate: a C driver that breaks the API on purpose, for the tests:
 * every read of one of its devices commits one violation the header
 * forbids. The library must log it clearly and end the driver; ddm must
 * restart it and notice nothing else.
 *
 * /ddf/twice      answers the read, then answers the same reply again
 * /ddf/nullname   passes NULL as a counter's name
 * /ddf/badreturn  its open returns 7 (neither 0 nor a negative errno)
 * /ddf/stalectx   keeps its ctx and uses it from another thread
 * /ddf/fine       behaves: a block device of 5 bytes, "fine\n"
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <ddf.h>

enum dev { TWICE, NULLNAME, BADRETURN, STALECTX, FINE, NDEV };

struct violate {
    uint32_t dev[NDEV];
};

static ddf_ctx *kept;

static void *use_kept_ctx(void *arg)
{
    (void)arg;
    ddf_counter_set(kept, "from_another_thread", 1);
    return NULL;
}

static int v_init(ddf_ctx *ctx, void *data)
{
    struct violate *v = data;
    static const char *names[NDEV] = { "twice", "nullname", "badreturn", "stalectx", "fine" };
    for (int i = 0; i < NDEV; i++) {
        int rc = i == FINE ? ddf_add_device(ctx, names[i], DDF_CLASS_BLOCK, 5, &v->dev[i])
                           : ddf_add_device(ctx, names[i], DDF_CLASS_CHAR, 0, &v->dev[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int v_open(ddf_ctx *ctx, void *data, uint32_t device, int flags, uint64_t *handle)
{
    struct violate *v = data;
    (void)ctx;
    (void)flags;
    if (device == v->dev[BADRETURN])
        return 7;
    *handle = device;
    return 0;
}

static void v_read(ddf_ctx *ctx, void *data, uint64_t handle, uint64_t offset, uint32_t len,
                   ddf_reply *reply)
{
    struct violate *v = data;
    pthread_t t;
    if (handle == v->dev[TWICE]) {
        ddf_reply_data(reply, "once\n", 5);
        ddf_reply_data(reply, "twice\n", 6);
    } else if (handle == v->dev[NULLNAME]) {
        ddf_counter_set(ctx, NULL, 1);
        ddf_reply_data(reply, NULL, 0);
    } else if (handle == v->dev[STALECTX]) {
        kept = ctx;
        ddf_reply_data(reply, NULL, 0);
        if (pthread_create(&t, NULL, use_kept_ctx, NULL) == 0)
            pthread_detach(t);
    } else {
        /* fine */
        size_t n = offset < 5 ? 5 - offset : 0;
        ddf_reply_data(reply, "fine\n" + (offset < 5 ? offset : 5), n < len ? n : len);
    }
}

int main(void)
{
    static struct violate v;
    static const struct ddf_driver_ops ops = {
        .init = v_init,
        .open = v_open,
        .read = v_read,
    };
    return ddf_driver_run(&ops, sizeof ops, &v);
}
