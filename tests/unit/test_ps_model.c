/*
 * The pageserver storage engine against a reference model: random records
 * over a tree of branches created at random commit LSNs; every (timeline,
 * page, LSN) read must equal the model — live, after a simulated restart
 * (close without checkpoint, reopen, re-ingest from disk_consistent_lsn),
 * after compaction, after GC with a short PITR window (reads below the
 * cutoff that are not retained must fail with PS_EBELOW_GC), and with
 * readers running concurrently with ingest, flush, compaction and GC.
 *
 * PS_TEST_SEED repeats a run; PS_TEST_SCALE (percent, default 100) scales
 * the number of records (valgrind runs use 10).
 */
#include "test_ps_util.h"
#include "alloc.h"

#include <pthread.h>
#include <stdatomic.h>

#define PAGE_SIZE 1024u
#define MAX_PGNO 48u
#define N_PGNOS (MAX_PGNO + 2)   /* two never written: zero pages */

typedef struct lease_rec {
    int tl;
    lsn_t lsn;
} lease_rec;

typedef struct ctx {
    char *dir;
    ps_config cfg;
    tps_clock clk;
    ps_clock clock;
    ps_repo *repo;
    tps_model m;
    uint64_t rng;
    lease_rec leases[8];
    int n_leases;
    uint64_t reads;
    uint64_t refused;
} ctx;

static void ctx_init(ctx *c, const char *name)
{
    memset(c, 0, sizeof(*c));
    c->dir = tps_mkdtemp();
    c->rng = tps_seed(name);
    c->clk.now_us = 1700000000000000ll;
    c->clock = (ps_clock){ .ctx = &c->clk, .now_us = tps_clock_now };
    ps_config_default(&c->cfg);
    c->cfg.freeze_bytes = 12 * 1024;
    c->cfg.image_after_deltas = 4;
    c->cfg.clock = &c->clock;
    c->cfg.ancestor_wait_ms = 2000;
    tps_model_init(&c->m, PAGE_SIZE, MAX_PGNO);
}

static void reopen_handles(ctx *c)
{
    for (int i = 0; i < c->m.n_tl; i++) {
        int rc = ps_repo_get_timeline(c->repo, &c->m.tenant, &c->m.tl[i].id,
                                      &c->m.tl[i].h);
        assert_int_equal(rc, 0);
    }
}

static void close_repo(ctx *c)
{
    for (int i = 0; i < c->m.n_tl; i++) {
        ps_timeline_release(c->m.tl[i].h);
        c->m.tl[i].h = NULL;
    }
    ps_repo_close(c->repo);
    c->repo = NULL;
}

/* Simulated restart: nothing is checkpointed, the in-memory layers are
 * lost; re-ingest (parents first) from disk_consistent_lsn. Leases are
 * in-memory only and go too. */
static void restart(ctx *c)
{
    close_repo(c);
    assert_int_equal(ps_repo_open(c->dir, &c->cfg, &c->repo), 0);
    reopen_handles(c);
    for (int i = 0; i < c->m.n_tl; i++) {
        assert_int_equal(ps_timeline_last_record_lsn(c->m.tl[i].h),
                         ps_timeline_disk_consistent_lsn(c->m.tl[i].h));
        tps_model_reingest(&c->m, i);
    }
    c->n_leases = 0;
}

static void ctx_free(ctx *c)
{
    if (c->repo) {
        close_repo(c);
    }
    tps_model_free(&c->m);
    tps_rmdir(c->dir);
}

static int create_branch(ctx *c, int parent, lsn_t at)
{
    tps_tl *p = &c->m.tl[parent];
    int64_t ts = p->last_ts;
    for (size_t r = 0; r < p->n_recs; r++) {
        if (p->recs[r].end == at) {
            ts = p->recs[r].ts;
        }
    }
    int i = tps_model_add_tl(&c->m, parent, at, ts);
    tps_tl *t = &c->m.tl[i];
    ps_timeline_create_args a = { .tenant_id = c->m.tenant,
                                  .branch_name = t->name,
                                  .ancestor_id = p->id, .ancestor_lsn = at };
    assert_int_equal(ps_repo_create_timeline(c->repo, &a, &t->h), 0);
    t->id = *ps_timeline_id(t->h);
    t->prev = 0;
    assert_int_equal(ps_timeline_start_lsn(t->h), at);
    return i;
}

/* A random commit LSN of timeline p (its start included). */
static lsn_t random_commit(ctx *c, int p)
{
    tps_tl *t = &c->m.tl[p];
    uint32_t k = tps_rand(&c->rng, (uint32_t)t->n_recs + 1);
    return k == t->n_recs ? t->start : t->recs[k].end;
}

