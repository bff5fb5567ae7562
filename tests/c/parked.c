/* ddf-parked: a C driver whose reads wait, answered later from other
 * threads, for the tests of deferred replies.
 *
 * /ddf/later   a read is parked; a worker thread wakes the runtime through
 *              a ddf_waker 200 ms later, and the wake callback (on the
 *              runtime's thread) answers it "woken\n".
 * /ddf/thread  a read is parked and handed to a worker thread that answers
 *              it itself, 200 ms later, "threaded\n".
 * /ddf/forever a read is parked until its caller gives up: the cancel
 *              callback answers it -EINTR.
 *
 * Each open reads its line once, then end of file.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ddf.h>

#define MAX_PARKED 64

enum dev { LATER, THREAD, FOREVER, NDEV };

struct parked {
    pthread_mutex_t lock;
    uint32_t dev[NDEV];
    ddf_waker *waker;
    /* Reads of /ddf/later waiting for the wake; reads of /ddf/forever. */
    ddf_reply *later[MAX_PARKED];
    ddf_reply *forever[MAX_PARKED];
    /* Per handle (= index): its device, and whether it read its line. */
    struct {
        int used;
        enum dev dev;
        int done;
    } open[MAX_PARKED];
    /* Reads of /ddf/later due, counted by the worker thread. */
    int due;
};

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int push(ddf_reply **slots, ddf_reply *r)
{
    for (int i = 0; i < MAX_PARKED; i++) {
        if (!slots[i]) {
            slots[i] = r;
            return 0;
        }
    }
    return -EAGAIN;
}

static void *waker_thread(void *arg)
{
    struct parked *p = arg;
    sleep_ms(200);
    pthread_mutex_lock(&p->lock);
    p->due++;
    pthread_mutex_unlock(&p->lock);
    ddf_waker_wake(p->waker);
    return NULL;
}

static void *answer_thread(void *arg)
{
    ddf_reply *r = arg;
    sleep_ms(200);
    /* Not the runtime's thread: replies may be answered from anywhere. */
    ddf_reply_data(r, "threaded\n", 9);
    return NULL;
}

static void spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) == 0)
        pthread_detach(t);
}

static int parked_init(ddf_ctx *ctx, void *data)
{
    struct parked *p = data;
    static const char *names[NDEV] = { "later", "thread", "forever" };
    for (int i = 0; i < NDEV; i++) {
        int rc = ddf_add_device(ctx, names[i], DDF_CLASS_CHAR, 0, &p->dev[i]);
        if (rc < 0)
            return rc;
    }
    p->waker = ddf_waker_new(ctx);
    return 0;
}

static int parked_open(ddf_ctx *ctx, void *data, uint32_t device, int flags, uint64_t *handle)
{
    struct parked *p = data;
    (void)ctx;
    (void)flags;
    for (int d = 0; d < NDEV; d++) {
        if (p->dev[d] != device)
            continue;
        for (uint64_t i = 0; i < MAX_PARKED; i++) {
            if (!p->open[i].used) {
                p->open[i].used = 1;
                p->open[i].dev = d;
                p->open[i].done = 0;
                *handle = i;
                return 0;
            }
        }
        return -EMFILE;
    }
    return -ENXIO;
}

static void parked_close(ddf_ctx *ctx, void *data, uint64_t handle)
{
    struct parked *p = data;
    (void)ctx;
    if (handle < MAX_PARKED)
        p->open[handle].used = 0;
}

static void parked_read(ddf_ctx *ctx, void *data, uint64_t handle, uint64_t offset, uint32_t len,
                        ddf_reply *reply)
{
    struct parked *p = data;
    (void)ctx;
    (void)offset;
    (void)len;
    if (handle >= MAX_PARKED || !p->open[handle].used) {
        ddf_reply_error(reply, -EBADF);
        return;
    }
    if (p->open[handle].done) {
        ddf_reply_data(reply, NULL, 0);
        return;
    }
    p->open[handle].done = 1;
    switch (p->open[handle].dev) {
    case LATER:
        if (push(p->later, reply) < 0) {
            ddf_reply_error(reply, -EAGAIN);
            return;
        }
        spawn(waker_thread, p);
        break;
    case THREAD:
        spawn(answer_thread, reply);
        break;
    case FOREVER:
        if (push(p->forever, reply) < 0)
            ddf_reply_error(reply, -EAGAIN);
        break;
    default:
        ddf_reply_error(reply, -EIO);
    }
}

/* On the runtime's thread: answer as many parked reads of /ddf/later as
 * wake-ups are due. */
static void parked_wake(ddf_ctx *ctx, void *data)
{
    struct parked *p = data;
    (void)ctx;
    pthread_mutex_lock(&p->lock);
    int due = p->due;
    p->due = 0;
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < MAX_PARKED && due > 0; i++) {
        if (p->later[i]) {
            ddf_reply_data(p->later[i], "woken\n", 6);
            p->later[i] = NULL;
            due--;
        }
    }
}

static int cancel_in(ddf_reply **slots, uint64_t request)
{
    for (int i = 0; i < MAX_PARKED; i++) {
        if (slots[i] && ddf_reply_id(slots[i]) == request) {
            ddf_reply_error(slots[i], -EINTR);
            slots[i] = NULL;
            return 1;
        }
    }
    return 0;
}

static void parked_cancel(ddf_ctx *ctx, void *data, uint64_t request)
{
    struct parked *p = data;
    (void)ctx;
    if (cancel_in(p->forever, request) || cancel_in(p->later, request))
        ddf_logf(DDF_LOG_INFO, "parked: request %llu cancelled, answered EINTR", (unsigned long long)request);
}

static void parked_fini(ddf_ctx *ctx, void *data)
{
    struct parked *p = data;
    (void)ctx;
    ddf_waker_free(p->waker);
    ddf_log(DDF_LOG_INFO, "parked: fini, waker freed");
}

int main(void)
{
    static struct parked p = { .lock = PTHREAD_MUTEX_INITIALIZER };
    static const struct ddf_driver_ops ops = {
        .init = parked_init,
        .fini = parked_fini,
        .open = parked_open,
        .close = parked_close,
        .read = parked_read,
        .cancel = parked_cancel,
        .wake = parked_wake,
    };
    return ddf_driver_run(&ops, sizeof ops, &p);
}
