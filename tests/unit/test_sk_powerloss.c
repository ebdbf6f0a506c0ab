/*
 * Power loss of a safekeeper (issue 16 item 3): the real acceptor (sk_reg_*
 * and sk_tl_* over sk_control and sk_wal) on a disk that loses every write
 * not yet fsynced and every directory change not yet fsync_dir'ed when the
 * power goes (pl_disk.h).
 *
 * One seed: three timelines, one proposer each (votes and Elected in
 * growing terms, appends of 1-3 records with a flush after each, reports of
 * what the pageserver persisted, one delete), until the disk stops at a
 * random mutating call; then a power cut (every pending change lost, or a
 * random subset of each file's pending writes kept), a reopen, and the
 * checks: the registry opens; a deleted timeline stays deleted; a timeline
 * that granted a vote is there; its term is at least every term it granted;
 * its flush LSN is at least every flush it acknowledged; its WAL, read back
 * from the oldest record it keeps, is byte for byte what was appended (a
 * kept unsynced tail included, never a half record); nothing was removed
 * above what was reported persisted; its history keeps every term whose
 * records it holds. Three cuts per seed; SK_PL_SEEDS seeds (default 200),
 * SK_PL_SEED replays one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"
#include "sk_history.h"
#include "sk_timeline.h"
#include "unit/pl_disk.h"
#include "unit/test_sk_util.h"

#define SEG (16u * 1024)        /* small: segments roll and go often */
#define START_LSN ((lsn_t)0x1000000)
#define N_TL 3

/* What a proposer of one timeline knows was acknowledged. */
typedef struct slot {
    uint8_t id[16];
    sk_timeline *tl;
    bool voted;               /* a vote was granted: it must exist */
    bool deleted;             /* sk_reg_delete returned 0 */
    bool elected;             /* elected in `term` since the last open */
    uint64_t term;
    uint64_t acked_term;      /* highest term granted */
    skh_entry hist[SKH_MAX_ENTRIES];
    uint32_t n_hist;
    tlog log;                 /* every record appended since START_LSN */
    lsn_t acked_flush;        /* highest flush LSN acknowledged */
    lsn_t persisted;          /* highest LSN reported persisted */
} slot;

typedef struct rig {
    char *dir;
    pl_disk *pl;
    sk_registry *reg;
    uint64_t rng;
    uint8_t tenant[16];
    slot s[N_TL];
    long acks, bytes_lost, deletes, tails_kept;
} rig;

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint32_t rnd(rig *r, uint32_t n)
{
    return (uint32_t)(rng_next(&r->rng) % n);
}

static void reg_open(rig *r)
{
    sk_reg_options o = { .datadir = r->dir, .io = pl_disk_io(r->pl), .node_id = 1,
                         .segment_size_bytes = SEG };
    int rc = sk_reg_open(&o, &r->reg);
    if (rc != 0) {
        fail_msg("the safekeeper does not open after a power cut: %s", sk_tl_strerror(rc));
    }
}

/* Every failure of a call must come from the stopped disk. */
static bool failed(rig *r, int rc, const char *what)
{
    if (rc == 0) {
        return false;
    }
    if (!pl_disk_stopped(r->pl)) {
        fail_msg("%s failed on a working disk: %s", what, sk_tl_strerror(rc));
    }
    return true;
}

/* The index of the record at lsn in the model (n when lsn is its end). */
static size_t rec_at(const tlog *l, lsn_t lsn)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->lsn[i] == lsn) {
            return i;
        }
    }
    if (lsn != l->end) {
        fail_msg("LSN %" PRIX64 " is not a record boundary of what was appended", lsn);
    }
    return l->n;
}

/* Vote + Elected in a new term, the history ending at what we hold. */
static bool elect(rig *r, slot *s)
{
    sk_tl_state st;
    sk_tl_get_state(s->tl, &st);
    uint64_t term = (st.term > s->term ? st.term : s->term) + 1;
    bool granted = false;
    if (failed(r, sk_tl_vote(s->tl, term, &granted, &st), "vote")) {
        return false;
    }
    assert_true(granted);
    s->voted = true;
    s->acked_term = term;
    s->term = term;
    assert_int_equal(st.flush_lsn, s->log.end);
    assert_true(s->n_hist < SKH_MAX_ENTRIES);
    s->hist[s->n_hist++] = (skh_entry){ term, s->log.end };
    if (failed(r, sk_tl_elected(s->tl, term, s->hist, s->n_hist, s->log.end, s->acked_flush,
                                &st), "elected")) {
        return false;
    }
    s->elected = true;
    return true;
}

static bool append(rig *r, slot *s)
{
    size_t i0 = s->log.n;
    for (uint32_t k = 1 + rnd(r, 3); k > 0; k--) {
        tlog_add(&s->log, s->term, 1 + rnd(r, 4), rnd(r, 256));
    }
    uint64_t our;
    int rc = sk_tl_append(s->tl, s->term, s->log.lsn[i0], s->log.bytes + s->log.off[i0],
                          tlog_bytes(&s->log, i0, s->log.n), s->acked_flush, &our);
    if (failed(r, rc, "append")) {
        return false;
    }
    lsn_t flush, commit;
    if (failed(r, sk_tl_flush(s->tl, s->term, &flush, &commit), "flush")) {
        return false;
    }
    assert_int_equal(flush, s->log.end);
    s->acked_flush = flush;
    r->acks++;
    return true;
}