static void compact_all(ctx *c, bool force)
{
    for (int i = 0; i < c->m.n_tl; i++) {
        assert_int_equal(ps_timeline_compact(c->m.tl[i].h, force, NULL), 0);
    }
}

static void build(ctx *c, int n_records)
{
    assert_int_equal(ps_repo_open(c->dir, &c->cfg, &c->repo), 0);
    assert_int_equal(ps_repo_create_tenant(c->repo, NULL, &c->m.tenant), 0);
    int root = tps_model_add_tl(&c->m, -1, PS_DEFAULT_START_LSN, c->clk.now_us);
    ps_timeline_create_args a = { .tenant_id = c->m.tenant, .branch_name = "main" };
    assert_int_equal(ps_repo_create_timeline(c->repo, &a, &c->m.tl[root].h), 0);
    c->m.tl[root].id = *ps_timeline_id(c->m.tl[root].h);
    for (int r = 0; r < n_records; r++) {
        if (r > 0 && r % (n_records / 6) == 0 && c->m.n_tl < 6) {
            int p = (int)tps_rand(&c->rng, (uint32_t)c->m.n_tl);
            create_branch(c, p, random_commit(c, p));
        }
        /* Favour the newest timelines so branches get history of their own. */
        int i = (int)tps_rand(&c->rng, (uint32_t)c->m.n_tl);
        if (tps_rand(&c->rng, 2)) {
            i = c->m.n_tl - 1;
        }
        tps_rec *rec = tps_model_make_record(&c->m, i, &c->rng, 6, 2000000);
        assert_int_equal(ps_timeline_ingest(c->m.tl[i].h, rec->buf, rec->len), 0);
        if (r % 40 == 39) {
            compact_all(c, false);
        }
    }
    assert_true(c->m.n_tl >= 4);
}

static bool model_retained(const ctx *c, int i, lsn_t lsn)
{
    for (int j = 0; j < c->m.n_tl; j++) {
        if (c->m.tl[j].parent == i && c->m.tl[j].start == lsn) {
            return true;
        }
    }
    for (int k = 0; k < c->n_leases; k++) {
        if (c->leases[k].tl == i && c->leases[k].lsn == lsn) {
            return true;
        }
    }
    return false;
}

/* What a read at lsn must return given the cutoffs (see the header). */
static int expected_status(const ctx *c, int i, lsn_t lsn)
{
    bool first = true;
    while (i >= 0) {
        const tps_tl *t = &c->m.tl[i];
        if (lsn > t->start && first) {
            first = false;
            if (lsn < ps_timeline_gc_cutoff_lsn(t->h) && !model_retained(c, i, lsn)) {
                return PS_EBELOW_GC;
            }
        }
        if (t->parent >= 0 && lsn > t->start) {
            lsn = t->start;
        }
        i = t->parent;
    }
    return 0;
}

static void check_batch(ctx *c, int i, lsn_t lsn, uint8_t *pages, uint8_t *want)
{
    uint32_t pgnos[N_PGNOS];
    lsn_t lsns[N_PGNOS];
    for (uint32_t p = 0; p < N_PGNOS; p++) {
        pgnos[p] = p + 1;
    }
    int expect = expected_status(c, i, lsn);
    int rc = ps_timeline_get_pages(c->m.tl[i].h, pgnos, N_PGNOS, lsn, pages,
                                   lsns, NULL);
    if (rc != expect) {
        fail_msg("timeline %d lsn %llx: status %d (%s), want %d", i,
                 (unsigned long long)lsn, rc, ps_strerror(rc), expect);
    }
    c->reads += N_PGNOS;
    if (rc != 0) {
        c->refused++;
        return;
    }
    for (uint32_t p = 0; p < N_PGNOS; p++) {
        lsn_t vlsn;
        if (!tps_model_check(&c->m, i, pgnos[p], lsn, lsns[p], pages + (size_t)p * PAGE_SIZE,
                             want, &vlsn)) {
            fail_msg("timeline %d pgno %u lsn %llx: got version %llx want %llx",
                     i, pgnos[p], (unsigned long long)lsn,
                     (unsigned long long)lsns[p], (unsigned long long)vlsn);
        }
    }
}

/* Every commit LSN, the LSN after each, the start and LSNs below the start
 * (through the ancestors), batched; plus single reads of a sample. */
