/*
 * The pageserver storage engine's contract, case by case: the layer file
 * format, bad input (unknown ids, ingest gaps and overlaps, bad records,
 * reads below the GC cutoff, bad branch points, names, deletes), LSN by
 * timestamp edge cases, db size through ancestors, leases against GC,
 * wait_for_lsn, sizes.
 */
#include "test_ps_util.h"

#include "ps_layer.h"

#include <dirent.h>
#include <inttypes.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#define PS 512u
#define T0 1700000000000000ll

typedef struct env {
    char *dir;
    ps_config cfg;
    tps_clock clk;
    ps_clock clock;
    ps_repo *repo;
    arbor_id tenant;
} env;

/* One timeline's writer side: the next record's LSN and its predecessor. */
typedef struct wr {
    ps_timeline *tl;
    lsn_t lsn, prev;
    uint64_t vid;
} wr;

static void env_open(env *e)
{
    assert_int_equal(ps_repo_open(e->dir, &e->cfg, &e->repo), 0);
}

/* The test's directory, clock and config (small layers), not opened yet:
 * a test may change e->cfg before env_start. */
static void env_prepare(env *e)
{
    memset(e, 0, sizeof(*e));
    e->dir = tps_mkdtemp();
    e->clk.now_us = T0;
    e->clock = (ps_clock){ .ctx = &e->clk, .now_us = tps_clock_now };
    ps_config_default(&e->cfg);
    e->cfg.freeze_bytes = 4096;
    e->cfg.image_after_deltas = 2;
    e->cfg.clock = &e->clock;
    e->cfg.ancestor_wait_ms = 100;
}

static void env_start(env *e)
{
    env_open(e);
    assert_int_equal(ps_repo_create_tenant(e->repo, NULL, &e->tenant), 0);
}

static void env_init(env *e)
{
    env_prepare(e);
    env_start(e);
}

static void env_free(env *e)
{
    ps_repo_close(e->repo);
    tps_rmdir(e->dir);
}

static ps_timeline *mk_tl(env *e, const char *name, ps_timeline *anc, lsn_t at)
{
    ps_timeline_create_args a = { .tenant_id = e->tenant, .branch_name = name,
                                  .ancestor_lsn = at };
    if (anc) {
        a.ancestor_id = *ps_timeline_id(anc);
    }
    ps_timeline *tl;
    assert_int_equal(ps_repo_create_timeline(e->repo, &a, &tl), 0);
    return tl;
}

static wr writer(ps_timeline *tl)
{
    return (wr){ .tl = tl, .lsn = ps_timeline_last_record_lsn(tl), .vid = 1000 };
}

/* Ingests one record writing pgnos (versions get fresh vids); returns the
 * end LSN. */
static lsn_t put(wr *w, const uint32_t *pgnos, uint32_t n, int64_t ts, uint32_t db)
{
    uint64_t vids[16];
    for (uint32_t i = 0; i < n; i++) {
        vids[i] = ++w->vid + ((uint64_t)(uintptr_t)w->tl << 20);
    }
    uint8_t *buf;
    size_t len;
    tps_encode(PS, w->lsn, w->prev, ts, db, pgnos, vids, n, 1, &buf, &len);
    assert_int_equal(ps_timeline_ingest(w->tl, buf, len), 0);
    free(buf);
    w->prev = w->lsn;
    w->lsn += len;
    return w->lsn;
}

static lsn_t put1(wr *w, uint32_t pgno, int64_t ts)
{
    return put(w, &pgno, 1, ts, pgno);
}

/* Page pgno at lsn: its version LSN (and status). */
static int read_lsn(ps_timeline *tl, uint32_t pgno, lsn_t lsn, lsn_t *vlsn)
{
    uint8_t buf[PS];
    return ps_timeline_get_page(tl, pgno, lsn, buf, vlsn, NULL);
}

static lsn_t version_at(ps_timeline *tl, uint32_t pgno, lsn_t lsn)
{
    lsn_t v = 99;
    assert_int_equal(read_lsn(tl, pgno, lsn, &v), 0);
    return v;
}

/* ---- layer format ------------------------------------------------------- */

static void test_layer_roundtrip(void **state)
{
    char *dir = tps_mkdtemp();
    arbor_id tl = { { 1, 2, 3 } };
    uint8_t page[PS], out[PS];
    for (int compress = 0; compress < 2; compress++) {
        ps_layer_writer *w;
        assert_int_equal(ps_layer_writer_begin(&disk_io_default, dir, PS_LAYER_DELTA,
                                               &tl, 100, 200 + compress, PS,
                                               compress, &w), 0);
        for (uint32_t p = 1; p <= 5; p++) {
            for (lsn_t l = 110; l <= 190; l += 40) {
                tps_page(p * 1000 + l, PS, page);
                assert_int_equal(ps_layer_writer_add(w, p, l, page), 0);
            }
        }
        ps_layer *l;
        assert_int_equal(ps_layer_writer_finish(w, &l), 0);
        uint64_t idx;
        assert_int_equal(ps_layer_find(l, 3, 160, &idx), 0);
        assert_int_equal(l->index[idx].lsn, 150);
        assert_int_equal(ps_layer_read(l, idx, out), 0);
        tps_page(3 * 1000 + 150, PS, page);
        assert_memory_equal(out, page, PS);
        assert_int_equal(ps_layer_find(l, 3, 109, &idx), PS_ENOTFOUND);
        assert_int_equal(ps_layer_find(l, 6, 1000, &idx), PS_ENOTFOUND);
        assert_int_equal(ps_layer_find(l, 5, 1000, &idx), 0);
        assert_int_equal(l->index[idx].lsn, 190);
        assert_int_equal(!!(l->index[idx].flags & PS_LAYER_FLAG_LZ4), compress);
        ps_layer_unref(l);
    }
    /* An empty layer is valid (records without pages). */
    ps_layer_writer *w;
    assert_int_equal(ps_layer_writer_begin(&disk_io_default, dir, PS_LAYER_IMAGE,
                                           &tl, 300, 300, PS, 1, &w), 0);
    ps_layer *l;
    assert_int_equal(ps_layer_writer_finish(w, &l), 0);
    uint64_t idx;
    assert_int_equal(ps_layer_find(l, 1, LSN_MAX, &idx), PS_ENOTFOUND);
    ps_layer_unref(l);
    /* Names */
    char name[PS_LAYER_NAME_MAX];
    ps_layer_kind k;
    lsn_t s, en;
    ps_layer_name(PS_LAYER_DELTA, 0x10, 0xAB, name);
    assert_string_equal(name, "delta_0000000000000010-00000000000000AB");
    assert_int_equal(ps_layer_parse_name(name, &k, &s, &en), 0);
    assert_true(k == PS_LAYER_DELTA && s == 0x10 && en == 0xAB);
    assert_int_equal(ps_layer_parse_name("image_00000000000000FF", &k, &s, &en), 0);
    assert_true(k == PS_LAYER_IMAGE && s == 0xFF && en == 0xFF);
    assert_int_equal(ps_layer_parse_name("delta_0000000000000010-0000000000000010", &k, &s, &en), -EINVAL);
    assert_int_equal(ps_layer_parse_name("image_00000000000000ff", &k, &s, &en), -EINVAL);
    assert_int_equal(ps_layer_parse_name("image_00000000000000FF.tmp", &k, &s, &en), -EINVAL);
    tps_rmdir(dir);
}

/* ---- bad input ------------------------------------------------------------- */

