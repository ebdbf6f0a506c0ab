/*
 * Crash safety and corruption of the pageserver storage engine.
 *
 * Crashes: an I/O table counts every mutating call (create/open for write,
 * pwrite, fsync, ftruncate, rename, unlink, mkdir, rmtree, directory fsync,
 * atomic replace); at a random one the "machine stops": that call fails
 * (a pwrite may leave half its bytes, an atomic replace its temp file) and
 * so does every later one. The repository is then closed and reopened with
 * working I/O: no temp or unpublished file may remain, every page at every
 * LSN <= disk_consistent_lsn must read as before, and re-ingesting the WAL
 * from disk_consistent_lsn must restore the rest.
 *
 * Power loss (test_power_loss): the same workload on a disk that loses
 * every write not yet fsynced and every directory change not yet
 * fsync_dir'ed when the power goes (pl_disk.h), at a random call, for
 * PS_PL_SEEDS seeds (default 200; PS_PL_SEED replays one): after the cut and
 * a reopen, every timeline whose create returned is there, no
 * disk_consistent_lsn is below one the engine reported before the cut,
 * every page up to it reads as before, re-ingest restores the rest.
 *
 * Corruption: bytes flipped in a delta layer's data, index, footer and
 * header, and a truncated file: reads that need the layer fail with
 * PS_ECORRUPT, every other read still returns the right page, and no read
 * ever returns wrong data.
 */
#include "test_ps_util.h"

#include "log.h"
#include "ps_layer.h"
#include "unit/pl_disk.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE_SIZE 1024u
#define MAX_PGNO 24u

/* ---- the crashing I/O table --------------------------------------------- */

typedef struct fault {
    long ops;            /* mutating calls since armed */
    long fail_at;        /* 0: disarmed */
    bool crashed;
    uint64_t rng;
    long crashes;
} fault;

/* true if this mutating call must fail (the crash point or after it). */
static bool hit(fault *f)
{
    if (f->crashed) {
        return true;
    }
    if (f->fail_at == 0) {
        return false;
    }
    if (++f->ops < f->fail_at) {
        return false;
    }
    f->crashed = true;
    f->crashes++;
    return true;
}

static int f_open(void *ctx, const char *path, int flags, mode_t mode)
{
    if ((flags & (O_WRONLY | O_RDWR | O_CREAT)) && hit(ctx)) {
        return -EIO;
    }
    return disk_io_default.open(NULL, path, flags, mode);
}

static ssize_t f_pwrite(void *ctx, int fd, const void *buf, size_t len, off_t off)
{
    fault *f = ctx;
    bool was = f->crashed;
    if (hit(f)) {
        if (!was && len > 1 && tps_rand(&f->rng, 2)) {
            disk_io_default.pwrite(NULL, fd, buf, len / 2, off); /* torn */
        }
        return -EIO;
    }
    return disk_io_default.pwrite(NULL, fd, buf, len, off);
}

#define WRAP(name, sig, args)                         \
    static int f_##name sig                           \
    {                                                 \
        if (hit(ctx)) {                               \
            return -EIO;                              \
        }                                             \
        return disk_io_default.name args;               \
    }
WRAP(fsync, (void *ctx, int fd), (NULL, fd))
WRAP(ftruncate, (void *ctx, int fd, off_t len), (NULL, fd, len))
WRAP(rename, (void *ctx, const char *a, const char *b), (NULL, a, b))
WRAP(unlink, (void *ctx, const char *p), (NULL, p))
WRAP(mkdir, (void *ctx, const char *p), (NULL, p))
WRAP(remove_tree, (void *ctx, const char *p), (NULL, p))
WRAP(fsync_dir, (void *ctx, const char *p), (NULL, p))

static int f_write_atomic(void *ctx, const char *path, const void *data, size_t len)
{
    fault *f = ctx;
    bool was = f->crashed;
    if (hit(f)) {
        if (!was) { /* died half-way through writing the temp file */
            char tmp[4096];
            snprintf(tmp, sizeof(tmp), "%s.tmp", path);
            int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                ssize_t n = write(fd, data, len / 2);
                (void)n;
                close(fd);
            }
        }
        return -EIO;
    }
    return disk_io_default.write_atomic(NULL, path, data, len);
}

