/*
 * fuzz_sk_wal — libFuzzer target for safekeeper WAL segment files
 * (safekeeper/sk_wal.h), which a safekeeper scans at start-up to find the
 * end of its WAL (a torn or stale tail is expected there after a crash).
 *
 * Input: byte 0 says how many segment files to make (1 or 2, bit 0); with
 * two, bytes 1-2 (little-endian, mod the rest's length) split the rest
 * between them; the rest is the files' bytes. The first file is
 * 0000000000001000.seg, the second is named by the LSN where the first
 * ends. sk_wal_open (start LSN 0x1000, no term history) then scans them
 * and must either refuse the layout or recover a WAL; everything up to
 * flush_lsn is then read back with sk_wal_read, and one record is
 * appended and flushed at the end found. Properties, abort() on a
 * violation: no crash or sanitizer report; open returns 0 or a documented
 * error; the recovered positions are ordered (removed_below <= flush ==
 * write); reading [removed_below, flush) yields exactly those bytes, each
 * record verifying (except that a bad record in a segment before the last
 * may be found only now, SK_ECORRUPT or SK_EBOUNDARY: open scans only
 * the last one); the
 * append at write_lsn succeeds.
 */
#include <dirent.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "log.h"
#include "sk_wal.h"
#include "wal_record.h"

#define START_LSN 0x1000ull

static void clear_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[1024];
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        CHECK(unlink(path) == 0);
    }
    closedir(d);
}

static void append_one(sk_wal *wal, lsn_t at, lsn_t prev)
{
    static uint8_t image[512];
    wal_record_hdr h = { .page_size = 512, .lsn = at, .prev_lsn = prev, .term = 1,
                         .commit_ts_us = 1, .db_size_pages = 1 };
    wal_page_in p = { 1, image };
    uint8_t *rec = NULL;
    size_t len = 0;
    CHECK(wal_record_encode(&h, &p, 1, 0, &rec, &len) == 0);
    int rc = sk_wal_append(wal, at, rec, len);
    CHECK(rc == 0);
    CHECK(sk_wal_flush(wal) == 0);
    free(rec);
}

static char dir[512];

static void remove_dir(void)
{
    rmdir(dir);  /* before fz_dir's own cleanup (atexit runs in reverse) */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];

    if (dir[0] == '\0') {
        log_init("fuzz", LOG_OFF);  /* torn tails are logged */
        snprintf(dir, sizeof dir, "%s/tl", fz_dir());
        CHECK(mkdir(dir, 0700) == 0);
        atexit(remove_dir);
    }
    if (size < 3 || size > (4u << 20))
        return 0;
    int two = data[0] & 1;
    const uint8_t *body = data + 3;
    size_t len = size - 3, split = len;
    if (two && len > 0)
        split = (size_t)fz_get16(data + 1) % len;
    snprintf(path, sizeof path, "%s/%016llX.seg", dir, START_LSN);
    fz_write_file(path, body, split);
    if (two) {
        snprintf(path, sizeof path, "%s/%016llX.seg", dir,
                 (unsigned long long)(START_LSN + split));
        fz_write_file(path, body + split, len - split);
    }

    sk_wal_options o;
    sk_wal *wal = NULL;
    memset(&o, 0, sizeof o);
    o.dir = dir;
    o.segment_size = SK_WAL_SEGMENT_SIZE_MIN;
    o.start_lsn = START_LSN;
    int rc = sk_wal_open(&o, &wal);
    if (rc == 0) {
        sk_wal_state st;
        sk_wal_get_state(wal, &st);
        CHECK(st.removed_below_lsn >= START_LSN);
        CHECK(st.removed_below_lsn <= st.flush_lsn && st.flush_lsn == st.write_lsn);
        lsn_t at = st.removed_below_lsn, prev = 0;
        while (at < st.flush_lsn) {
            uint8_t *buf = NULL;
            size_t n = 0;
            lsn_t end = 0;
            rc = sk_wal_read(wal, at, st.flush_lsn, 65536, &buf, &n, &end);
            if (rc != 0 && getenv("ARBOR_FUZZ_VERBOSE") != NULL)
                fprintf(stderr, "read at %llx: %d (last segment at %llx)\n",
                        (unsigned long long)at, rc, (unsigned long long)st.last_segment_lsn);
            /* open scans only the last segment: bad bytes in an earlier
             * one show up when read, as SK_ECORRUPT or SK_EBOUNDARY. */
            if ((rc == SK_ECORRUPT || rc == SK_EBOUNDARY) && at < st.last_segment_lsn)
                break;
            CHECK(rc == 0);
            CHECK(n > 0 && end == at + n && end <= st.flush_lsn);
            for (size_t off = 0; off < n;) {
                uint32_t rl = 0;
                CHECK(wal_record_peek_len(buf + off, n - off, &rl) == 0);
                CHECK(rl <= n - off && wal_record_verify(buf + off, rl) == 0);
                prev = at + off;
                off += rl;
            }
            free(buf);
            at = end;
        }
        if (at == st.flush_lsn)
            append_one(wal, st.write_lsn, st.last_record_lsn != 0 ? st.last_record_lsn : prev);
        sk_wal_close(wal);
    } else {
        CHECK(rc < 0);
    }
    clear_dir(dir);
    return 0;
}