static void test_bad_input(void **state)
{
    env e;
    env_init(&e);
    arbor_id nobody = { { 9, 9, 9 } };
    ps_timeline *tl;
    assert_int_equal(ps_repo_get_timeline(e.repo, &e.tenant, &nobody, &tl), PS_ENOTFOUND);
    assert_int_equal(ps_repo_get_timeline(e.repo, &nobody, &nobody, &tl), PS_ENOTFOUND);
    assert_int_equal(ps_repo_create_tenant(e.repo, &e.tenant, NULL), PS_EEXIST);
    ps_timeline_create_args a = { .tenant_id = nobody, .branch_name = "x" };
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), PS_ENOTFOUND);
    a.tenant_id = e.tenant;
    a.ancestor_id = nobody;
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), PS_ENOTFOUND);
    a.ancestor_id = (arbor_id){ { 0 } };
    a.branch_name = "has space";
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), PS_ENAME);
    a.branch_name = "";
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), PS_ENAME);

    ps_timeline *main_tl = mk_tl(&e, "main", NULL, 0);
    uint8_t page[PS];
    lsn_t vl;
    assert_int_equal(ps_timeline_get_page(main_tl, 1, 100, page, &vl, NULL), PS_EEMPTY);
    a.branch_name = "main";
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), PS_EEXIST);

    wr w = writer(main_tl);
    assert_int_equal(w.lsn, PS_DEFAULT_START_LSN);
    lsn_t l1 = put1(&w, 1, T0);
    assert_int_equal(ps_timeline_get_page(main_tl, 0, l1, page, &vl, NULL), PS_EINVAL);
    /* gap, overlap, corrupt, other page size, time going back */
    uint32_t pg = 2;
    uint64_t vid = 7;
    uint8_t *buf;
    size_t len;
    tps_encode(PS, l1 + 8, l1, T0, 2, &pg, &vid, 1, 0, &buf, &len);
    assert_int_equal(ps_timeline_ingest(main_tl, buf, len), PS_EGAP);
    free(buf);
    tps_encode(PS, l1 - 8, 0, T0, 2, &pg, &vid, 1, 0, &buf, &len);
    assert_int_equal(ps_timeline_ingest(main_tl, buf, len), PS_EOVERLAP);
    free(buf);
    tps_encode(PS, l1, l1 - 1, T0, 2, &pg, &vid, 1, 0, &buf, &len);
    buf[100] ^= 1;
    assert_int_equal(ps_timeline_ingest(main_tl, buf, len), WAL_ECHECKSUM);
    assert_int_equal(ps_timeline_ingest(main_tl, buf, len - 1), WAL_ETRUNC);
    free(buf);
    tps_encode(PS * 2, l1, l1 - 1, T0, 2, &pg, &vid, 1, 0, &buf, &len);
    assert_int_equal(ps_timeline_ingest(main_tl, buf, len), PS_EBADRECORD);
    free(buf);
    tps_encode(PS, l1, l1 - 1, T0 - 1, 2, &pg, &vid, 1, 0, &buf, &len);
    assert_int_equal(ps_timeline_ingest(main_tl, buf, len), PS_EBADRECORD);
    free(buf);
    assert_int_equal(ps_timeline_last_record_lsn(main_tl), l1);
    lsn_t l2 = put1(&w, 2, T0 + 10);

    /* branch points */
    a.branch_name = "dev";
    a.ancestor_id = *ps_timeline_id(main_tl);
    a.ancestor_lsn = l1 + 1;
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), PS_EBRANCHLSN);
    a.ancestor_lsn = l2 + 100;
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), PS_EBRANCHLSN);
    a.ancestor_lsn = PS_DEFAULT_START_LSN - 1;
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), PS_EBRANCHLSN);
    a.ancestor_lsn = l1;
    a.start_lsn = 5;
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), PS_EINVAL);
    a.start_lsn = 0;
    ps_timeline *dev;
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, &dev), 0);
    assert_int_equal(ps_timeline_start_lsn(dev), l1);
    assert_int_equal(ps_timeline_page_size(dev), PS);
    ps_timeline *at_start = mk_tl(&e, "at-start", main_tl, PS_DEFAULT_START_LSN);
    ps_timeline *at_head = mk_tl(&e, "at-head", main_tl, 0);
    assert_int_equal(ps_timeline_start_lsn(at_head), l2);
    assert_int_equal(version_at(at_start, 1, LSN_MAX), 0);
    assert_int_equal(version_at(at_head, 2, LSN_MAX), l2);
    assert_int_equal(version_at(dev, 2, LSN_MAX), 0);
    assert_int_equal(version_at(dev, 1, LSN_MAX), l1);

    /* duplicate names, rename, delete with children */
    assert_int_equal(ps_repo_rename_branch(e.repo, &e.tenant, ps_timeline_id(dev), "main"), PS_EEXIST);
    assert_int_equal(ps_repo_rename_branch(e.repo, &e.tenant, ps_timeline_id(dev), "a b"), PS_ENAME);
    assert_int_equal(ps_repo_rename_branch(e.repo, &e.tenant, &nobody, "zz"), PS_ENOTFOUND);
    assert_int_equal(ps_repo_rename_branch(e.repo, &e.tenant, ps_timeline_id(dev), "feature/x"), 0);
    ps_timeline *found;
    assert_int_equal(ps_repo_find_branch(e.repo, &e.tenant, "feature/x", &found), 0);
    assert_ptr_equal(found, dev);
    ps_timeline_release(found);
    assert_int_equal(ps_repo_find_branch(e.repo, &e.tenant, "dev", &found), PS_ENOTFOUND);
    ps_timeline *grand = mk_tl(&e, "grand", dev, 0);
    uint32_t n = 99;
    assert_int_equal(ps_repo_delete_timeline(e.repo, &e.tenant, ps_timeline_id(dev), false, &n), PS_EHASCHILDREN);
    assert_int_equal(ps_repo_delete_timeline(e.repo, &e.tenant, ps_timeline_id(main_tl), false, &n), PS_EHASCHILDREN);
    assert_int_equal(ps_repo_delete_timeline(e.repo, &e.tenant, &nobody, false, &n), PS_ENOTFOUND);
    assert_int_equal(ps_repo_delete_timeline(e.repo, &e.tenant, ps_timeline_id(dev), true, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ps_timeline_ingest(grand, NULL, 0), PS_EDELETED);
    assert_int_equal(ps_timeline_get_page(dev, 1, l1, page, &vl, NULL), PS_EDELETED);
    /* gone from both indexes at once, not only after a reopen */
    assert_int_equal(ps_repo_find_branch(e.repo, &e.tenant, "feature/x", &found), PS_ENOTFOUND);
    assert_int_equal(ps_repo_find_branch(e.repo, &e.tenant, "grand", &found), PS_ENOTFOUND);
    assert_int_equal(ps_repo_get_timeline(e.repo, &e.tenant, ps_timeline_id(grand), &found),
                     PS_ENOTFOUND);
    assert_int_equal(ps_repo_find_branch(e.repo, &e.tenant, "at-head", &found), 0);
    assert_ptr_equal(found, at_head);
    ps_timeline_release(found);
    ps_timeline **list;
    size_t cnt;
    assert_int_equal(ps_repo_list_timelines(e.repo, &e.tenant, &list, &cnt), 0);
    assert_int_equal(cnt, 3);
    ps_repo_free_list(list, cnt);

    /* names and deletions survive a reopen; the branch name is reusable */
    assert_int_equal(ps_timeline_checkpoint(main_tl), 0);
    ps_timeline_release(grand);
    ps_timeline_release(dev);
    ps_timeline_release(at_start);
    ps_timeline_release(at_head);
    ps_timeline_release(main_tl);
    ps_repo_close(e.repo);
    env_open(&e);
    assert_int_equal(ps_repo_list_timelines(e.repo, &e.tenant, &list, &cnt), 0);
    assert_int_equal(cnt, 3);
    ps_repo_free_list(list, cnt);
    assert_int_equal(ps_repo_find_branch(e.repo, &e.tenant, "feature/x", &found), PS_ENOTFOUND);
    assert_int_equal(ps_repo_find_branch(e.repo, &e.tenant, "at-head", &found), 0);
    assert_int_equal(version_at(found, 2, LSN_MAX), l2);
    ps_timeline_release(found);
    assert_int_equal(ps_repo_find_branch(e.repo, &e.tenant, "main", &main_tl), 0);
    assert_int_equal(ps_timeline_last_record_lsn(main_tl), l2);
    a.ancestor_lsn = l1;
    a.branch_name = "dev";
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), 0);
    ps_timeline_release(main_tl);
    env_free(&e);
}