static disk_io fault_io(fault *f)
{
    disk_io io = disk_io_default;
    io.ctx = f;
    io.use_uring = 0;
    io.open = f_open;
    io.pwrite = f_pwrite;
    io.fsync = f_fsync;
    io.ftruncate = f_ftruncate;
    io.rename = f_rename;
    io.unlink = f_unlink;
    io.mkdir = f_mkdir;
    io.remove_tree = f_remove_tree;
    io.fsync_dir = f_fsync_dir;
    io.write_atomic = f_write_atomic;
    return io;
}

/* ---- repository + model --------------------------------------------------- */

typedef struct ctx {
    char *dir;
    fault f;
    pl_disk *pl;          /* power-loss runs: the disk (else f's table) */
    lsn_t acked_dcl[TPS_MAX_TL];  /* highest disk_consistent_lsn reported */
    bool acked_tl[TPS_MAX_TL];    /* its create returned 0 */
    disk_io io;
    ps_config cfg;
    tps_clock clk;
    ps_clock clock;
    ps_repo *repo;
    tps_model m;
    uint64_t rng;
} ctx;

/* A repository in a new directory, on the crashing table or (pl) on a
 * disk that loses power. */
static void ctx_setup(ctx *c, uint64_t seed, bool pl)
{
    memset(c, 0, sizeof(*c));
    c->dir = tps_mkdtemp();
    c->rng = seed;
    c->f.rng = c->rng ^ 0xabcdef;
    if (pl) {
        c->pl = pl_disk_new(c->dir, seed);
        assert_non_null(c->pl);
        c->io = *pl_disk_io(c->pl);
    } else {
        c->io = fault_io(&c->f);
    }
    c->clk.now_us = 1700000000000000ll;
    c->clock = (ps_clock){ .ctx = &c->clk, .now_us = tps_clock_now };
    ps_config_default(&c->cfg);
    c->cfg.freeze_bytes = 3000;
    c->cfg.image_after_deltas = 3;
    c->cfg.io = &c->io;
    c->cfg.clock = &c->clock;
    c->cfg.ancestor_wait_ms = 0;
    tps_model_init(&c->m, PAGE_SIZE, MAX_PGNO);
    assert_int_equal(ps_repo_open(c->dir, &c->cfg, &c->repo), 0);
    assert_int_equal(ps_repo_create_tenant(c->repo, NULL, &c->m.tenant), 0);
}

static void ctx_init(ctx *c, const char *name)
{
    ctx_setup(c, tps_seed(name), false);
}

static bool crashed(ctx *c)
{
    return c->pl ? pl_disk_stopped(c->pl) : c->f.crashed;
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

static void ctx_free(ctx *c)
{
    if (c->repo) {
        close_repo(c);
    }
    tps_model_free(&c->m);
    pl_disk_free(c->pl);
    tps_rmdir(c->dir);
}

/* Creates timeline slot i (root if parent < 0) with a preset id, so that
 * after a crash during the create we can tell whether it exists. */
static int try_create(ctx *c, int parent, lsn_t at)
{
    int i = tps_model_add_tl(&c->m, parent, parent < 0 ? PS_DEFAULT_START_LSN : at,
                             parent < 0 ? c->clk.now_us : c->m.tl[parent].last_ts);
    tps_tl *t = &c->m.tl[i];
    c->acked_tl[i] = false;
    c->acked_dcl[i] = 0;
    assert_int_equal(id_generate(&t->id), 0);
    ps_timeline_create_args a = { .tenant_id = c->m.tenant, .timeline_id = t->id,
                                  .branch_name = t->name, .ancestor_lsn = at };
    if (parent >= 0) {
        a.ancestor_id = c->m.tl[parent].id;
    }
    int rc = ps_repo_create_timeline(c->repo, &a, &t->h);
    if (rc != 0) {
        t->h = NULL; /* only a crash makes it fail here: recover() decides */
        if (!crashed(c)) { fprintf(stderr, "create: %s\n", ps_strerror(rc)); }
        assert_true(crashed(c));
    }
    c->acked_tl[i] = rc == 0;
    return rc;
}

/* ---- checks after reopen --------------------------------------------------- */

static void walk_no_leftovers(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        size_t n = strlen(de->d_name);
        if ((n > 4 && strcmp(de->d_name + n - 4, ".tmp") == 0) ||
            strstr(de->d_name, ".deleted")) {
            fail_msg("leftover %s/%s after recovery", dir, de->d_name);
        }
        char p[4096];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            walk_no_leftovers(p);
        }
    }
    closedir(d);
}