static void verify_all(ctx *c, const char *phase)
{
    uint8_t *pages = malloc((size_t)N_PGNOS * PAGE_SIZE);
    uint8_t *want = malloc(PAGE_SIZE), *buf = malloc(PAGE_SIZE);
    c->reads = 0;
    c->refused = 0;
    for (int i = 0; i < c->m.n_tl; i++) {
        tps_tl *t = &c->m.tl[i];
        check_batch(c, i, t->start, pages, want);
        check_batch(c, i, t->start / 2, pages, want);
        for (size_t r = 0; r < t->n_recs; r++) {
            check_batch(c, i, t->recs[r].end, pages, want);
            if (r % 7 == 0) {
                check_batch(c, i, t->recs[r].end + 1, pages, want);
            }
        }
        if (t->parent >= 0) {
            const tps_tl *p = &c->m.tl[t->parent];
            for (size_t r = 0; r < p->n_recs && p->recs[r].end <= t->start; r += 5) {
                check_batch(c, i, p->recs[r].end, pages, want);
            }
        }
        for (int k = 0; k < 200 && t->n_recs; k++) {
            lsn_t lsn = t->recs[tps_rand(&c->rng, (uint32_t)t->n_recs)].end;
            uint32_t pg = 1 + tps_rand(&c->rng, N_PGNOS);
            int rc = tps_check_page(&c->m, i, pg, lsn, buf, want);
            assert_int_equal(rc, expected_status(c, i, lsn));
        }
    }
    printf("[ %s ] %llu page reads match the model (%llu batches refused "
           "below the GC cutoff, as the model says)\n", phase,
           (unsigned long long)c->reads, (unsigned long long)c->refused);
    free(pages);
    free(want);
    free(buf);
}

static void checkpoint_all(ctx *c)
{
    for (int i = 0; i < c->m.n_tl; i++) {
        assert_int_equal(ps_timeline_checkpoint(c->m.tl[i].h), 0);
        assert_int_equal(ps_timeline_disk_consistent_lsn(c->m.tl[i].h),
                         c->m.tl[i].last_lsn);
    }
}

/* After a forced compaction at head, a read at head visits one layer. */
static void check_visit_bound(ctx *c)
{
    checkpoint_all(c);
    compact_all(c, true);
    tps_tl *t = &c->m.tl[0];
    uint8_t buf[PAGE_SIZE];
    for (uint32_t p = 1; p <= MAX_PGNO; p++) {
        ps_read_stats st = { 0 };
        lsn_t l;
        assert_int_equal(ps_timeline_get_page(t->h, p, t->last_lsn, buf, &l, &st), 0);
        assert_true(st.layers_visited <= 1);
    }
    ps_timeline_info info;
    ps_timeline_get_info(t->h, &info);
    printf("[ compaction ] root: %u layer files, %llu bytes, %llu reads visited "
           "%llu layers\n", info.layer_count,
           (unsigned long long)info.physical_size_bytes,
           (unsigned long long)info.reads, (unsigned long long)info.layers_visited);
}

/* The cutoff GC must pick for timeline i: the last own commit at or before
 * now - window, never above disk_consistent_lsn, at least the start. */
static lsn_t model_cutoff(ctx *c, int i, uint32_t window_s)
{
    tps_tl *t = &c->m.tl[i];
    lsn_t cut = t->start;
    for (size_t r = 0; r < t->n_recs; r++) {
        if (t->recs[r].ts <= c->clk.now_us - (int64_t)window_s * 1000000) {
            cut = t->recs[r].end;
        }
    }
    lsn_t dcl = ps_timeline_disk_consistent_lsn(t->h);
    return cut < dcl ? cut : dcl;
}

static void take_lease(ctx *c, int i, lsn_t lsn)
{
    int64_t until;
    assert_int_equal(ps_timeline_lease_lsn(c->m.tl[i].h, lsn, 100000, &until), 0);
    assert_true(until > c->clk.now_us);
    c->leases[c->n_leases++] = (lease_rec){ i, lsn };
}

