/*
 * fuzz_ps_layer — libFuzzer target for pageserver layer files and their
 * indexes (pageserver/ps_layer.h): the pageserver loads them from its disk
 * and from remote storage, so any bytes must give PS_ECORRUPT, never a
 * crash, an out-of-bounds read or an unbounded allocation.
 *
 * The input is written as a layer file in a scratch directory, opened with
 * the kind, LSNs, page size and timeline its own header claims (so the
 * name/header agreement passes and the fuzzer reaches the index), loaded,
 * and every entry found and read (data checksum, LZ4 inflate). Properties:
 * ps_layer_find(pgno, lsn) of an entry returns that entry; a read of an
 * accepted entry is 0 or PS_ECORRUPT. Each input is tried a second time
 * with every checksum repaired (header, entries' data, index, footer), as
 * random mutations never produce a valid XXH3.
 */
#include <errno.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "fuzz_common.h"
#include "log.h"
#include "ps_layer.h"

#define MAX_READS 2048

static int valid_page_size(uint32_t ps)
{
    return ps >= 512 && ps <= 65536 && (ps & (ps - 1)) == 0;
}

static void one(const uint8_t *buf, size_t len)
{
    char path[512];
    ps_layer *l = NULL;
    ps_layer_kind kind = PS_LAYER_DELTA;
    lsn_t start = 0, end = 1;
    uint32_t page_size = 4096;
    arbor_id tl;

    memset(&tl, 0, sizeof tl);
    if (len >= PS_LAYER_HEADER_BYTES) {
        kind = fz_get16(buf + 6) == PS_LAYER_IMAGE ? PS_LAYER_IMAGE : PS_LAYER_DELTA;
        if (valid_page_size(fz_get32(buf + 8)))
            page_size = fz_get32(buf + 8);
        memcpy(tl.b, buf + 16, 16);
        start = fz_get64(buf + 32);
        end = fz_get64(buf + 40);
    }
    snprintf(path, sizeof path, "%s/layer", fz_dir());
    fz_write_file(path, buf, len);
    ps_layer_open(&disk_io_default, path, kind, start, end, page_size, len, &tl, &l);
    int rc = ps_layer_load(l);
    CHECK(rc == 0 || rc == PS_ECORRUPT);
    if (rc == 0) {
        static uint8_t page[65536];
        for (uint64_t i = 0; i < l->n_entries && i < MAX_READS; i++) {
            uint64_t idx = UINT64_MAX;
            const ps_layer_entry *e = &l->index[i];
            CHECK(ps_layer_find(l, e->pgno, e->lsn, &idx) == 0 && idx == i);
            rc = ps_layer_read(l, i, page);
            CHECK(rc == 0 || rc == PS_ECORRUPT);
        }
        uint64_t idx;
        rc = ps_layer_find(l, UINT32_MAX, UINT64_MAX, &idx);
        CHECK(rc == 0 || rc == PS_ENOTFOUND);
    }
    ps_layer_unref(l);
    unlink(path);
}

/* Recomputes every checksum of a layer-shaped buffer in place. */
static void repair(uint8_t *b, size_t len)
{
    uint64_t hsum = XXH3_64bits(b, 56);
    fz_put64(b + 56, hsum);
    uint8_t *f = b + len - PS_LAYER_FOOTER_BYTES;
    uint64_t io = fz_get64(f + 8), n = fz_get64(f + 16);
    if (io >= PS_LAYER_HEADER_BYTES && n <= len / PS_LAYER_ENTRY_BYTES &&
        io + n * PS_LAYER_ENTRY_BYTES + PS_LAYER_FOOTER_BYTES == len) {
        for (uint64_t i = 0; i < n; i++) {
            uint8_t *e = b + io + i * PS_LAYER_ENTRY_BYTES;
            uint64_t off = fz_get64(e + 24), elen = fz_get32(e + 8);
            if (off <= io && elen <= io - off)
                fz_put64(e + 32, XXH3_64bits(b + off, elen));
        }
        fz_put64(f + 24, XXH3_64bits(b + io, n * PS_LAYER_ENTRY_BYTES));
    }
    fz_put64(f + 32, hsum);
    fz_put64(f + 56, XXH3_64bits(f, 56));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int logging;
    if (!logging) {
        log_init("fuzz", LOG_OFF);  /* a corrupt layer is logged, each time */
        logging = 1;
    }
    one(data, size);
    if (size < PS_LAYER_HEADER_BYTES + PS_LAYER_FOOTER_BYTES || size > (8u << 20))
        return 0;
    uint8_t *fixed = malloc(size);
    CHECK(fixed != NULL);
    memcpy(fixed, data, size);
    repair(fixed, size);
    one(fixed, size);
    free(fixed);
    return 0;
}
