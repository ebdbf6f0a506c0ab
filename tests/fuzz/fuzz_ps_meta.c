/*
 * fuzz_ps_meta — libFuzzer target for the pageserver's other on-disk and
 * remote-storage formats besides layer files: the timeline metadata file
 * (ps_meta_decode), the commits index file (ps_commits_open and its
 * lookups) and the remote index_part.json (ps_remote_index_check, the
 * decoder a pageserver runs on what it fetches at attach).
 *
 * The first input byte picks the format (mod 3):
 *   0  metadata: the rest is the file; an accepted file must re-encode to
 *      the identical 256 bytes. Tried again with its XXH3 repaired.
 *   1  commits: bytes 1..16 are the start and durable LSNs given to open,
 *      the rest is the file; after a successful open every lookup is
 *      answered (0 or PS_ENOCOMMIT). Tried again with the header's and
 *      every entry's XXH3 repaired.
 *   2  index_part.json: the rest is the JSON.
 * Properties: no crash, sanitizer report or unbounded allocation; every
 * decoder returns 0 or PS_ECORRUPT (-errno for commits I/O).
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "fuzz_common.h"
#include "log.h"
#include "ps_commits.h"
#include "ps_meta.h"
#include "ps_remote.h"

static void meta_one(const uint8_t *buf, size_t len)
{
    ps_meta m;
    uint8_t enc[PS_META_BYTES];
    int rc = ps_meta_decode(buf, len, &m);
    if (getenv("ARBOR_FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "metadata: %d\n", rc);
    CHECK(rc == 0 || rc == PS_ECORRUPT);
    if (rc == 0) {
        ps_meta_encode(&m, enc);
        CHECK(len == PS_META_BYTES && memcmp(enc, buf, len) == 0);
    }
}

static void commits_one(lsn_t start, lsn_t durable, const uint8_t *buf, size_t len)
{
    char path[512];
    arbor_id tl;
    ps_commits *c = NULL;
    ps_commit e;

    memset(&tl, 0, sizeof tl);
    if (len >= PS_COMMITS_HEADER_BYTES)
        memcpy(tl.b, buf + 8, 16);
    snprintf(path, sizeof path, "%s/commits", fz_dir());
    fz_write_file(path, buf, len);
    int rc = ps_commits_open(&disk_io_default, path, &tl, start, durable, &c);
    if (getenv("ARBOR_FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "commits: %d\n", rc);
    if (rc == 0) {
        rc = ps_commits_first(c, &e);
        CHECK(rc == 0 || rc == PS_ENOCOMMIT);
        rc = ps_commits_last(c, UINT64_MAX, &e);
        CHECK(rc == 0 || rc == PS_ENOCOMMIT);
        rc = ps_commits_at_or_below(c, durable / 2 + start / 2, &e);
        CHECK(rc == 0 || rc == PS_ENOCOMMIT);
        rc = ps_commits_by_ts(c, INT64_MAX / 3, UINT64_MAX, &e);
        CHECK(rc == 0 || rc == PS_ENOCOMMIT);
        ps_commits_close(c);
    } else {
        CHECK(rc < 0);
    }
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int logging;
    if (!logging) {
        log_init("fuzz", LOG_OFF);
        logging = 1;
    }
    if (size < 1 || size > (1u << 20))
        return 0;
    const uint8_t *body = data + 1;
    size_t len = size - 1;

    switch (data[0] % 3) {
    case 0: {
        meta_one(body, len);
        if (len == PS_META_BYTES) {
            uint8_t fixed[PS_META_BYTES];
            memcpy(fixed, body, len);
            fz_put64(fixed + 248, XXH3_64bits(fixed, 248));
            meta_one(fixed, len);
        }
        break;
    }
    case 1: {
        if (len < 16)
            return 0;
        lsn_t start = fz_get64(body), durable = fz_get64(body + 8);
        body += 16;
        len -= 16;
        commits_one(start, durable, body, len);
        if (len >= PS_COMMITS_HEADER_BYTES) {
            uint8_t *fixed = malloc(len);
            CHECK(fixed != NULL);
            memcpy(fixed, body, len);
            fz_put64(fixed + 24, XXH3_64bits(fixed, 24));
            for (size_t i = 0; PS_COMMITS_HEADER_BYTES + (i + 1) * PS_COMMITS_ENTRY_BYTES <= len; i++) {
                uint8_t *e = fixed + PS_COMMITS_HEADER_BYTES + i * PS_COMMITS_ENTRY_BYTES;
                fz_put64(e + 24, XXH3_64bits_withSeed(e, 24, i));
            }
            commits_one(start, durable, fixed, len);
            free(fixed);
        }
        break;
    }
    default: {
        int rc = ps_remote_index_check(body, len);
        if (getenv("ARBOR_FUZZ_VERBOSE") != NULL)
            fprintf(stderr, "index: %d\n", rc);
        CHECK(rc == 0 || rc == PS_ECORRUPT);
        break;
    }
    }
    return 0;
}