static void run_gc(ctx *c)
{
    checkpoint_all(c);
    int64_t last = 0;
    for (int i = 0; i < c->m.n_tl; i++) {
        last = c->m.tl[i].last_ts > last ? c->m.tl[i].last_ts : last;
    }
    c->clk.now_us = last + 1000000;
    tps_tl *root = &c->m.tl[0];
    take_lease(c, 0, root->recs[root->n_recs / 4].end);
    uint64_t removed = 0;
    for (int i = c->m.n_tl - 1; i >= 0; i--) {
        tps_tl *t = &c->m.tl[i];
        int64_t mid_ts = t->n_recs ? t->recs[t->n_recs / 2].ts : t->last_ts;
        uint32_t window = (uint32_t)((c->clk.now_us - mid_ts) / 1000000) + 1;
        assert_int_equal(ps_timeline_set_pitr_window(t->h, window), 0);
        ps_gc_result res;
        assert_int_equal(ps_timeline_gc(t->h, &res), 0);
        assert_int_equal(res.cutoff_lsn, model_cutoff(c, i, window));
        assert_int_equal(ps_timeline_gc_cutoff_lsn(t->h), res.cutoff_lsn);
        removed += res.layers_removed;
        if (i == 0) {
            printf("[ gc ] root: cutoff %llx, %u layers (%llu bytes) removed\n",
                   (unsigned long long)res.cutoff_lsn, res.layers_removed,
                   (unsigned long long)res.bytes_removed);
            assert_true(res.layers_removed > 0);
        }
    }
    assert_true(removed > 0);
}

static void ingest_more(ctx *c, int n)
{
    for (int r = 0; r < n; r++) {
        int i = (int)tps_rand(&c->rng, (uint32_t)c->m.n_tl);
        tps_rec *rec = tps_model_make_record(&c->m, i, &c->rng, 6, 2000000);
        assert_int_equal(ps_timeline_ingest(c->m.tl[i].h, rec->buf, rec->len), 0);
    }
}

/* ---- changed pages (branch diff) ------------------------------------------ */

/* The model's pages with a version in (from, to] along i's chain. */
static void model_changed(const ctx *c, int i, lsn_t from, lsn_t to, bool *set)
{
    memset(set, 0, (MAX_PGNO + 1) * sizeof(bool));
    for (lsn_t hi = to; i >= 0 && hi > from;) {
        const tps_tl *t = &c->m.tl[i];
        lsn_t lo = from > t->start ? from : t->start;
        for (uint32_t p = 1; p <= MAX_PGNO; p++) {
            for (size_t k = 0; k < t->n_vers[p]; k++) {
                set[p] |= t->vers[p][k].lsn > lo && t->vers[p][k].lsn <= hi;
            }
        }
        if (from >= t->start) {
            break;
        }
        hi = hi < t->start ? hi : t->start;
        i = t->parent;
    }
}

/* ps_timeline_changed_pages against the model for random LSN pairs of each
 * timeline's chain: exactly the model's set whenever it says exact (it must
 * while no GC ran: require_exact). */
static void verify_changed(ctx *c, const char *label, bool require_exact)
{
    bool *want = calloc(MAX_PGNO + 1, sizeof(bool));
    int checked = 0, inexact = 0;
    for (int i = 0; i < c->m.n_tl; i++) {
        for (int k = 0; k < 20; k++) {
            /* from: a commit of i or of an ancestor, to: one of i, from <= to */
            int a = i;
            while (c->m.tl[a].parent >= 0 && tps_rand(&c->rng, 2)) {
                a = c->m.tl[a].parent;
            }
            lsn_t to = random_commit(c, i), from = random_commit(c, a);
            if (a != i) {
                from = from < c->m.tl[i].start ? from : c->m.tl[i].start;
            }
            if (from > to) {
                lsn_t x = from; from = to; to = x;
            }
            uint32_t *got = NULL;
            size_t n = 0;
            bool exact = false;
            int rc = ps_timeline_changed_pages(c->m.tl[i].h, from, to, &got, &n, &exact);
            assert_int_equal(rc, 0);
            if (!exact) {
                assert_false(require_exact);
                inexact++;
                az_free(got);
                continue;
            }
            model_changed(c, i, from, to, want);
            size_t n_want = 0;
            for (uint32_t p = 1; p <= MAX_PGNO; p++) {
                n_want += want[p];
            }
            for (size_t j = 0; j < n; j++) {
                assert_true(j == 0 || got[j - 1] < got[j]);
                if (got[j] > MAX_PGNO || !want[got[j]]) {
                    fail_msg("%s: timeline %d (%llx, %llx]: page %u listed, not written",
                             label, i, (unsigned long long)from, (unsigned long long)to,
                             got[j]);
                }
            }
            if (n != n_want) {
                fail_msg("%s: timeline %d (%llx, %llx]: %zu pages listed, %zu written",
                         label, i, (unsigned long long)from, (unsigned long long)to, n,
                         n_want);
            }
            checked++;
            az_free(got);
        }
    }
    printf("[ changed pages ] %s: %d ranges exact, %d inexact (GC)\n", label, checked,
           inexact);
    free(want);
}