/* Every layer file of timeline i lies at or below its disk_consistent_lsn. */
static void check_published_only(ctx *c, int i)
{
    ps_timeline *h = c->m.tl[i].h;
    lsn_t dcl = ps_timeline_disk_consistent_lsn(h);
    DIR *d = opendir(ps_timeline_dir(h));
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        ps_layer_kind k;
        lsn_t s, e;
        if (ps_layer_parse_name(de->d_name, &k, &s, &e) == 0 && e > dcl) {
            fail_msg("unpublished layer %s survived (dcl %llx)", de->d_name,
                     (unsigned long long)dcl);
        }
    }
    closedir(d);
}

/* Are the ancestors far enough to serve timeline i at lsn? */
static bool chain_ready(ctx *c, int i, lsn_t lsn)
{
    for (const tps_tl *t = &c->m.tl[i]; t->parent >= 0; t = &c->m.tl[t->parent]) {
        lsn = lsn < t->start ? lsn : t->start;
        if (ps_timeline_last_record_lsn(c->m.tl[t->parent].h) < lsn) {
            return false;
        }
    }
    return true;
}

static void check_lsn(ctx *c, int i, lsn_t lsn, uint8_t *pages, uint8_t *want)
{
    uint32_t pg[MAX_PGNO];
    lsn_t got[MAX_PGNO];
    for (uint32_t p = 0; p < MAX_PGNO; p++) {
        pg[p] = p + 1;
    }
    int rc = ps_timeline_get_pages(c->m.tl[i].h, pg, MAX_PGNO, lsn, pages, got, NULL);
    if (rc == PS_ETIMEOUT && !chain_ready(c, i, lsn)) {
        return; /* an ancestor still has to re-ingest up to the branch point */
    }
    if (rc != 0) {
        fail_msg("timeline %d lsn %llx: %s", i, (unsigned long long)lsn, ps_strerror(rc));
    }
    for (uint32_t p = 0; p < MAX_PGNO; p++) {
        lsn_t vl;
        if (!tps_model_check(&c->m, i, pg[p], lsn, got[p], pages + (size_t)p * PAGE_SIZE, want,
                             &vl)) {
            fail_msg("timeline %d pgno %u lsn %llx: version %llx, want %llx", i,
                     pg[p], (unsigned long long)lsn, (unsigned long long)got[p],
                     (unsigned long long)vl);
        }
    }
}

/* Reads at (a sample of) the commit LSNs <= upto of every timeline. */
static void verify(ctx *c, bool only_durable)
{
    uint8_t *pages = malloc((size_t)MAX_PGNO * PAGE_SIZE), *want = malloc(PAGE_SIZE);
    for (int i = 0; i < c->m.n_tl; i++) {
        tps_tl *t = &c->m.tl[i];
        lsn_t upto = only_durable ? ps_timeline_disk_consistent_lsn(t->h) : t->last_lsn;
        size_t step = t->n_recs / 60 + 1;
        check_lsn(c, i, t->start, pages, want);
        for (size_t r = tps_rand(&c->rng, (uint32_t)step); r < t->n_recs; r += step) {
            if (t->recs[r].end <= upto) {
                check_lsn(c, i, t->recs[r].end, pages, want);
            }
        }
        check_lsn(c, i, upto, pages, want);
    }
    free(pages);
    free(want);
}

/* Reopen with working I/O: find the timelines that exist, check what is
 * durable, re-ingest, check everything. */