/* ---- LSN <-> timestamp, db size ---------------------------------------------- */

static void expect_lsn_at(ps_timeline *tl, int64_t ts, ps_lsn_kind kind, lsn_t lsn,
                          int64_t commit_ts)
{
    lsn_t got;
    ps_lsn_kind k;
    int64_t cts;
    assert_int_equal(ps_timeline_lsn_by_timestamp(tl, ts, &got, &k, &cts), 0);
    assert_int_equal(k, kind);
    assert_int_equal(got, lsn);
    assert_int_equal(cts, commit_ts);
}

static void test_lsn_by_timestamp(void **state)
{
    env e;
    env_init(&e);
    ps_timeline *m = mk_tl(&e, "main", NULL, 0);
    lsn_t start = PS_DEFAULT_START_LSN;
    /* no commit at all */
    expect_lsn_at(m, T0, PS_LSN_FUTURE, start, 0);
    int64_t ts;
    assert_int_equal(ps_timeline_timestamp_of_lsn(m, LSN_MAX, &ts), PS_ENOCOMMIT);
    wr w = writer(m);
    lsn_t a = put1(&w, 1, T0 + 100);
    lsn_t b = put1(&w, 2, T0 + 200);
    lsn_t c = put1(&w, 3, T0 + 200);   /* same time as b */
    lsn_t d = put1(&w, 1, T0 + 300);
    expect_lsn_at(m, T0, PS_LSN_PAST, start, 0);
    expect_lsn_at(m, T0 + 99, PS_LSN_PAST, start, 0);
    expect_lsn_at(m, T0 + 100, PS_LSN_PRESENT, a, T0 + 100);
    expect_lsn_at(m, T0 + 150, PS_LSN_PRESENT, a, T0 + 100);
    expect_lsn_at(m, T0 + 200, PS_LSN_PRESENT, c, T0 + 200);  /* the last of equals */
    expect_lsn_at(m, T0 + 300, PS_LSN_PRESENT, d, T0 + 300);
    expect_lsn_at(m, T0 + 301, PS_LSN_FUTURE, d, T0 + 300);
    assert_int_equal(ps_timeline_timestamp_of_lsn(m, a - 1, &ts), PS_ENOCOMMIT);
    assert_int_equal(ps_timeline_timestamp_of_lsn(m, a, &ts), 0);
    assert_int_equal(ts, T0 + 100);
    assert_int_equal(ps_timeline_timestamp_of_lsn(m, c + 5, &ts), 0);
    assert_int_equal(ts, T0 + 200);

    /* A child at b: its own commits, then the parent's up to b only. */
    ps_timeline *ch = mk_tl(&e, "child", m, b);
    expect_lsn_at(ch, T0 + 250, PS_LSN_FUTURE, b, T0 + 200);  /* no own commit yet */
    wr cw = writer(ch);
    lsn_t x = put1(&cw, 5, T0 + 400);
    expect_lsn_at(ch, T0 + 150, PS_LSN_PRESENT, a, T0 + 100);
    expect_lsn_at(ch, T0 + 350, PS_LSN_PRESENT, b, T0 + 200); /* not c or d */
    expect_lsn_at(ch, T0 + 400, PS_LSN_PRESENT, x, T0 + 400);
    expect_lsn_at(ch, T0 + 500, PS_LSN_FUTURE, x, T0 + 400);
    expect_lsn_at(ch, T0 + 1, PS_LSN_PAST, start, 0);
    assert_int_equal(ps_timeline_timestamp_of_lsn(ch, x - 1, &ts), 0);
    assert_int_equal(ts, T0 + 200);

    /* db size through the ancestry */
    uint32_t db, psz;
    assert_int_equal(ps_timeline_db_size(ch, a - 1, &db, &psz), 0);
    assert_int_equal(db, 0);
    assert_int_equal(psz, PS);
    assert_int_equal(ps_timeline_db_size(ch, b, &db, &psz), 0);
    assert_int_equal(db, 2);
    assert_int_equal(ps_timeline_db_size(m, d, &db, &psz), 0);
    assert_int_equal(db, 1);
    assert_int_equal(ps_timeline_db_size(ch, x, &db, &psz), 0);
    assert_int_equal(db, 5);
    /* below x the child has no commit: the parent's at b (2), never its c
     * or d (sizes 3 and 1) */
    assert_int_equal(ps_timeline_db_size(ch, x - 1, &db, &psz), 0);
    assert_int_equal(db, 2);

    /* branch by timestamp */
    ps_timeline_create_args ta = { .tenant_id = e.tenant, .branch_name = "by-ts",
                                   .ancestor_id = *ps_timeline_id(m),
                                   .by_timestamp = true,
                                   .ancestor_timestamp_us = T0 + 250 };
    ps_timeline *bt;
    assert_int_equal(ps_repo_create_timeline(e.repo, &ta, &bt), 0);
    assert_int_equal(ps_timeline_start_lsn(bt), c);
    ps_timeline_release(bt);
    ta.ancestor_timestamp_us = T0;
    ta.branch_name = "too-early";
    assert_int_equal(ps_repo_create_timeline(e.repo, &ta, NULL), PS_EBRANCHLSN);
    ta.ancestor_timestamp_us = T0 + 10000;
    ta.branch_name = "future";
    assert_int_equal(ps_repo_create_timeline(e.repo, &ta, &bt), 0);
    assert_int_equal(ps_timeline_start_lsn(bt), d);
    ps_timeline_release(bt);

    /* the index survives a restart */
    assert_int_equal(ps_timeline_checkpoint(m), 0);
    assert_int_equal(ps_timeline_checkpoint(ch), 0);
    ps_timeline_release(m);
    ps_timeline_release(ch);
    ps_repo_close(e.repo);
    env_open(&e);
    assert_int_equal(ps_repo_find_branch(e.repo, &e.tenant, "child", &ch), 0);
    expect_lsn_at(ch, T0 + 350, PS_LSN_PRESENT, b, T0 + 200);
    expect_lsn_at(ch, T0 + 500, PS_LSN_FUTURE, x, T0 + 400);
    ps_timeline_release(ch);
    env_free(&e);
}

/* ---- leases and GC ------------------------------------------------------------ */

