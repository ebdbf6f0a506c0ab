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
 * Corruption: bytes flipped in a delta layer's data, index, footer and
 * header, and a truncated file: reads that need the layer fail with
 * PS_ECORRUPT, every other read still returns the right page, and no read
 * ever returns wrong data.
 */
#include "test_ps_util.h"

#include "log.h"
#include "ps_layer.h"

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
    disk_io io;
    ps_config cfg;
    tps_clock clk;
    ps_clock clock;
    ps_repo *repo;
    tps_model m;
    uint64_t rng;
} ctx;

static void ctx_init(ctx *c, const char *name)
{
    memset(c, 0, sizeof(*c));
    c->dir = tps_mkdtemp();
    c->rng = tps_seed(name);
    c->f.rng = c->rng ^ 0xabcdef;
    c->io = fault_io(&c->f);
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
    tps_rmdir(c->dir);
}

/* Creates timeline slot i (root if parent < 0) with a preset id, so that
 * after a crash during the create we can tell whether it exists. */
static int try_create(ctx *c, int parent, lsn_t at)
{
    int i = tps_model_add_tl(&c->m, parent, parent < 0 ? PS_DEFAULT_START_LSN : at,
                             parent < 0 ? c->clk.now_us : c->m.tl[parent].last_ts);
    tps_tl *t = &c->m.tl[i];
    assert_int_equal(id_generate(&t->id), 0);
    ps_timeline_create_args a = { .tenant_id = c->m.tenant, .timeline_id = t->id,
                                  .branch_name = t->name, .ancestor_lsn = at };
    if (parent >= 0) {
        a.ancestor_id = c->m.tl[parent].id;
    }
    int rc = ps_repo_create_timeline(c->repo, &a, &t->h);
    if (rc != 0) {
        t->h = NULL; /* only a crash makes it fail here: recover() decides */
        assert_true(c->f.crashed);
    }
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
static void recover(ctx *c)
{
    close_repo(c);
    c->f.fail_at = 0;
    c->f.crashed = false;
    assert_int_equal(ps_repo_open(c->dir, &c->cfg, &c->repo), 0);
    walk_no_leftovers(c->dir);
    int kept = 0;
    for (int i = 0; i < c->m.n_tl; i++) {
        tps_tl *t = &c->m.tl[i];
        if (ps_repo_get_timeline(c->repo, &c->m.tenant, &t->id, &t->h) != 0) {
            /* its create crashed before the rename: it never existed */
            assert_true(i == c->m.n_tl - 1);
            tps_model_free_tl(&c->m, i);
            c->m.n_tl--;
            break;
        }
        lsn_t dcl = ps_timeline_disk_consistent_lsn(t->h);
        assert_int_equal(ps_timeline_last_record_lsn(t->h), dcl);
        assert_true(dcl == t->start || tps_model_rec_at(&c->m, i, dcl) < t->n_recs ||
                    dcl == t->last_lsn);
        check_published_only(c, i);
        kept++;
    }
    verify(c, true);
    for (int i = 0; i < c->m.n_tl; i++) {
        tps_model_reingest(&c->m, i);
    }
    verify(c, false);
    (void)kept;
}

/* Random work until the crash (or the end): ingest, checkpoints,
 * compaction, GC, branch creation. */
static void workload(ctx *c, int steps)
{
    for (int s = 0; s < steps && !c->f.crashed; s++) {
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
        recover(&c);
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
    log_init("test_ps_crash", LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_recovery),
        cmocka_unit_test(test_corrupt_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