/* The pageserver persisted up to a record at or below the acknowledged
 * flush LSN: WAL below it (and below the commit LSN) may go. */
static bool report(rig *r, slot *s)
{
    size_t n = rec_at(&s->log, s->acked_flush);
    if (n == 0) {
        return true;
    }
    lsn_t lsn = s->log.lsn[rnd(r, (uint32_t)n)];
    lsn_t removed;
    /* reported, answered or not: the bound for what may go */
    s->persisted = lsn > s->persisted ? lsn : s->persisted;
    return !failed(r, sk_tl_report_persisted(s->tl, lsn, &removed), "report_persisted");
}

/* Random work until the disk stops or `steps` are done. */
static void work(rig *r, int steps)
{
    for (int k = 0; k < steps && !pl_disk_stopped(r->pl); k++) {
        slot *s = &r->s[rnd(r, N_TL)];
        if (s->deleted) {
            continue;
        }
        if (!s->tl) {
            failed(r, sk_reg_get(r->reg, r->tenant, s->id, START_LSN, &s->tl), "create");
            continue;
        }
        uint32_t what = rnd(r, 40);
        if (!s->elected || what == 0) {
            elect(r, s);
        } else if (what == 1 && s == &r->s[0]) {
            /* only slot 0 is ever deleted: the others live on */
            if (!failed(r, sk_reg_delete(r->reg, r->tenant, s->id), "delete")) {
                s->deleted = true;
                s->tl = NULL;
                r->deletes++;
            }
        } else if (what < 6) {
            report(r, s);
        } else {
            append(r, s);
        }
    }
}

/* WAL from `from` to `to` read back through the acceptor. */
static void check_wal(slot *s, lsn_t from, lsn_t to)
{
    size_t i = rec_at(&s->log, from);
    size_t off = i < s->log.n ? s->log.off[i] : s->log.nbytes;
    lsn_t pos = from;
    while (pos < to) {
        uint8_t *buf;
        size_t len;
        lsn_t next;
        int rc = sk_tl_read(s->tl, pos, true, to, 1 << 20, &buf, &len, &next);
        if (rc != 0 || len == 0) {
            fail_msg("WAL at %" PRIX64 " (up to %" PRIX64 ") unreadable after the cut: %s",
                     pos, to, rc ? sk_tl_strerror(rc) : "nothing there");
        }
        if (off + len > s->log.nbytes || memcmp(buf, s->log.bytes + off, len) != 0) {
            fail_msg("WAL at %" PRIX64 " differs from what was appended", pos);
        }
        free(buf);
        off += len;
        pos = next;
    }
}

/* After the cut and reopen: the guarantees, then the proposer's view of
 * each timeline becomes what the acceptor holds. */
static void check(rig *r)
{
    for (int i = 0; i < N_TL; i++) {
        slot *s = &r->s[i];
        s->tl = NULL;
        s->elected = false;
        int rc = sk_reg_get(r->reg, r->tenant, s->id, s->deleted ? START_LSN : 0, &s->tl);
        if (s->deleted) {
            if (rc != SK_TL_EDELETED) {
                fail_msg("timeline %d was deleted and is back after the cut (%s)", i,
                         rc ? sk_tl_strerror(rc) : "opened");
            }
            s->tl = NULL;
            continue;
        }
        if (rc == SK_TL_ENOTFOUND && !s->voted) {
            tlog_cut(&s->log, 0);   /* its create never got a vote: gone is fine */
            s->n_hist = 0;
            s->acked_flush = START_LSN;
            continue;
        }
        if (rc != 0) {
            fail_msg("timeline %d granted a vote in term %" PRIu64 " and is %s after the cut",
                     i, s->acked_term, sk_tl_strerror(rc));
        }
        sk_tl_state st;
        sk_tl_get_state(s->tl, &st);
        if (st.term < s->acked_term) {
            fail_msg("timeline %d: term %" PRIu64 " after the cut, a vote in %" PRIu64
                     " was granted before it", i, st.term, s->acked_term);
        }
        if (st.flush_lsn < s->acked_flush) {
            fail_msg("timeline %d: flush LSN %" PRIX64 " after the cut, %" PRIX64
                     " acknowledged before it", i, st.flush_lsn, s->acked_flush);
        }
        if (st.flush_lsn > s->log.end) {
            fail_msg("timeline %d: flush LSN %" PRIX64 " beyond anything appended (%" PRIX64 ")",
                     i, st.flush_lsn, s->log.end);
        }
        lsn_t floor = s->persisted > START_LSN ? s->persisted : START_LSN;
        if (st.removed_below_lsn > floor) {
            fail_msg("timeline %d: WAL removed below %" PRIX64 ", only %" PRIX64
                     " was reported persisted", i, st.removed_below_lsn, floor);
        }
        /* the oldest record it keeps, then everything up to its flush */
        lsn_t from = START_LSN;
        for (size_t k = 0; k < s->log.n && s->log.lsn[k] < st.removed_below_lsn; k++) {
            from = k + 1 < s->log.n ? s->log.lsn[k + 1] : s->log.end;
        }
        if (from < st.flush_lsn) {
            check_wal(s, from, st.flush_lsn);
        }
        r->bytes_lost += (long)(s->log.end - st.flush_lsn);
        r->tails_kept += st.flush_lsn > s->acked_flush;
        /* terms of the records it holds: each history entry below its
         * flush LSN is the proposer's */
        uint32_t k = 0;
        for (; k < s->n_hist && s->hist[k].lsn < st.flush_lsn; k++) {
            if (k >= st.history.n || st.history.e[k].term != s->hist[k].term ||
                st.history.e[k].lsn != s->hist[k].lsn) {
                fail_msg("timeline %d: history entry %u (term %" PRIu64 " at %" PRIX64
                         ") lost or changed by the cut", i, k, s->hist[k].term, s->hist[k].lsn);
            }
        }
        tlog_cut(&s->log, rec_at(&s->log, st.flush_lsn));
        s->acked_flush = st.flush_lsn;
        s->n_hist = st.history.n;
        memcpy(s->hist, st.history.e, st.history.n * sizeof(*s->hist));
        s->term = st.term;
    }
}