static void test_lease_and_gc(void **state)
{
    env e;
    env_init(&e);
    ps_timeline *m = mk_tl(&e, "main", NULL, 0);
    wr w = writer(m);
    lsn_t at[40];
    for (int i = 0; i < 40; i++) {
        uint32_t pg[4] = { 1, 2, 3, 4 };
        at[i] = put(&w, pg, 4, T0 + (int64_t)i * 1000000, 4); /* 1 s apart */
        if (i % 4 == 3) {
            assert_int_equal(ps_timeline_checkpoint(m), 0);
            assert_int_equal(ps_timeline_compact(m, false, NULL), 0);
        }
    }
    assert_int_equal(ps_timeline_checkpoint(m), 0);
    lsn_t img;
    assert_int_equal(ps_timeline_compact(m, true, &img), 0);
    int64_t until;
    assert_int_equal(ps_timeline_lease_lsn(m, at[39] + 1000, 10, &until), PS_EINVAL);
    assert_int_equal(ps_timeline_lease_lsn(m, at[5], 10, &until), 0);
    assert_int_equal(until, T0 + 10000000);
    assert_int_equal(ps_timeline_lease_lsn(m, at[5], 0, &until), 0); /* renew: default */
    assert_int_equal(until, T0 + (int64_t)PS_DEFAULT_LEASE_S * 1000000);

    /* window 10 s at now = last commit + 1 s: cutoff = commit 30 */
    e.clk.now_us = T0 + 40 * 1000000ll;
    assert_int_equal(ps_timeline_set_pitr_window(m, 10), 0);
    ps_gc_result res;
    assert_int_equal(ps_timeline_gc(m, &res), 0);
    assert_int_equal(res.cutoff_lsn, at[30]);
    assert_true(res.layers_removed > 0);
    assert_int_equal(version_at(m, 1, at[5]), at[5]);       /* leased */
    assert_int_equal(version_at(m, 2, at[30]), at[30]);     /* cutoff */
    assert_int_equal(version_at(m, 2, at[33] + 1), at[33]);
    lsn_t vl;
    assert_int_equal(read_lsn(m, 1, at[6], &vl), PS_EBELOW_GC);
    assert_int_equal(read_lsn(m, 1, at[29], &vl), PS_EBELOW_GC);
    assert_int_equal(ps_timeline_lease_lsn(m, at[6], 10, &until), PS_EBELOW_GC);
    /* a branch below the cutoff is refused, at the cutoff fine */
    ps_timeline_create_args a = { .tenant_id = e.tenant, .branch_name = "old",
                                  .ancestor_id = *ps_timeline_id(m),
                                  .ancestor_lsn = at[20] };
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, NULL), PS_EBELOW_GC);
    a.ancestor_lsn = at[30];
    ps_timeline *ch;
    assert_int_equal(ps_repo_create_timeline(e.repo, &a, &ch), 0);

    /* The lease expires: the next GC may drop what it held. */
    uint32_t before = res.layers_removed;
    e.clk.now_us += (int64_t)PS_DEFAULT_LEASE_S * 1000000 + 1;
    assert_int_equal(read_lsn(m, 1, at[5], &vl), PS_EBELOW_GC);
    assert_int_equal(ps_timeline_gc(m, &res), 0);
    assert_true(res.cutoff_lsn == at[39]); /* all commits are old now */
    printf("[ lease ] first gc removed %u layers, second %u\n", before,
           res.layers_removed);
    assert_true(res.layers_removed > 0);
    /* the child's branch point is still served */
    assert_int_equal(version_at(ch, 3, LSN_MAX), at[30]);
    assert_int_equal(version_at(m, 3, at[30]), at[30]);
    assert_int_equal(read_lsn(m, 3, at[31], &vl), PS_EBELOW_GC);
    assert_int_equal(version_at(m, 3, at[39]), at[39]);
    /* the cutoff is persisted */
    ps_timeline_release(ch);
    ps_timeline_release(m);
    ps_repo_close(e.repo);
    env_open(&e);
    assert_int_equal(ps_repo_find_branch(e.repo, &e.tenant, "main", &m), 0);
    assert_int_equal(ps_timeline_gc_cutoff_lsn(m), at[39]);
    assert_int_equal(read_lsn(m, 3, at[31], &vl), PS_EBELOW_GC);
    assert_int_equal(version_at(m, 3, at[30]), at[30]);
    ps_timeline_release(m);
    env_free(&e);
}

/* ---- waiting, sizes ------------------------------------------------------------- */

typedef struct later {
    wr *w;
    lsn_t end;
} later;

static void *ingest_later(void *arg)
{
    later *l = arg;
    usleep(50000);
    l->end = put1(l->w, 7, T0 + 5);
    return NULL;
}