static void recover(ctx *c, pl_cut_mode mode)
{
    close_repo(c);
    c->f.fail_at = 0;
    c->f.crashed = false;
    if (c->pl) {
        assert_int_equal(pl_disk_power_cut(c->pl, mode), 0);
    }
    assert_int_equal(ps_repo_open(c->dir, &c->cfg, &c->repo), 0);
    walk_no_leftovers(c->dir);
    int kept = 0;
    for (int i = 0; i < c->m.n_tl; i++) {
        tps_tl *t = &c->m.tl[i];
        if (ps_repo_get_timeline(c->repo, &c->m.tenant, &t->id, &t->h) != 0) {
            /* its create crashed before the rename: it never existed */
            if (c->acked_tl[i]) {
                fail_msg("timeline %d was created (the create returned 0) and is gone", i);
            }
            assert_true(i == c->m.n_tl - 1);
            tps_model_free_tl(&c->m, i);
            c->m.n_tl--;
            break;
        }
        lsn_t dcl = ps_timeline_disk_consistent_lsn(t->h);
        if (dcl < c->acked_dcl[i]) {
            fail_msg("timeline %d: disk_consistent_lsn %llx after the cut, %llx reported "
                     "before it", i, (unsigned long long)dcl,
                     (unsigned long long)c->acked_dcl[i]);
        }
        assert_int_equal(ps_timeline_last_record_lsn(t->h), dcl);
        assert_true(dcl == t->start || tps_model_rec_at(&c->m, i, dcl) < t->n_recs ||
                    dcl == t->last_lsn);
        kept++;
    }
    verify(c, true);
    for (int i = 0; i < c->m.n_tl; i++) {
        tps_model_reingest(&c->m, i);
    }
    verify(c, false);
    /* after every timeline was read: its layers are loaded (and leftovers
     * removed) on its first use, which may wait for its ancestor */
    for (int i = 0; i < c->m.n_tl; i++) {
        check_published_only(c, i);
    }
    (void)kept;
}

/* Remembers what the engine has reported durable so far. */
static void note_acks(ctx *c)
{
    for (int i = 0; i < c->m.n_tl; i++) {
        if (c->m.tl[i].h) {
            lsn_t dcl = ps_timeline_disk_consistent_lsn(c->m.tl[i].h);
            c->acked_dcl[i] = dcl > c->acked_dcl[i] ? dcl : c->acked_dcl[i];
        }
    }
}

/* Random work until the crash (or the end): ingest, checkpoints,
 * compaction, GC, branch creation. */
static void workload(ctx *c, int steps)
{
    for (int s = 0; s < steps && !crashed(c); s++) {
        if (c->pl) {
            note_acks(c);
        }
        int i = (int)tps_rand(&c->rng, (uint32_t)c->m.n_tl);
        tps_tl *t = &c->m.tl[i];
        if (!t->h) {
            continue;
        }
        switch (tps_rand(&c->rng, 12)) {
        case 0:
            ps_timeline_checkpoint(t->h);
            break;
        case 1:
            ps_timeline_compact(t->h, tps_rand(&c->rng, 2), NULL);
            break;
        case 2:
            ps_timeline_gc(t->h, NULL);   /* 7-day window: only the cutoff */
            break;
        case 3:
            if (c->m.n_tl < 5 && ps_timeline_last_record_lsn(t->h) == t->last_lsn) {
                lsn_t at = t->n_recs ? t->recs[tps_rand(&c->rng, (uint32_t)t->n_recs)].end
                                     : t->start;
                try_create(c, i, at);
                break;
            }
            /* fall through */
        default: {
            tps_rec *r = tps_model_make_record(&c->m, i, &c->rng, 4, 1000000);
            int rc = ps_timeline_ingest(t->h, r->buf, r->len);
            assert_true(rc == 0 || rc == PS_EBROKEN || rc == PS_EGAP || rc == PS_EFLUSHING);
            break;
        }
        }
    }
}

static void test_crash_recovery(void **state)
{
    ctx c;
    ctx_init(&c, "test_crash_recovery");
    assert_int_equal(try_create(&c, -1, 0), 0);
    workload(&c, 30);
    int rounds = 40 * tps_scale() / 100 + 2;
    for (int round = 0; round < rounds; round++) {
        c.f.ops = 0;
        c.f.fail_at = 1 + (long)tps_rand(&c.rng, 120);
        workload(&c, 60);
        recover(&c, PL_CUT_DROP_ALL);
    }
    printf("[ crash ] %d rounds, %ld crashes, %d timelines, records:", rounds,
           c.f.crashes, c.m.n_tl);
    for (int i = 0; i < c.m.n_tl; i++) {
        printf(" %zu", c.m.tl[i].n_recs);
    }
    printf("\n");
    assert_true(c.f.crashes > rounds / 2);
    ctx_free(&c);
}

/* ---- power loss ------------------------------------------------------------ */

static uint64_t pl_seed;         /* the seed running; 0 when none failed */

/* One seed: a root timeline, work, then three power cuts at a random
 * mutating call each, alternately losing every pending write and keeping a
 * random subset of them. */