static void test_model(void **state)
{
    ctx c;
    ctx_init(&c, "test_model");
    int n = 30 * tps_scale();
    build(&c, n);
    verify_all(&c, "live");
    verify_changed(&c, "live", true);
    restart(&c);
    verify_all(&c, "after restart");
    verify_changed(&c, "after restart", true);
    check_visit_bound(&c);
    verify_all(&c, "after compaction");
    verify_changed(&c, "after compaction", true);
    run_gc(&c);
    verify_all(&c, "after gc");
    verify_changed(&c, "after gc", false);
    restart(&c);
    verify_all(&c, "after gc + restart (leases gone)");
    ingest_more(&c, n / 10);
    compact_all(&c, false);
    verify_all(&c, "after more ingest");
    ctx_free(&c);
}

/* ---- concurrency ----------------------------------------------------------- */

typedef struct conc {
    ctx *c;
    atomic_bool stop;
    atomic_int errors;
    uint64_t seed;
} conc;

static void *reader_main(void *arg)
{
    conc *k = arg;
    ctx *c = k->c;
    uint64_t rng = k->seed;
    uint8_t *buf = malloc(PAGE_SIZE), *want = malloc(PAGE_SIZE);
    tps_tl *t = &c->m.tl[0];
    while (!atomic_load(&k->stop)) {
        lsn_t head = ps_timeline_last_record_lsn(t->h);
        size_t r = tps_rand(&rng, (uint32_t)t->n_recs);
        if (t->recs[r].end > head) {
            continue;
        }
        lsn_t lsn = t->recs[r].end;
        uint32_t pg = 1 + tps_rand(&rng, MAX_PGNO);
        lsn_t got;
        int rc = ps_timeline_get_page(t->h, pg, lsn, buf, &got, NULL);
        if (rc == PS_EBELOW_GC) {
            continue; /* GC runs alongside with a short window */
        }
        lsn_t vlsn;
        if (rc != 0 || !tps_model_check(&c->m, 0, pg, lsn, got, buf, want, &vlsn)) {
            atomic_fetch_add(&k->errors, 1);
        }
    }
    free(buf);
    free(want);
    return NULL;
}

static void *bg_main(void *arg)
{
    conc *k = arg;
    ps_timeline *h = k->c->m.tl[0].h;
    while (!atomic_load(&k->stop)) {
        if (ps_timeline_compact(h, false, NULL) != 0 || ps_timeline_gc(h, NULL) != 0) {
            atomic_fetch_add(&k->errors, 1);
        }
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    ctx c;
    ctx_init(&c, "test_concurrent");
    assert_int_equal(ps_repo_open(c.dir, &c.cfg, &c.repo), 0);
    assert_int_equal(ps_repo_create_tenant(c.repo, NULL, &c.m.tenant), 0);
    tps_model_add_tl(&c.m, -1, PS_DEFAULT_START_LSN, c.clk.now_us);
    ps_timeline_create_args a = { .tenant_id = c.m.tenant, .branch_name = "main",
                                  .pitr_window_s = 1 };
    assert_int_equal(ps_repo_create_timeline(c.repo, &a, &c.m.tl[0].h), 0);
    int n = 15 * tps_scale();
    /* The model is complete before the threads start: readers only read it. */
    for (int r = 0; r < n; r++) {
        tps_model_make_record(&c.m, 0, &c.rng, 6, 1000);
    }
    c.clk.now_us = c.m.tl[0].last_ts;  /* every commit inside the window */
    conc k = { .c = &c, .seed = c.rng };
    atomic_init(&k.stop, false);
    atomic_init(&k.errors, 0);
    pthread_t readers[3], bg;
    for (int i = 0; i < 3; i++) {
        k.seed = c.rng + (uint64_t)i * 7919;
        pthread_create(&readers[i], NULL, reader_main, &k);
    }
    pthread_create(&bg, NULL, bg_main, &k);
    for (size_t r = 0; r < c.m.tl[0].n_recs; r++) {
        tps_rec *rec = &c.m.tl[0].recs[r];
        assert_int_equal(ps_timeline_ingest(c.m.tl[0].h, rec->buf, rec->len), 0);
    }
    atomic_store(&k.stop, true);
    for (int i = 0; i < 3; i++) {
        pthread_join(readers[i], NULL);
    }
    pthread_join(bg, NULL);
    assert_int_equal(atomic_load(&k.errors), 0);
    ps_timeline_info info;
    ps_timeline_get_info(c.m.tl[0].h, &info);
    printf("[ concurrent ] %llu reads, %u layer files at the end\n",
           (unsigned long long)info.reads, info.layer_count);
    ctx_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