static void run_seed(uint64_t seed, rig *r)
{
    memset(r, 0, sizeof(*r));
    char tmpl[] = "/tmp/arbor_sk_pl_XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    r->dir = strdup(tmpl);
    r->rng = seed;
    r->pl = pl_disk_new(r->dir, seed);
    assert_non_null(r->pl);
    r->tenant[0] = 0x7E;
    for (int i = 0; i < N_TL; i++) {
        r->s[i].id[0] = (uint8_t)(0xA0 + i);
        r->s[i].id[15] = (uint8_t)seed;
        tlog_init(&r->s[i].log, START_LSN);
        r->s[i].acked_flush = START_LSN;
    }
    reg_open(r);
    work(r, 30);
    for (int cut = 0; cut < 3; cut++) {
        pl_disk_arm(r->pl, 1 + (long)rnd(r, 250));
        work(r, 200);
        sk_reg_close(r->reg);  /* the disk is stopped: nothing more lands */
        r->reg = NULL;
        assert_int_equal(pl_disk_power_cut(r->pl, (pl_cut_mode)rnd(r, 2)), 0);
        reg_open(r);
        check(r);
    }
}

static void rig_free(rig *r)
{
    sk_reg_close(r->reg);
    for (int i = 0; i < N_TL; i++) {
        tlog_free(&r->s[i].log);
    }
    pl_disk_free(r->pl);
    fs_remove_tree(r->dir);
    free(r->dir);
}

static uint64_t running_seed;    /* for the teardown: nonzero while one runs */

static void test_power_loss(void **state)
{
    (void)state;
    const char *one = getenv("SK_PL_SEED");
    const char *n_env = getenv("SK_PL_SEEDS");
    uint64_t first = one ? strtoull(one, NULL, 0) : 1;
    long n = one ? 1 : n_env ? atol(n_env) : 200;
    long acks = 0, lost = 0, deletes = 0, tails = 0, stops = 0, undone = 0, kept = 0;
    long names = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t seed = first; seed < first + (uint64_t)n; seed++) {
        rig r;
        running_seed = seed;
        run_seed(seed, &r);
        pl_disk_stats st = pl_disk_get_stats(r.pl);
        acks += r.acks;
        lost += r.bytes_lost;
        deletes += r.deletes;
        tails += r.tails_kept;
        stops += st.stops;
        undone += st.writes_undone;
        kept += st.writes_kept;
        names += st.names_lost;
        rig_free(&r);
    }
    running_seed = 0;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("[ power loss ] %ld seeds, %ld cuts (%ld at a stopped call) in %.1f s: %ld "
           "acknowledged flushes, %ld deletes; %ld pending writes undone, %ld kept, %ld "
           "names lost; %ld unacknowledged WAL bytes lost, %ld unsynced tails kept whole; "
           "nothing acknowledged lost\n",
           n, 3 * n, stops, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
           acks, deletes, undone, kept, names, lost, tails);
    if (n >= 20) { /* the cuts did lose things */
        assert_true(undone > 0 && kept > 0 && names > 0 && lost > 0 && deletes > 0);
    }
}

static int teardown(void **state)
{
    (void)state;
    if (running_seed) {
        printf("[ power loss ] seed %" PRIu64 " failed; replay: SK_PL_SEED=%" PRIu64
               " test_sk_powerloss\n", running_seed, running_seed);
    }
    return 0;
}

int main(void)
{
    log_init("test_sk_powerloss", getenv("SK_LOG") ? LOG_DEBUG : LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_power_loss, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