static void power_loss_seed(uint64_t seed, pl_disk_stats *sum)
{
    ctx c;
    ctx_setup(&c, seed, true);
    assert_int_equal(try_create(&c, -1, 0), 0);
    workload(&c, 20);
    for (int round = 0; round < 3; round++) {
        pl_disk_arm(c.pl, 1 + (long)tps_rand(&c.rng, 150));
        workload(&c, 50);
        note_acks(&c);  /* what the work returned before any stop counts */
        recover(&c, (pl_cut_mode)tps_rand(&c.rng, 2));
    }
    pl_disk_stats st = pl_disk_get_stats(c.pl);
    sum->cuts += st.cuts;
    sum->stops += st.stops;
    sum->ops += st.ops;
    sum->writes_undone += st.writes_undone;
    sum->writes_kept += st.writes_kept;
    sum->names_lost += st.names_lost;
    sum->names_back += st.names_back;
    ctx_free(&c);
}

static void test_power_loss(void **state)
{
    (void)state;
    const char *one = getenv("PS_PL_SEED");
    const char *n_env = getenv("PS_PL_SEEDS");
    uint64_t first = one ? strtoull(one, NULL, 0) : 1;
    /* Under ASan a seed costs several times more: 100 there (seeds 1-100 still
     * have cuts that undo writes, keep writes and lose names). */
#if defined(__SANITIZE_ADDRESS__)
    long n_default = 100;
#else
    long n_default = 200;
#endif
    long n = one ? 1 : n_env ? atol(n_env) : n_default * tps_scale() / 100;
    pl_disk_stats sum = { 0 };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t s = first; s < first + (uint64_t)n; s++) {
        pl_seed = s;
        power_loss_seed(s, &sum);
    }
    pl_seed = 0;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("[ power loss ] %ld seeds, %ld cuts (%ld at a stopped call) in %.1f s: %ld pending writes undone, %ld "
           "kept, %ld names lost, %ld names back; every created timeline there, no "
           "disk_consistent_lsn went back, every page right\n",
           n, sum.cuts, sum.stops, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
           sum.writes_undone, sum.writes_kept, sum.names_lost, sum.names_back);
    if (n >= 20) { /* the cuts did lose things */
        assert_true(sum.writes_undone > 0 && sum.writes_kept > 0 && sum.names_lost > 0);
    }
}

static int power_loss_teardown(void **state)
{
    (void)state;
    if (pl_seed) {
        printf("[ power loss ] seed %llu failed; replay: PS_PL_SEED=%llu test_ps_crash\n",
               (unsigned long long)pl_seed, (unsigned long long)pl_seed);
    }
    return 0;
}

/* ---- corruption ------------------------------------------------------------ */

static void copy_file(const char *from, const char *to)
{
    void *data;
    size_t len;
    assert_int_equal(fs_read_file(from, 1 << 30, &data, &len), 0);
    assert_int_equal(fs_write_atomic(to, data, len), 0);
    free(data);
}

static void flip(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

/* Reads every page at every commit LSN: right data or PS_ECORRUPT, never
 * anything else. Returns how many reads were refused. */
static int sweep(ctx *c, uint8_t *buf, uint8_t *want)
{
    int refused = 0;
    tps_tl *t = &c->m.tl[0];
    for (size_t r = 0; r < t->n_recs; r++) {
        for (uint32_t p = 1; p <= MAX_PGNO; p++) {
            int rc = tps_check_page(&c->m, 0, p, t->recs[r].end, buf, want);
            assert_true(rc == 0 || rc == PS_ECORRUPT);
            refused += rc != 0;
        }
    }
    return refused;
}

typedef struct victim {
    char path[4096];
    char backup[4096];
    lsn_t start, end;
    ps_layer_entry e;     /* one entry of the layer */
    uint64_t index_off, size;
} victim;

/* A delta layer in the middle of the history, and one of its entries whose
 * page has a newer version in a later layer. */
static void pick_victim(ctx *c, victim *v)
{
    ps_timeline *h = c->m.tl[0].h;
    DIR *d = opendir(ps_timeline_dir(h));
    char names[256][PS_LAYER_NAME_MAX];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 256) {
        ps_layer_kind k;
        lsn_t s, e;
        if (ps_layer_parse_name(de->d_name, &k, &s, &e) == 0 && k == PS_LAYER_DELTA) {
            memcpy(names[n++], de->d_name, strlen(de->d_name) + 1); /* parsed: short */
        }
    }
    closedir(d);
    assert_true(n >= 4);
    qsort(names, (size_t)n, PS_LAYER_NAME_MAX, (int (*)(const void *, const void *))strcmp);
    ps_layer_kind k;
    assert_int_equal(ps_layer_parse_name(names[n / 2], &k, &v->start, &v->end), 0);
    snprintf(v->path, sizeof(v->path), "%s/%s", ps_timeline_dir(h), names[n / 2]);
    snprintf(v->backup, sizeof(v->backup), "%s.bak", c->dir);
    copy_file(v->path, v->backup);
    struct stat st;
    stat(v->path, &st);
    v->size = (uint64_t)st.st_size;
    ps_layer *l;
    ps_layer_open(&disk_io_default, v->path, PS_LAYER_DELTA, v->start, v->end,
                  PAGE_SIZE, v->size, &c->m.tl[0].id, &l);
    assert_int_equal(ps_layer_load(l), 0);
    assert_true(l->n_entries > 1);
    v->e = l->index[0];
    v->index_off = v->size - PS_LAYER_FOOTER_BYTES - l->n_entries * PS_LAYER_ENTRY_BYTES;
    ps_layer_unref(l);
}

