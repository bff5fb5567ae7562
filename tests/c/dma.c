/* ddf-dma: a C driver that uses the DMA memory ddm grants it, for the
 * tests. At init it takes the region (ddf_dma), fills it through its
 * mapping with a pattern (byte i is ((i / 4096) * 37) ^ (i * 11) ^ 0xa5,
 * in 8 bits), and checks the helpers against the scatter list
 * (ddf_dma_segment_at, ddf_dma_bus_addr, ddf_dma_contiguous, and -ERANGE
 * past the end); a failed check ends the driver at init. /ddf/dma then
 * reads a report, the same as the Rust dmatest driver's:
 *
 *   bytes N / page_size N / pinned yes|no / mapping 0xADDR / pattern written
 *   segment OFFSET 0xADDR LENGTH    (one line per segment)
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ddf.h>

#define MAX_OPEN 16

struct dma {
    uint32_t device;
    char *report;
    size_t report_len;
    size_t pos[MAX_OPEN];
    int used[MAX_OPEN];
};

static uint8_t pattern(size_t i)
{
    return (uint8_t)((uint8_t)(i / 4096) * 37u) ^ (uint8_t)((uint8_t)i * 11u) ^ 0xa5u;
}

/* Logs why a check failed and answers -EIO. */
static int fail(const char *what)
{
    ddf_logf(DDF_LOG_ERROR, "dma: %s", what);
    return -EIO;
}

static int dma_init(ddf_ctx *ctx, void *data)
{
    struct dma *d = data;
    struct ddf_dma_info info;
    struct ddf_dma_segment seg;
    uint64_t addr;
    size_t cap, n;
    int rc;

    rc = ddf_dma(ctx, &info);
    if (rc < 0)
        return fail("no DMA memory");
    for (size_t i = 0; i < info.len; i++)
        ((uint8_t *)info.addr)[i] = pattern(i);
    if (info.segments * info.page_size != info.len)
        return fail("segments and length disagree");
    if (ddf_dma_segment_at(ctx, info.segments, &seg) != -ERANGE)
        return fail("a segment past the end is not -ERANGE");
    if (ddf_dma_bus_addr(ctx, info.len, &addr) != -ERANGE || ddf_dma_contiguous(ctx, info.len - 1, 2) != -ERANGE)
        return fail("an offset past the end is not -ERANGE");
    cap = 200 + info.segments * 64;
    d->report = malloc(cap);
    if (!d->report)
        return -ENOMEM;
    n = (size_t)snprintf(d->report, cap, "bytes %zu\npage_size %zu\npinned %s\nmapping %#" PRIxPTR "\npattern written\n",
                         info.len, info.page_size, info.pinned ? "yes" : "no", (uintptr_t)info.addr);
    for (size_t i = 0; i < info.segments; i++) {
        if (ddf_dma_segment_at(ctx, i, &seg) != 0 || seg.offset != i * info.page_size || seg.len != info.page_size)
            return fail("a segment is not where it should be");
        if (ddf_dma_bus_addr(ctx, seg.offset + 5, &addr) != 0 || addr != seg.addr + 5)
            return fail("ddf_dma_bus_addr disagrees with the segment");
        if (ddf_dma_contiguous(ctx, seg.offset, seg.len) != 1)
            return fail("a segment is not contiguous");
        n += (size_t)snprintf(d->report + n, cap - n, "segment %zu %#" PRIx64 " %zu\n", seg.offset, seg.addr, seg.len);
    }
    d->report_len = n;
    ddf_logf(DDF_LOG_INFO, "dma: %zu bytes in %zu segments", info.len, info.segments);
    return ddf_add_device(ctx, "dma", DDF_CLASS_CHAR, 0, &d->device);
}

static int dma_open(ddf_ctx *ctx, void *data, uint32_t device, int flags, uint64_t *handle)
{
    struct dma *d = data;

    (void)ctx;
    (void)flags;
    if (device != d->device)
        return -ENXIO;
    for (uint64_t i = 0; i < MAX_OPEN; i++) {
        if (!d->used[i]) {
            d->used[i] = 1;
            d->pos[i] = 0;
            *handle = i;
            return 0;
        }
    }
    return -EMFILE;
}

static void dma_close(ddf_ctx *ctx, void *data, uint64_t handle)
{
    struct dma *d = data;

    (void)ctx;
    if (handle < MAX_OPEN)
        d->used[handle] = 0;
}

static void dma_read(ddf_ctx *ctx, void *data, uint64_t handle, uint64_t offset, uint32_t len, ddf_reply *reply)
{
    struct dma *d = data;
    size_t left, n;

    (void)ctx;
    (void)offset;
    if (handle >= MAX_OPEN || !d->used[handle]) {
        ddf_reply_error(reply, -EBADF);
        return;
    }
    left = d->report_len - d->pos[handle];
    n = len < left ? len : left;
    ddf_reply_data(reply, d->report + d->pos[handle], n);
    d->pos[handle] += n;
}

int main(void)
{
    static struct dma dma;
    static const struct ddf_driver_ops ops = {
        .init = dma_init,
        .open = dma_open,
        .close = dma_close,
        .read = dma_read,
    };

    return ddf_driver_run(&ops, sizeof ops, &dma);
}