static void test_wait_and_sizes(void **state)
{
    env e;
    env_init(&e);
    ps_timeline *m = mk_tl(&e, "main", NULL, 0);
    wr w = writer(m);
    lsn_t first = put1(&w, 1, T0);
    assert_int_equal(ps_timeline_wait_for_lsn(m, first, 0), 0);
    assert_int_equal(ps_timeline_wait_for_lsn(m, first + 1, 20), PS_ETIMEOUT);
    later l = { &w, 0 };
    pthread_t th;
    pthread_create(&th, NULL, ingest_later, &l);
    assert_int_equal(ps_timeline_wait_for_lsn(m, first + 1, 10000), 0);
    pthread_join(th, NULL);
    assert_true(l.end > first);

    for (int i = 0; i < 20; i++) {
        uint32_t pg[3] = { 1, 2, 10 };
        put(&w, pg, 3, T0 + 10 + i, 12);
    }
    assert_int_equal(ps_timeline_checkpoint(m), 0);
    ps_timeline_info info;
    ps_timeline_get_info(m, &info);
    assert_int_equal(info.logical_size_bytes, 12 * PS);
    assert_int_equal(info.db_size_pages, 12);
    assert_int_equal(info.page_size, PS);
    assert_true(info.layer_count >= 2);
    /* physical size = the bytes of the files in the directory (no metadata) */
    DIR *d = opendir(ps_timeline_dir(m));
    uint64_t sum = 0, layer_sum = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", ps_timeline_dir(m), de->d_name);
        if (de->d_name[0] == '.' || strcmp(de->d_name, "metadata") == 0 ||
            stat(p, &st) != 0) {
            continue;
        }
        sum += (uint64_t)st.st_size;
        if (strncmp(de->d_name, "delta_", 6) == 0 || strncmp(de->d_name, "image_", 6) == 0) {
            layer_sum += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    assert_int_equal(info.physical_size_bytes, sum);
    assert_int_equal(info.branch_only_size_bytes, layer_sum);
    /* A branch owns nothing until it writes; then only its own layers. */
    ps_timeline *ch = mk_tl(&e, "child", m, 0);
    ps_timeline_info ci;
    ps_timeline_get_info(ch, &ci);
    assert_int_equal(ci.branch_only_size_bytes, 0);
    assert_int_equal(ci.logical_size_bytes, 12 * PS);
    wr cw = writer(ch);
    uint32_t three = 3;
    put(&cw, &three, 1, T0 + 100, 12);
    assert_int_equal(ps_timeline_checkpoint(ch), 0);
    ps_timeline_get_info(ch, &ci);
    assert_int_equal(ci.layer_count, 1);
    assert_true(ci.branch_only_size_bytes > 0 &&
                ci.branch_only_size_bytes < info.branch_only_size_bytes);
    assert_int_equal(ci.logical_size_bytes, 12 * PS);
    assert_int_equal(ci.ancestor_lsn, ci.start_lsn);
    assert_true(id_equal(&ci.ancestor_id, ps_timeline_id(m)));
    assert_string_equal(ci.branch_name, "child");
    ps_timeline_release(ch);
    ps_timeline_release(m);
    env_free(&e);
}

/* ---- residency: unload, load on use, summaries ------------------------------ */

#define UL_RECORDS 124

typedef struct ul_hist {
    lsn_t end[UL_RECORDS];     /* record i wrote page (i % 8) + 1 ending here */
    int n;
} ul_hist;

/* The version of pgno a read at lsn must return (0: none). */
static lsn_t ul_expect(const ul_hist *h, uint32_t pgno, lsn_t lsn)
{
    lsn_t v = 0;
    for (int i = 0; i < h->n && h->end[i] <= lsn; i++) {
        if ((uint32_t)(i % 8) + 1 == pgno) {
            v = h->end[i];
        }
    }
    return v;
}

typedef struct ul_reader {
    ps_timeline *tl;
    const ul_hist *h;
    int iters, bad;
    int at;                  /* >= 0: read at end[at] only (a child: its branch point) */
    atomic_bool done, stop;
    int reads;
} ul_reader;

static void *ul_read_main(void *p)
{
    ul_reader *r = p;
    uint64_t rnd = 7;
    for (int k = 0; k < r->iters && !atomic_load(&r->stop); k++, r->reads++) {
        int i = r->at >= 0 ? r->at : (int)tps_rand(&rnd, (uint32_t)r->h->n);
        uint32_t pgno = tps_rand(&rnd, 8) + 1;
        lsn_t v = 99;
        uint32_t db = 0, psz = 0;
        if (read_lsn(r->tl, pgno, r->h->end[i], &v) != 0 ||
            v != ul_expect(r->h, pgno, r->h->end[i]) ||
            ps_timeline_db_size(r->tl, r->h->end[i], &db, &psz) != 0 || db != 40) {
            r->bad++;
        }
    }
    atomic_store(&r->done, true);
    return NULL;
}

static void same_info(const ps_timeline_info *a, const ps_timeline_info *b)
{
    assert_int_equal(a->last_record_lsn, b->last_record_lsn);
    assert_int_equal(a->disk_consistent_lsn, b->disk_consistent_lsn);
    assert_int_equal(a->last_commit_timestamp_us, b->last_commit_timestamp_us);
    assert_int_equal(a->db_size_pages, b->db_size_pages);
    assert_int_equal(a->logical_size_bytes, b->logical_size_bytes);
    assert_int_equal(a->physical_size_bytes, b->physical_size_bytes);
    assert_int_equal(a->branch_only_size_bytes, b->branch_only_size_bytes);
    assert_int_equal(a->layer_count, b->layer_count);
    assert_int_equal(a->resident_size_bytes, b->resident_size_bytes);
    assert_int_equal(a->local_size_bytes, b->local_size_bytes);
    assert_int_equal(a->billed_size_bytes, b->billed_size_bytes);
    assert_string_equal(a->branch_name, b->branch_name);
}

/* A new timeline starts unloaded; one with data in memory only does not
 * unload; an unloaded one shows the same info from its summary, loads on a
 * read, survives a reopen unloaded; reads and db sizes stay right while
 * another thread unloads it over and over. */
static void test_unload(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    ps_timeline *m = mk_tl(&e, "main", NULL, 0);
    assert_false(ps_timeline_is_loaded(m));
    wr w = writer(m);
    ul_hist h = { .n = 0 };
    for (int i = 0; i < UL_RECORDS - 4; i++) {
        h.end[h.n++] = put(&w, (uint32_t[]){ (uint32_t)(i % 8) + 1 }, 1, T0 + i, 40);
    }
    assert_true(ps_timeline_is_loaded(m));
    ps_timeline *ch = mk_tl(&e, "child", m, 0);
    assert_false(ps_timeline_is_loaded(ch));
    ps_timeline_info ci0;
    ps_timeline_get_info(ch, &ci0);   /* from its creation summary */
    assert_false(ci0.loaded);
    assert_int_equal(ci0.db_size_pages, 40);
    assert_int_equal(ci0.last_commit_timestamp_us, T0 + UL_RECORDS - 5);

    /* the open layer holds a record: not unloadable until flushed */
    h.end[h.n] = put(&w, (uint32_t[]){ (uint32_t)(h.n % 8) + 1 }, 1, T0 + h.n, 40);
    h.n++;
    ps_timeline_info open_info;
    ps_timeline_get_info(m, &open_info);
    assert_true(open_info.open_layer_bytes > 0);
    assert_false(ps_timeline_unload(m, 0));
    assert_int_equal(ps_timeline_checkpoint(m), 0);
    ps_timeline_info before, after;
    ps_timeline_get_info(m, &before);
    assert_true(before.loaded && before.layer_count > 0);
    assert_false(ps_timeline_unload(m, 60000));   /* used just now */
    assert_true(ps_timeline_unload(m, 0));
    assert_false(ps_timeline_is_loaded(m));
    ps_timeline_get_info(m, &after);
    assert_false(after.loaded);
    same_info(&before, &after);
    assert_false(ps_timeline_is_loaded(m));       /* info did not load it */
    /* the child's info does not need its parent loaded either */
    ps_timeline_get_info(ch, &after);
    assert_int_equal(after.db_size_pages, 40);
    assert_false(ps_timeline_is_loaded(m));

    /* a read loads it, with the same figures */
    assert_int_equal(version_at(m, 3, h.end[50]), ul_expect(&h, 3, h.end[50]));
    assert_true(ps_timeline_is_loaded(m));
    ps_timeline_get_info(m, &after);
    same_info(&before, &after);

    /* readers of the parent and of the child against unloads */
    assert_int_equal(ps_timeline_ancestor_lsn(ch), h.end[UL_RECORDS - 5]);
    ul_reader r1 = { m, &h, 2000000, 0, -1, false, false, 0 },
              r2 = { ch, &h, 2000000, 0, UL_RECORDS - 5, false, false, 0 };
    pthread_t t1, t2;
    pthread_create(&t1, NULL, ul_read_main, &r1);
    pthread_create(&t2, NULL, ul_read_main, &r2);
    int unloads = 0;
    /* 30 unloads under the readers (each fsyncs the metadata), bounded by
     * the readers' number of reads */
    while (unloads < 30 && (!atomic_load(&r1.done) || !atomic_load(&r2.done))) {
        unloads += ps_timeline_unload(m, 0);
        unloads += ps_timeline_unload(ch, 0);
        usleep(200);
    }
    atomic_store(&r1.stop, true);
    atomic_store(&r2.stop, true);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    print_message("%d unloads while %d reads ran\n", unloads, r1.reads + r2.reads);
    assert_int_equal(r1.bad, 0);
    assert_int_equal(r2.bad, 0);
    assert_true(unloads > 0);

    /* a rename of an unloaded timeline keeps its summary */
    assert_true(ps_timeline_unload(m, 0) || !ps_timeline_is_loaded(m));
    assert_int_equal(ps_repo_rename_branch(e.repo, &e.tenant, ps_timeline_id(m), "trunk"), 0);
    assert_false(ps_timeline_is_loaded(m));

    /* ingest into an unloaded timeline loads it and goes on where it was */
    h.end[h.n] = put(&w, (uint32_t[]){ (uint32_t)(h.n % 8) + 1 }, 1, T0 + h.n, 40);
    h.n++;
    assert_true(ps_timeline_is_loaded(m));
    assert_int_equal(ps_timeline_checkpoint(m), 0);
    ps_timeline_get_info(m, &before);
    assert_true(before.loaded);
    assert_true(ps_timeline_unload(m, 0));

    /* reopened, it stays unloaded and answers */
    arbor_id mid = *ps_timeline_id(m), cid = *ps_timeline_id(ch);
    ps_timeline_release(ch);
    ps_timeline_release(m);
    ps_repo_close(e.repo);
    env_open(&e);
    assert_int_equal(ps_repo_get_timeline(e.repo, &e.tenant, &mid, &m), 0);
    assert_false(ps_timeline_is_loaded(m));
    ps_timeline_get_info(m, &after);
    same_info(&before, &after);
    assert_string_equal(after.branch_name, "trunk");
    for (int i = 0; i < h.n; i += 7) {
        assert_int_equal(version_at(m, 5, h.end[i]), ul_expect(&h, 5, h.end[i]));
    }
    assert_true(ps_timeline_is_loaded(m));

    /* a load that fails (its commits index is damaged) is an error for
     * every read, never the zeros of its empty map, also through a child */
    assert_true(ps_timeline_unload(m, 0));
    ps_timeline_release(m);
    ps_repo_close(e.repo);
    char id[ID_STR_SIZE], tn[ID_STR_SIZE], path[4096];
    snprintf(path, sizeof(path), "%s/tenants/%s/timelines/%s/commits", e.dir,
             id_format(&e.tenant, tn), id_format(&mid, id));
    FILE *f = fopen(path, "r+");
    assert_non_null(f);
    assert_int_equal(fwrite("garbage!", 1, 8, f), 8);
    assert_int_equal(fclose(f), 0);
    env_open(&e);
    assert_int_equal(ps_repo_get_timeline(e.repo, &e.tenant, &mid, &m), 0);
    assert_false(ps_timeline_is_loaded(m));
    lsn_t v = 0;
    assert_int_equal(read_lsn(m, 5, h.end[h.n - 1], &v), PS_EBROKEN);
    assert_int_equal(read_lsn(m, 5, h.end[0], &v), PS_EBROKEN);
    assert_int_equal(ps_repo_get_timeline(e.repo, &e.tenant, &cid, &ch), 0);
    assert_int_equal(read_lsn(ch, 5, h.end[UL_RECORDS - 5], &v), PS_EBROKEN);
    ps_timeline_release(ch);
    ps_timeline_release(m);
    env_free(&e);
}

/* ---- a full disk ------------------------------------------------------- */

static atomic_bool g_disk_full;

static ssize_t full_pwrite(void *ctx, int fd, const void *buf, size_t len, off_t off)
{
    return atomic_load(&g_disk_full) ? -ENOSPC : disk_io_posix.pwrite(ctx, fd, buf, len, off);
}

/* While layer flushes fail, checkpoints (every 10 s in the daemon) retry
 * them but do not freeze the open layer each time: ingest and reads of the
 * newest WAL go on until the open layer is full too. Space back, one
 * checkpoint makes everything durable. */
static void test_full_disk(void **state)
{
    (void)state;
    env e;
    env_prepare(&e);
    e.cfg.freeze_bytes = PS_DEFAULT_FREEZE_BYTES;   /* no freeze by size here */
    disk_io io = disk_io_posix;
    io.pwrite = full_pwrite;
    e.cfg.io = &io;
    env_start(&e);
    ps_timeline *m = mk_tl(&e, "main", NULL, 0);
    wr w = writer(m);
    put1(&w, 1, T0);
    assert_int_equal(ps_timeline_checkpoint(m), 0);
    atomic_store(&g_disk_full, true);
    lsn_t last = 0;
    for (int i = 0; i < 3 * PS_FLUSH_MAX_FROZEN; i++) {
        last = put1(&w, (uint32_t)i % 4 + 1, T0 + 1 + i);   /* asserts the ingest */
        assert_int_equal(ps_timeline_checkpoint(m), -ENOSPC);
        assert_int_equal(version_at(m, (uint32_t)i % 4 + 1, last), last);
    }
    ps_timeline_info info;
    ps_timeline_get_info(m, &info);
    assert_int_equal(info.flush_error, -ENOSPC);
    assert_true(info.frozen_layers <= 1);
    assert_true(info.disk_consistent_lsn < last);
    atomic_store(&g_disk_full, false);
    assert_int_equal(ps_timeline_checkpoint(m), 0);
    ps_timeline_get_info(m, &info);
    assert_int_equal(info.flush_error, 0);
    assert_int_equal(info.frozen_layers, 0);
    assert_int_equal(info.disk_consistent_lsn, last);
    ps_timeline_release(m);
    env_free(&e);
}

/* ---- multi-record transactions ------------------------------------------ */

/* Ingests one record of a transaction: pgnos get images from vid, the
 * given term and WAL_REC_* flags. Returns ps_timeline_ingest's code. */
static int put_tx(wr *w, const uint32_t *pgnos, uint32_t n, uint64_t vid,
                  uint64_t term, uint16_t flags, uint32_t db)
{
    uint8_t imgs[8][PS];
    wal_page_in in[8];
    for (uint32_t i = 0; i < n; i++) {
        tps_page(vid + i, PS, imgs[i]);
        in[i] = (wal_page_in){ pgnos[i], imgs[i] };
    }
    wal_record_hdr h = { .page_size = PS, .lsn = w->lsn, .prev_lsn = w->prev,
                         .term = term, .commit_ts_us = T0, .db_size_pages = db,
                         .txn_flags = flags };
    uint8_t *buf;
    size_t len;
    assert_int_equal(wal_record_encode(&h, in, n, 0, &buf, &len), 0);
    int rc = ps_timeline_ingest(w->tl, buf, len);
    free(buf);
    if (rc == 0) {
        w->prev = w->lsn;
        w->lsn += len;
    }
    return rc;
}

/* Page pgno at lsn holds the image of vid. */
static void expect_page(ps_timeline *tl, uint32_t pgno, lsn_t lsn, uint64_t vid)
{
    uint8_t got[PS], want[PS];
    lsn_t v;
    assert_int_equal(ps_timeline_get_page(tl, pgno, lsn, got, &v, NULL), 0);
    tps_page(vid, PS, want);
    assert_memory_equal(got, want, PS);
}

/* Held back until the commit record, spilled beyond the budget, the later
 * copy of a page wins; abandoned transactions (another term, a record that
 * does not continue, a continuation without a start) never appear; a
 * restarted stream receives the pending transaction again. */
static void test_multi_record_txn(void **state)
{
    env e;
    env_init(&e);
    ps_repo_close(e.repo);
    e.cfg.pending_mem_bytes = 2 * PS;   /* spill from the third page */
    e.cfg.freeze_bytes = 1 << 20;
    env_open(&e);
    ps_timeline *tl = mk_tl(&e, "main", NULL, 0);
    wr w = writer(tl);
    const uint32_t p12[] = { 1, 2 }, p345[] = { 2, 3, 4 }, p5[] = { 5 }, p1[] = { 1 };
    assert_int_equal(put_tx(&w, p12, 2, 100, 1, 0, 5), 0);
    lsn_t base = w.lsn;
    assert_int_equal(ps_timeline_last_record_lsn(tl), base);

    assert_int_equal(put_tx(&w, p12, 2, 200, 1, WAL_REC_MORE, 5), 0);
    assert_int_equal(put_tx(&w, p345, 3, 300, 1, WAL_REC_MORE | WAL_REC_CONT, 5), 0);
    assert_int_equal(ps_timeline_last_record_lsn(tl), base);
    assert_int_equal(ps_timeline_ingest_lsn(tl), w.lsn);
    assert_true(ps_timeline_pending_bytes(tl) == 4 * PS);   /* page 2 twice */
    expect_page(tl, 2, base, 101);
    /* A restarted stream takes it again from the boundary. */
    ps_timeline_ingest_restart(tl);
    assert_int_equal(ps_timeline_ingest_lsn(tl), base);
    assert_int_equal(ps_timeline_pending_bytes(tl), 0);
    w.lsn = base;
    w.prev = base - 1;   /* unchecked by the timeline; only for the codec */
    assert_int_equal(put_tx(&w, p12, 2, 200, 1, WAL_REC_MORE, 5), 0);
    assert_int_equal(put_tx(&w, p345, 3, 300, 1, WAL_REC_MORE | WAL_REC_CONT, 5), 0);
    assert_int_equal(put_tx(&w, p5, 1, 500, 1, WAL_REC_CONT, 5), 0);
    lsn_t c1 = w.lsn;
    assert_int_equal(ps_timeline_last_record_lsn(tl), c1);
    assert_int_equal(ps_timeline_pending_bytes(tl), 0);
    expect_page(tl, 1, c1, 200);
    expect_page(tl, 2, c1, 300);          /* the later record wins */
    expect_page(tl, 4, c1, 302);
    expect_page(tl, 5, c1, 500);
    expect_page(tl, 2, c1 - 1, 101);      /* inside the txn: before it */
    assert_int_equal(version_at(tl, 3, c1), c1);

    /* A new term follows two records of term 1: they never commit. */
    assert_int_equal(put_tx(&w, p12, 2, 600, 1, WAL_REC_MORE, 5), 0);
    assert_int_equal(put_tx(&w, p345, 3, 700, 1, WAL_REC_MORE | WAL_REC_CONT, 5), 0);
    assert_int_equal(put_tx(&w, p1, 1, 800, 2, WAL_REC_CONT, 5), 0);
    assert_int_equal(ps_timeline_last_record_lsn(tl), c1);
    assert_int_equal(put_tx(&w, p5, 1, 900, 2, 0, 5), 0);
    lsn_t c2 = w.lsn;
    assert_int_equal(ps_timeline_last_record_lsn(tl), c2);
    expect_page(tl, 1, c2, 200);
    expect_page(tl, 2, c2, 300);
    expect_page(tl, 5, c2, 900);
    /* Same term, but a whole record follows (the writer gave up). */
    assert_int_equal(put_tx(&w, p12, 2, 1000, 2, WAL_REC_MORE, 5), 0);
    assert_int_equal(put_tx(&w, p5, 1, 1100, 2, 0, 5), 0);
    expect_page(tl, 1, w.lsn, 200);
    expect_page(tl, 5, w.lsn, 1100);
    /* A continuation without its start is dropped, up to its end. */
    lsn_t c3 = w.lsn;
    assert_int_equal(put_tx(&w, p12, 2, 1200, 2, WAL_REC_MORE | WAL_REC_CONT, 5), 0);
    assert_int_equal(put_tx(&w, p5, 1, 1300, 2, WAL_REC_CONT, 5), 0);
    assert_int_equal(ps_timeline_last_record_lsn(tl), c3);
    assert_int_equal(put_tx(&w, p1, 1, 1400, 2, 0, 5), 0);
    expect_page(tl, 1, w.lsn, 1400);
    expect_page(tl, 5, w.lsn, 1100);
    /* Gaps still count against the position of the pending records. */
    assert_int_equal(put_tx(&w, p1, 1, 1500, 2, WAL_REC_MORE, 5), 0);
    w.lsn += 8;
    assert_int_equal(put_tx(&w, p1, 1, 1500, 2, WAL_REC_CONT, 5), PS_EGAP);
    ps_timeline_release(tl);
    env_free(&e);
}

/* ---- residency: eviction, on-demand download, stubs -------------------------- */

/* A bucket of layer copies "<name>-<gen>" in a directory; downloads are
 * counted, can be slowed and failed. */
typedef struct fake_bucket {
    char dir[600];
    atomic_int downloads;
    int delay_ms;
    atomic_int fail;
} fake_bucket;

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    if (!in) {
        return -errno;
    }
    char tmp[1300];
    snprintf(tmp, sizeof(tmp), "%s.tmp", to);
    FILE *out = fopen(tmp, "wb");
    assert_non_null(out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
        assert_int_equal(fwrite(buf, 1, n, out), n);
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(rename(tmp, to), 0);
    return 0;
}

static int fb_download(void *ctx, const arbor_id *t, const arbor_id *l, const char *name,
                       uint32_t gen, const char *dest)
{
    (void)t;
    (void)l;
    fake_bucket *b = ctx;
    atomic_fetch_add(&b->downloads, 1);
    usleep((useconds_t)b->delay_ms * 1000);
    if (atomic_load(&b->fail)) {
        return -EIO;
    }
    char src[1300];
    snprintf(src, sizeof(src), "%s/%s-%08x", b->dir, name, gen);
    return copy_file(src, dest);
}

typedef struct reader_arg {
    ps_timeline *tl;
    lsn_t lsn, want;
    int rc;
} reader_arg;

static void *reader_main(void *p)
{
    reader_arg *a = p;
    lsn_t v = 0;
    a->rc = read_lsn(a->tl, 3, a->lsn, &v);
    if (a->rc == 0 && v != a->want) {
        a->rc = -1;
    }
    return NULL;
}

static bool file_exists(const char *dir, const char *name, const char *suffix)
{
    char p[1300];
    snprintf(p, sizeof(p), "%s/%s%s", dir, name, suffix);
    return access(p, F_OK) == 0;
}

/* Evicts every resident layer of tl after "uploading" it to b as gen 1. */
static size_t evict_all(ps_timeline *tl, fake_bucket *b)
{
    ps_meta m;
    ps_layer_file *snap;
    size_t n, evicted = 0;
    assert_int_equal(ps_timeline_layer_snapshot(tl, &m, &snap, &n), 0);
    for (size_t i = 0; i < n; i++) {
        if (!snap[i].resident) {
            continue;
        }
        char from[1300], to[1300];
        snprintf(from, sizeof(from), "%s/%s", ps_timeline_dir(tl), snap[i].name);
        snprintf(to, sizeof(to), "%s/%s-%08x", b->dir, snap[i].name, 1u);
        assert_int_equal(copy_file(from, to), 0);
        uint64_t freed = 0;
        assert_int_equal(ps_timeline_evict_layer(tl, snap[i].name, 1, &freed), 0);
        assert_int_equal(freed, snap[i].size_bytes);
        assert_false(file_exists(ps_timeline_dir(tl), snap[i].name, ""));
        assert_true(file_exists(ps_timeline_dir(tl), snap[i].name, PS_LAYER_STUB_SUFFIX));
        /* Not resident any more: nothing to evict. */
        assert_int_equal(ps_timeline_evict_layer(tl, snap[i].name, 1, &freed), PS_ENOTFOUND);
        evicted++;
    }
    free(snap);
    return evicted;
}

static void test_residency(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    fake_bucket b = { .delay_ms = 0 };
    snprintf(b.dir, sizeof(b.dir), "%s/bucket", e.dir);
    assert_int_equal(mkdir(b.dir, 0755), 0);
    ps_layer_source src = { .download = fb_download, .ctx = &b };
    ps_repo_close(e.repo);
    e.cfg.layer_source = &src;
    e.cfg.freeze_bytes = 1 << 20;      /* one layer per checkpoint */
    env_open(&e);
    ps_timeline *tl = mk_tl(&e, "main", NULL, 0);
    wr w = writer(tl);
    lsn_t at[20];
    for (int i = 0; i < 20; i++) {
        at[i] = put1(&w, 1 + (uint32_t)i % 5, T0 + i);
    }
    assert_int_equal(ps_timeline_checkpoint(tl), 0);
    lsn_t want[20];
    for (int i = 0; i < 20; i++) {
        want[i] = version_at(tl, 3, at[i]);
    }
    ps_timeline_info info;
    ps_timeline_get_info(tl, &info);
    assert_int_equal(info.layer_count, 1);
    assert_int_equal(info.remote_layers, 0);
    assert_int_equal(evict_all(tl, &b), 1);
    ps_timeline_get_info(tl, &info);
    assert_int_equal(info.remote_layers, 1);
    assert_int_equal(info.resident_size_bytes, 0);

    /* Eight concurrent readers of the evicted layer share one download. */
    b.delay_ms = 200;
    pthread_t th[8];
    reader_arg ra[8];
    for (int i = 0; i < 8; i++) {
        ra[i] = (reader_arg){ .tl = tl, .lsn = at[19], .want = want[19] };
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &ra[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(ra[i].rc, 0);
    }
    assert_int_equal(atomic_load(&b.downloads), 1);
    b.delay_ms = 0;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(version_at(tl, 3, at[i]), want[i]);
    }
    ps_timeline_get_info(tl, &info);
    assert_int_equal(info.remote_layers, 0);
    assert_true(info.resident_size_bytes > 0);

    /* A failed download is an error, never a page, and is retried. */
    assert_int_equal(evict_all(tl, &b), 1);
    atomic_store(&b.fail, 1);
    lsn_t v;
    assert_int_not_equal(read_lsn(tl, 3, at[10], &v), 0);
    atomic_store(&b.fail, 0);
    assert_int_equal(version_at(tl, 3, at[10]), want[10]);

    /* Across a restart: a stub alone is a layer in the bucket... */
    char name[PS_LAYER_NAME_MAX];
    {
        ps_meta m;
        ps_layer_file *snap;
        size_t n;
        assert_int_equal(ps_timeline_layer_snapshot(tl, &m, &snap, &n), 0);
        memcpy(name, snap[0].name, sizeof(name));
        free(snap);
    }
    assert_int_equal(evict_all(tl, &b), 1);
    char tdir[1024];
    snprintf(tdir, sizeof(tdir), "%s", ps_timeline_dir(tl));
    arbor_id id = *ps_timeline_id(tl);
    ps_timeline_release(tl);
    ps_repo_close(e.repo);
    int before = atomic_load(&b.downloads);
    env_open(&e);
    assert_int_equal(ps_repo_get_timeline(e.repo, &e.tenant, &id, &tl), 0);
    ps_timeline_get_info(tl, &info);
    assert_int_equal(info.remote_layers, 1);
    assert_int_equal(atomic_load(&b.downloads), before);   /* nothing read yet */
    assert_int_equal(version_at(tl, 3, at[5]), want[5]);
    assert_int_equal(atomic_load(&b.downloads), before + 1);
    assert_false(file_exists(tdir, name, PS_LAYER_STUB_SUFFIX));
    /* ...and a stub beside its file (a crash between the steps) loses to
     * the file. */
    char stub[1300], text[64];
    snprintf(stub, sizeof(stub), "%s/%s" PS_LAYER_STUB_SUFFIX, tdir, name);
    int tn = ps_layer_stub_format(1, 4096, text, sizeof(text));
    assert_true(tn > 0);
    FILE *f = fopen(stub, "w");
    assert_non_null(f);
    fwrite(text, 1, (size_t)tn, f);
    fclose(f);
    ps_timeline_release(tl);
    ps_repo_close(e.repo);
    env_open(&e);
    assert_int_equal(ps_repo_get_timeline(e.repo, &e.tenant, &id, &tl), 0);
    ps_timeline_get_info(tl, &info);
    assert_int_equal(info.remote_layers, 0);
    assert_false(file_exists(tdir, name, PS_LAYER_STUB_SUFFIX));
    assert_int_equal(version_at(tl, 3, at[19]), want[19]);
    ps_timeline_release(tl);

    /* Stub text. */
    uint32_t g;
    uint64_t sz;
    assert_int_equal(ps_layer_stub_parse(text, (size_t)tn, &g, &sz), 0);
    assert_true(g == 1 && sz == 4096);
    assert_int_equal(ps_layer_stub_parse("00000001 4096", 13, &g, &sz), -EINVAL);
    assert_int_equal(ps_layer_stub_parse("1 4096\n", 7, &g, &sz), -EINVAL);
    assert_int_equal(ps_layer_stub_parse("00000000 4096\n", 14, &g, &sz), -EINVAL);
    assert_int_equal(ps_layer_stub_parse("00000001 12\n", 12, &g, &sz), -EINVAL);
    assert_int_equal(ps_layer_stub_parse("", 0, &g, &sz), -EINVAL);
    env_free(&e);
}

/* A database that shrinks (VACUUM truncates it): images at or after the
 * truncation leave out the pages beyond the new size, so once the PITR
 * window passed GC frees their storage; reads of live pages stay right. */
static void test_truncate_shrinks(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    ps_timeline *tl = mk_tl(&e, "main", NULL, 0);
    wr w = writer(tl);
    for (uint32_t r = 0; r < 10; r++) {
        uint32_t pg[8];
        for (uint32_t i = 0; i < 8; i++) {
            pg[i] = r * 8 + i + 1;
        }
        put(&w, pg, 8, T0 + (int64_t)r * 1000000, (r + 1) * 8);
    }
    assert_int_equal(ps_timeline_checkpoint(tl), 0);
    ps_timeline_info before;
    ps_timeline_get_info(tl, &before);
    /* Truncated to 8 pages; page 1 rewritten. */
    uint32_t one = 1;
    lsn_t head = put(&w, &one, 1, T0 + 20 * 1000000ll, 8);
    lsn_t old = head - 1;
    assert_int_equal(ps_timeline_checkpoint(tl), 0);
    lsn_t img;
    assert_int_equal(ps_timeline_compact(tl, true, &img), 0);
    assert_int_equal(img, head);
    assert_int_equal(version_at(tl, 1, head), head);
    assert_true(version_at(tl, 5, head) > 0);
    /* Page 50 is not part of the database at the head any more... */
    lsn_t vl = 99;
    int rc = read_lsn(tl, 50, head, &vl);
    assert_true(rc != 0 || vl == 0);
    /* ...but is before the truncation, until the window passes. */
    assert_true(version_at(tl, 50, old) > 0);
    e.clk.now_us = T0 + 100 * 1000000ll;
    assert_int_equal(ps_timeline_set_pitr_window(tl, 1), 0);
    ps_gc_result res;
    assert_int_equal(ps_timeline_gc(tl, &res), 0);
    ps_timeline_info after;
    ps_timeline_get_info(tl, &after);
    printf("[ truncate ] layer bytes %" PRIu64 " before, %" PRIu64 " after GC (%u removed)\n",
           before.branch_only_size_bytes, after.branch_only_size_bytes, res.layers_removed);
    assert_true(res.layers_removed > 0);
    assert_true(after.branch_only_size_bytes * 4 < before.branch_only_size_bytes);
    assert_int_equal(version_at(tl, 1, head), head);
    for (uint32_t p = 2; p <= 8; p++) {
        assert_true(version_at(tl, p, head) > 0);
    }
    ps_timeline_release(tl);
    env_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_roundtrip),
        cmocka_unit_test(test_residency),
        cmocka_unit_test(test_truncate_shrinks),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_lsn_by_timestamp),
        cmocka_unit_test(test_lease_and_gc),
        cmocka_unit_test(test_wait_and_sizes),
        cmocka_unit_test(test_unload),
        cmocka_unit_test(test_full_disk),
        cmocka_unit_test(test_multi_record_txn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