static void reopen(ctx *c)
{
    close_repo(c);
    assert_int_equal(ps_repo_open(c->dir, &c->cfg, &c->repo), 0);
    assert_int_equal(ps_repo_get_timeline(c->repo, &c->m.tenant, &c->m.tl[0].id,
                                          &c->m.tl[0].h), 0);
}

static void test_corrupt_layer(void **state)
{
    ctx c;
    ctx_init(&c, "test_corrupt_layer");
    assert_int_equal(try_create(&c, -1, 0), 0);
    for (int r = 0; r < 120; r++) {
        tps_rec *rec = tps_model_make_record(&c.m, 0, &c.rng, 4, 1000);
        assert_int_equal(ps_timeline_ingest(c.m.tl[0].h, rec->buf, rec->len), 0);
    }
    assert_int_equal(ps_timeline_checkpoint(c.m.tl[0].h), 0);
    victim v;
    pick_victim(&c, &v);
    uint8_t buf[PAGE_SIZE], want[PAGE_SIZE];
    lsn_t got;
    const char *what[] = { "data", "index", "footer", "header", "truncated" };
    for (int kind = 0; kind < 5; kind++) {
        close_repo(&c);
        copy_file(v.backup, v.path);
        if (kind == 0) {
            flip(v.path, v.e.offset + v.e.len / 2);
        } else if (kind == 1) {
            flip(v.path, v.index_off + 17);
        } else if (kind == 2) {
            flip(v.path, v.size - 30);
        } else if (kind == 3) {
            flip(v.path, 40);
        } else {
            assert_int_equal(truncate(v.path, (off_t)(v.size - 100)), 0);
        }
        assert_int_equal(ps_repo_open(c.dir, &c.cfg, &c.repo), 0);
        assert_int_equal(ps_repo_get_timeline(c.repo, &c.m.tenant, &c.m.tl[0].id,
                                              &c.m.tl[0].h), 0);
        ps_timeline *h = c.m.tl[0].h;
        /* the damaged version itself */
        assert_int_equal(ps_timeline_get_page(h, v.e.pgno, v.e.lsn, buf, &got, NULL),
                         PS_ECORRUPT);
        uint32_t pg[2] = { v.e.pgno, v.e.pgno == 1 ? 2 : 1 };
        uint8_t two[2 * PAGE_SIZE];
        lsn_t gl[2];
        assert_int_equal(ps_timeline_get_pages(h, pg, 2, v.e.lsn, two, gl, NULL),
                         PS_ECORRUPT);
        /* below the layer: served by older layers */
        assert_int_equal(tps_check_page(&c.m, 0, v.e.pgno, v.start, buf, want), 0);
        int refused = sweep(&c, buf, want);
        printf("[ corrupt %s ] %d of %zu reads refused with PS_ECORRUPT, the rest "
               "correct\n", what[kind], refused, c.m.tl[0].n_recs * MAX_PGNO);
        assert_true(refused > 0);
        reopen(&c);
        (void)reopen;
    }
    close_repo(&c);
    unlink(v.backup);
    ctx_free(&c);
}

int main(void)
{
    /* The engine logs every simulated failure; they are expected here. */
    log_init("test_ps_crash", getenv("PS_LOG") ? LOG_DEBUG : LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_recovery),
        cmocka_unit_test_teardown(test_power_loss, power_loss_teardown),
        cmocka_unit_test(test_corrupt_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
