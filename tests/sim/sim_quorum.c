/*
 * sim_quorum — deterministic simulation of the WAL quorum (issue 16 item 1).
 *
 * One process, one thread, one seeded PRNG. Three acceptors are the real
 * safekeeper acceptor (sk_reg_* / sk_tl_* over sk_control + sk_wal) with
 * their disk I/O through an disk_io table that models fdatasync: every write
 * not yet synced is undone when the acceptor "crashes". Two proposers follow
 * the walproposer's protocol decisions step by step (wp_logic: donor choice,
 * elected history, quorum commit LSN, the record buffer; and the rules of
 * wp_walproposer.c: vote rounds, Elected, commit capped at the acceptor's
 * flush, catch-up from a peer, FAILED after a commit timeout, FENCED on a
 * higher term) as an event-driven state machine instead of threads. The
 * network is a bag of messages: the scheduler drops, duplicates, delays and
 * reorders them; crashes and restarts acceptors and proposers; and lets the
 * two proposers race for terms. Time is virtual.
 *
 * Invariants, checked after every step (see check()):
 *   I1 at most one record is ever committed at an LSN (every commit any
 *      proposer reaches is compared with one global committed log);
 *   I2 an acknowledged commit is on a quorum of acceptors' durable logs and
 *      is never lost or changed;
 *   I3 each acceptor's log equals the committed log up to its commit LSN
 *      (capped at its flush), and it never knows a commit beyond it;
 *   I4 terms only grow: an acceptor's term (also across crashes), each
 *      proposer's term; and one term elects at most one proposer;
 *   I5 a record a proposer reported failed to its client is never committed
 *      by that same proposer.
 *
 * Usage: sim_quorum [--seed N | --seeds N [--first S]] [--steps N]
 *                   [--seconds S] [--verbose] [--pre-fix] [--expect-violation]
 *                   [--broken-vote]  (test_sim_quorum_broken only)
 *        (env ARBOR_SIM_SEEDS overrides --seeds)
 * A violation prints the seed and exits 1; `test_sim_quorum --seed N` replays it
 * exactly (add --verbose for the event trace).
 *
 * Built a second time with -DSIM_BROKEN as test_sim_quorum_broken: its acceptor
 * disk acknowledges fdatasync without making anything durable (an acceptor
 * that acks before fdatasync). That binary exits 0 only when the simulator
 * catches the broken acceptor within the seed budget.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "lsn.h"
#include "sk_control.h"
#include "sk_storage.h"
#include "sk_timeline.h"
#include "wal_record.h"
#include "wp_logic.h"

#define NA 3                 /* acceptors */
#define NP 2                 /* proposers */
#define QUORUM 2
#define START_LSN ((lsn_t)0x1000000)
#define SEG_SIZE 8192        /* small segments: rolls happen in every run */
#define RPC_TIMEOUT_US 40000
#define COMMIT_TIMEOUT_US 250000
#define MAX_INFLIGHT 4
#define MAX_PENDING 6
#define READ_MAX 4096

/* ---- PRNG ----------------------------------------------------------- */

static uint64_t rng_s;
static uint64_t rnd(void)
{
    uint64_t z = (rng_s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t rn(uint64_t n) { return n ? rnd() % n : 0; }
static bool chance(unsigned per_mille) { return rn(1000) < per_mille; }

static bool verbose;
static int64_t now_us;        /* virtual time */
static uint64_t step_no;
static uint64_t cur_seed;

static void trace(const char *fmt, ...)
{
    if (!verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%6" PRIu64 " t=%7" PRId64 "] ", step_no, now_us / 1000);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static bool violated;
static char violation[512];
static void fail(const char *fmt, ...)
{
    if (violated)
        return;
    violated = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(violation, sizeof violation, fmt, ap);
    va_end(ap);
    trace("VIOLATION: %s", violation);
}

/* ---- the disk: disk_io over real files, fdatasync modelled ----------- */

typedef struct undo {
    char *path;
    off_t off;
    size_t len;       /* bytes written */
    size_t old_len;   /* bytes that existed there before (<= len) */
    uint8_t *old;
} undo;

typedef struct sdisk {
    disk_io io;
    char *paths[1024];  /* path of each open fd */
    undo *u;
    size_t nu, cu;
    bool broken_sync;   /* SIM_BROKEN: fdatasync lies */
    bool dead;          /* power is off: nothing reaches the disk */
    bool broken_ctl;    /* SIM_BROKEN --broken-vote: the last control file
                           store is lost on a crash (answered before
                           persisted) */
    char *ctl_path;     /* that store: path and previous contents */
    uint8_t *ctl_old;
    size_t ctl_old_len;
} sdisk;

static void add_undo(sdisk *d, const char *path, int fd, off_t off, size_t len)
{
    undo x = { strdup(path), off, len, 0, malloc(len ? len : 1) };
    ssize_t got = pread(fd, x.old, len, off);
    x.old_len = got > 0 ? (size_t)got : 0;
    if (d->nu == d->cu) {
        d->cu = d->cu ? d->cu * 2 : 256;
        d->u = realloc(d->u, d->cu * sizeof *d->u);
    }
    d->u[d->nu++] = x;
}

static void forget_path(sdisk *d, const char *path)
{
    size_t k = 0;
    for (size_t i = 0; i < d->nu; i++) {
        if (strcmp(d->u[i].path, path) == 0) {
            free(d->u[i].path);
            free(d->u[i].old);
        } else {
            d->u[k++] = d->u[i];
        }
    }
    d->nu = k;
}

static int d_open(void *ctx, const char *path, int flags, mode_t mode)
{
    sdisk *d = ctx;
    int fd = open(path, flags | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    if (fd < 1024) {
        free(d->paths[fd]);
        d->paths[fd] = strdup(path);
    }
    return fd;
}

static int d_close(void *ctx, int fd)
{
    sdisk *d = ctx;
    if (fd >= 0 && fd < 1024) {
        free(d->paths[fd]);
        d->paths[fd] = NULL;
    }
    return close(fd) == 0 ? 0 : -errno;
}

static ssize_t d_pread(void *ctx, int fd, void *buf, size_t len, off_t off)
{
    (void)ctx;
    ssize_t n = pread(fd, buf, len, off);
    return n < 0 ? -errno : n;
}

static ssize_t d_pwrite(void *ctx, int fd, const void *buf, size_t len,
                        off_t off)
{
    sdisk *d = ctx;
    if (d->dead)
        return -EIO;
    if (fd >= 0 && fd < 1024 && d->paths[fd])
        add_undo(d, d->paths[fd], fd, off, len);
    ssize_t n = pwrite(fd, buf, len, off);
    return n < 0 ? -errno : n;
}

/* A sync makes the file's writes durable: they are no longer undone. */
static int d_sync(void *ctx, int fd)
{
    sdisk *d = ctx;
    if (d->dead)
        return -EIO;
    if (fd >= 0 && fd < 1024 && d->paths[fd])
        forget_path(d, d->paths[fd]);
    return 0;
}

static int d_fdatasync(void *ctx, int fd)
{
#ifdef SIM_BROKEN
    sdisk *d = ctx;
    if (d->broken_sync)
        return 0;  /* BROKEN: WAL "flushed" and acknowledged, not durable */
#endif
    return d_sync(ctx, fd);
}

static int d_rename(void *ctx, const char *from, const char *to)
{
    sdisk *d = ctx;
    if (d->dead)
        return -EIO;
    if (rename(from, to) != 0)
        return -errno;
    for (size_t i = 0; i < d->nu; i++)
        if (strcmp(d->u[i].path, from) == 0) {
            free(d->u[i].path);
            d->u[i].path = strdup(to);
        }
    for (int i = 0; i < 1024; i++)
        if (d->paths[i] && strcmp(d->paths[i], from) == 0) {
            free(d->paths[i]);
            d->paths[i] = strdup(to);
        }
    return 0;
}

static int d_unlink(void *ctx, const char *path)
{
    sdisk *d = ctx;
    if (d->dead)
        return -EIO;
    forget_path(d, path);
    return unlink(path) == 0 ? 0 : -errno;
}

static int d_fsync_dir(void *ctx, const char *dir)
{
    (void)ctx;
    (void)dir;
    return 0;
}

/* The control file: replaced atomically and durably on return (what
 * fs_write_atomic guarantees), without the real fsyncs. */
static int d_write_atomic(void *ctx, const char *path, const void *data,
                          size_t len)
{
    sdisk *d = ctx;
    if (d->dead)
        return -EIO;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
#ifdef SIM_BROKEN
    if (d->broken_ctl) {
        /* BROKEN: this store becomes durable only with the next one. */
        free(d->ctl_path);
        free(d->ctl_old);
        d->ctl_path = strdup(path);
        d->ctl_old = NULL;
        d->ctl_old_len = 0;
        int ofd = open(path, O_RDONLY | O_CLOEXEC);
        if (ofd >= 0) {
            d->ctl_old = malloc(SK_CONTROL_MAX_BYTES);
            ssize_t got = read(ofd, d->ctl_old, SK_CONTROL_MAX_BYTES);
            d->ctl_old_len = got > 0 ? (size_t)got : 0;
            close(ofd);
        }
    }
#endif
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, data, len);
    close(fd);
    if (n != (ssize_t)len)
        return -EIO;
    return rename(tmp, path) == 0 ? 0 : -errno;
}

/* Power cut: undo every unsynced write, newest first. */
static void disk_crash(sdisk *d)
{
    if (d->ctl_path && d->ctl_old) {
        int fd = open(d->ctl_path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, d->ctl_old, d->ctl_old_len) != (ssize_t)d->ctl_old_len)
                fail("sim: restoring the control file failed");
            close(fd);
        }
    }
    free(d->ctl_path);
    free(d->ctl_old);
    d->ctl_path = NULL;
    d->ctl_old = NULL;
    for (size_t i = d->nu; i-- > 0;) {
        undo *x = &d->u[i];
        int fd = open(x->path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (x->old_len && pwrite(fd, x->old, x->old_len, x->off) < 0)
                fail("sim: undo write failed: %s", strerror(errno));
            if (x->old_len < x->len) {
                struct stat st;
                if (fstat(fd, &st) == 0 &&
                    st.st_size > x->off + (off_t)x->old_len &&
                    st.st_size <= x->off + (off_t)x->len &&
                    ftruncate(fd, x->off + (off_t)x->old_len) != 0)
                    fail("sim: undo truncate failed");
            }
            close(fd);
        }
        free(x->path);
        free(x->old);
    }
    d->nu = 0;
}

static void disk_init(sdisk *d)
{
    memset(d, 0, sizeof *d);
    d->io = disk_io_posix;
    d->io.ctx = d;
    d->io.use_uring = 0;
    d->io.open = d_open;
    d->io.close = d_close;
    d->io.pread = d_pread;
    d->io.pwrite = d_pwrite;
    d->io.fdatasync = d_fdatasync;
    d->io.fsync = d_sync;
    d->io.rename = d_rename;
    d->io.unlink = d_unlink;
    d->io.fsync_dir = d_fsync_dir;
    d->io.write_atomic = d_write_atomic;
    d->io.uring_result = NULL;
}

static void disk_free(sdisk *d)
{
    free(d->ctl_path);
    free(d->ctl_old);
    for (size_t i = 0; i < d->nu; i++) {
        free(d->u[i].path);
        free(d->u[i].old);
    }
    free(d->u);
    for (int i = 0; i < 1024; i++)
        free(d->paths[i]);
    memset(d, 0, sizeof *d);
}

/* ---- messages -------------------------------------------------------- */

enum { M_VOTE = 1, M_VOTE_R, M_ELECTED, M_ELECTED_R, M_APPEND, M_APPEND_R,
       M_READ, M_READ_R };

typedef struct msg {
    int type, p, a, lag;     /* lag: READ's laggard acceptor */
    uint64_t inc, conn, gen, term;
    lsn_t l1, l2, l3;        /* per type: see senders */
    uint64_t elected_term;   /* VOTE_R: last Elected term accepted */
    bool granted;
    int err;
    wp_term_switch *hist;
    size_t nhist;
    uint8_t *data;
    size_t len;
    int64_t sent_at;
} msg;

static msg **net;
static size_t n_net, c_net;
static uint64_t st_sent, st_dropped, st_dup, st_delivered;

static void msg_free(msg *m)
{
    free(m->hist);
    free(m->data);
    free(m);
}

static msg *msg_copy(const msg *m)
{
    msg *c = malloc(sizeof *c);
    *c = *m;
    c->hist = NULL;
    c->data = NULL;
    if (m->nhist) {
        c->hist = malloc(m->nhist * sizeof *m->hist);
        memcpy(c->hist, m->hist, m->nhist * sizeof *m->hist);
    }
    if (m->len) {
        c->data = malloc(m->len);
        memcpy(c->data, m->data, m->len);
    }
    return c;
}

static void net_push(msg *m)
{
    if (n_net == c_net) {
        c_net = c_net ? c_net * 2 : 64;
        net = realloc(net, c_net * sizeof *net);
    }
    net[n_net++] = m;
}

static unsigned p_drop, p_dup;  /* per mille, per seed */

/* Takes ownership of m (heap). */
static void send_msg(msg *m)
{
    st_sent++;
    m->sent_at = now_us;
    if (chance(p_drop)) {
        st_dropped++;
        msg_free(m);
        return;
    }
    if (chance(p_dup)) {
        st_dup++;
        net_push(msg_copy(m));
    }
    net_push(m);
}

static msg *new_msg(int type, int p, int a)
{
    msg *m = calloc(1, sizeof *m);
    m->type = type;
    m->p = p;
    m->a = a;
    return m;
}

/* ---- acceptors ------------------------------------------------------- */

static const uint8_t TENANT[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
static const uint8_t TIMELINE[16] = { 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1 };

typedef struct failed_rec { lsn_t lsn, end; uint64_t term; } failed_rec;
typedef struct pend_ack { int p; uint64_t inc, conn, term; } pend_ack;

typedef struct acc {
    char dir[512];
    sdisk disk;
    sk_registry *reg;
    sk_timeline *tl;
    bool up;
    int64_t up_at;
    pend_ack pend[32];   /* appends written since the last flush */
    int npend;
    /* checker */
    uint64_t max_term;
    lsn_t agree;         /* log == committed log below this (record bound.) */
    lsn_t chk_flush, chk_canon;
    bool chk_valid;
} acc;

static acc A[NA];
static bool broken_mode;
/* --pre-fix: the walproposer's re-election rule before the sim found it
 * unsafe (voters' elected_term ignored): see wp_rival_term. */
static bool pre_fix;
/* SIM_BROKEN only: --broken-vote breaks control-file durability instead. */
static bool broken_vote;

static int acc_open(acc *a)
{
    sk_reg_options o = { .datadir = a->dir, .io = &a->disk.io, .node_id = 1,
                         .segment_size_bytes = SEG_SIZE };
    int rc = sk_reg_open(&o, &a->reg);
    if (rc != 0)
        return rc;
    return sk_reg_get(a->reg, TENANT, TIMELINE, START_LSN, &a->tl);
}

static void acc_crash(int i)
{
    acc *a = &A[i];
    trace("acceptor %d crashes (%zu unsynced writes lost)", i, a->disk.nu);
    /* Power off first: the close (which stores the control file on a clean
     * shutdown) must not reach the disk. */
    a->disk.dead = true;
    sk_reg_close(a->reg);
    a->reg = NULL;
    a->tl = NULL;
    disk_crash(&a->disk);
    a->disk.dead = false;
    int rc = acc_open(a);
    if (rc != 0)
        fail("acceptor %d does not reopen after a crash: %s", i,
             sk_tl_strerror(rc));
    a->up = false;
    a->npend = 0;
    a->up_at = now_us + 20000 + (int64_t)rn(300000);
    a->chk_valid = false;
    a->agree = START_LSN;  /* full re-verification of its log */
}

/* ---- the committed log (oracle) -------------------------------------- */

/* Records some proposer reported failed to its client (this seed). */
static failed_rec gfailed[4096];
static int ngfailed;
static uint64_t st_failed_then_committed;

static uint8_t *canon;
static size_t canon_cap;
static lsn_t canon_end = START_LSN;   /* committed log: [START_LSN, canon_end) */
static lsn_t acked_end = START_LSN;   /* client-acknowledged commits below */

static uint64_t wp_hdr_term(const uint8_t *rec)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | rec[WAL_OFF_TERM + i];
    return v;
}

/* Records that commit [lsn, lsn+len) with these bytes. */
static void canon_add(lsn_t lsn, const uint8_t *data, size_t len,
                      const char *who)
{
    if (lsn > canon_end) {
        fail("I1: %s commits at %" PRIX64 " above the committed end %" PRIX64
             " (a gap)", who, lsn, canon_end);
        return;
    }
    size_t off = (size_t)(lsn - START_LSN);
    size_t over = lsn + len > canon_end ? (size_t)(canon_end - lsn) : len;
    if (over && memcmp(canon + off, data, over) != 0) {
        fail("I1: two different records committed at LSN %" PRIX64
             " (second by %s)", lsn, who);
        return;
    }
    if (over < len) {
        size_t need = off + len;
        if (need > canon_cap) {
            while (canon_cap < need)
                canon_cap = canon_cap ? canon_cap * 2 : 65536;
            canon = realloc(canon, canon_cap);
        }
        memcpy(canon + off + over, data + over, len - over);
        lsn_t old_end = canon_end;
        canon_end = lsn + len;
        /* Not an invariant (see README): a record whose commit timed out
         * (client told "failed") that a rival proposer then recovered and
         * committed. Counted, and compared by bytes. */
        for (int k = 0; k < ngfailed; k++)
            if (gfailed[k].lsn >= old_end && gfailed[k].end <= canon_end &&
                gfailed[k].term == wp_hdr_term(canon + (gfailed[k].lsn - START_LSN))) {
                st_failed_then_committed++;
                gfailed[k] = gfailed[--ngfailed];
                k--;
            }
        trace("committed log extended to %" PRIX64 " by %s", canon_end, who);
    }
}

/* ---- proposers -------------------------------------------------------- */

enum { P_IDLE, P_RECOVERING, P_READY, P_FAILED, P_FENCED };
static const char *pstate_name[] = { "idle", "recovering", "ready", "failed", "fenced" };

typedef struct psk {
    uint64_t conn;
    int64_t retry_at;
    bool need_elected;
    int64_t elected_sent_at;      /* 0: none outstanding */
    uint64_t elected_term;
    lsn_t flush, send_lsn, sent_commit;
    int inflight;
    int64_t last_heard;
    bool read_out;
    int64_t read_sent_at;
    /* vote round */
    uint64_t vote_gen_done;
    bool granted;
    lsn_t v_flush, v_commit, v_last;
    uint64_t v_elected;
    wp_term_switch *v_hist;
    size_t v_nhist;
} psk;

typedef struct pending { lsn_t lsn, end; int64_t deadline; } pending;

typedef struct prop {
    bool up;
    int64_t up_at;
    uint64_t inc;            /* incarnation: a restart is a new proposer */
    int state;
    uint64_t term, max_term_seen;
    wp_term_switch *hist;
    size_t nhist;
    lsn_t epoch_start, epoch_prev;
    lsn_t commit, commit_prev;
    bool commit_prev_known;
    lsn_t next_lsn, prev_lsn;
    wp_buf buf;
    uint64_t vote_gen, vote_term;
    int64_t vote_started, vote_retry_at;
    bool voting;
    pending pend[MAX_PENDING];
    int npend;
    failed_rec failed[64];   /* this incarnation's failed records */
    int nfailed;
    int64_t fenced_at;
    psk sk[NA];
} prop;

static prop P[NP];
static uint64_t next_inc = 1;
static uint64_t elected_by[4096];   /* term -> incarnation (0 = none) */
static uint64_t st_elections, st_acked, st_failed, st_fenced, st_acc_crashes,
    st_prop_crashes, st_records;

static void prop_reset(int i)
{
    prop *p = &P[i];
    free(p->hist);
    for (int a = 0; a < NA; a++)
        free(p->sk[a].v_hist);
    wp_buf_free(&p->buf);
    uint64_t conns[NA];
    for (int a = 0; a < NA; a++)
        conns[a] = p->sk[a].conn;
    memset(p, 0, sizeof *p);
    p->up = true;
    p->inc = next_inc++;
    p->state = P_IDLE;
    wp_buf_init(&p->buf, 0);
    for (int a = 0; a < NA; a++)
        p->sk[a].conn = conns[a] + 1;  /* old connections are gone */
}

static void reconnect(prop *p, int a, const char *why)
{
    psk *s = &p->sk[a];
    trace("P%" PRIu64 " reconnects to A%d (%s)", p->inc, a, why);
    s->conn++;
    s->need_elected = true;
    s->elected_sent_at = 0;
    s->inflight = 0;
    s->read_out = false;
    s->retry_at = now_us + 5000 + (int64_t)rn(20000);
}

static void fence(prop *p, uint64_t their, const char *why)
{
    if (their > p->max_term_seen)
        p->max_term_seen = their;
    if (p->state != P_FENCED) {
        trace("P%" PRIu64 " (%s) FENCED in term %" PRIu64 " by term %" PRIu64
              " (%s)", p->inc, pstate_name[p->state], p->term, their, why);
        p->state = P_FENCED;
        p->fenced_at = now_us;
        p->npend = 0;   /* outcome unknown */
        st_fenced++;
    }
}

/* Bytes [from, to) of the committed range this proposer just passed. */
static void commit_range(prop *p, lsn_t from, lsn_t to)
{
    char who[64];
    snprintf(who, sizeof who, "proposer inc %" PRIu64 " term %" PRIu64, p->inc,
             p->term);
    /* I5: nothing this incarnation declared failed may commit through it. */
    for (int k = 0; k < p->nfailed; k++)
        if (p->failed[k].lsn < to && p->failed[k].end > from &&
            p->failed[k].term == p->term)
            fail("I5: record at %" PRIX64 " reported failed commits through the "
                 "same proposer (%s)", p->failed[k].lsn, who);
    lsn_t lo = from < START_LSN ? START_LSN : from;
    if (lo < to && lo < p->buf.start_lsn) {
        /* Recovered WAL of earlier terms: take it from an acceptor that
         * accepted our term and acknowledged it (it agrees with our
         * history below its flush). */
        lsn_t hi = to < p->buf.start_lsn ? to : p->buf.start_lsn;
        /* The acceptor may have moved on to a later term since it acked:
         * take one whose log still agrees with our history up to hi. */
        int src = -1;
        for (int a = 0; a < NA && src < 0; a++) {
            if (p->sk[a].elected_term != p->term || p->sk[a].flush < hi)
                continue;
            sk_tl_state st;
            sk_tl_get_state(A[a].tl, &st);
            wp_term_switch ah[SKH_MAX_ENTRIES];
            for (uint32_t k = 0; k < st.history.n; k++) {
                ah[k].term = st.history.e[k].term;
                ah[k].lsn = st.history.e[k].lsn;
            }
            lsn_t point;
            if (st.flush_lsn >= hi &&
                wp_common_point(p->hist, p->nhist, ah, st.history.n,
                                st.flush_lsn, &point) && point >= hi)
                src = a;
        }
        for (int a = 0; a < NA && src < 0; a++)
            if (p->sk[a].elected_term == p->term && p->sk[a].flush >= hi)
                src = a;   /* none agrees: reading it reports the loss */
        if (src < 0) {
            fail("sim: commit %" PRIX64 " without a source below %" PRIX64,
                 to, hi);
            return;
        }
        lsn_t pos = lo;
        while (pos < hi && !violated) {
            uint8_t *b = NULL;
            size_t n = 0;
            lsn_t next;
            int rc = sk_tl_read(A[src].tl, pos, true, hi, 1 << 20, &b, &n, &next);
            if (rc != 0 || n == 0) {
                /* Only possible when an acknowledged flush was lost. */
                fail("I2: acceptor %d lost WAL it acknowledged at %" PRIX64
                     " (flush acked %" PRIX64 "): %s", src, pos,
                     p->sk[src].flush, rc ? sk_tl_strerror(rc) : "nothing");
                free(b);
                return;
            }
            canon_add(pos, b, n, who);
            free(b);
            pos = next;
        }
        lo = hi;
    }
    if (lo < to) {
        const uint8_t *d;
        size_t n;
        if (wp_buf_slice(&p->buf, lo, (size_t)(to - lo), &d, &n) != 0 ||
            lo + n != to) {
            fail("sim: proposer buffer does not hold [%" PRIX64 ", %" PRIX64 ")",
                 lo, to);
            return;
        }
        canon_add(lo, d, n, who);
    }
}

static void set_commit(prop *p, lsn_t lsn)
{
    lsn_t old = p->commit;
    commit_range(p, old, lsn);
    p->commit = lsn;
    lsn_t prev;
    if (lsn == p->epoch_start) {
        p->commit_prev = p->epoch_prev;
        p->commit_prev_known = true;
    } else if (wp_buf_record_before(&p->buf, lsn, &prev) == 0) {
        p->commit_prev = prev;
        p->commit_prev_known = true;
    } else {
        p->commit_prev_known = false;
    }
    /* Client acknowledgements. */
    int k = 0;
    for (int i = 0; i < p->npend; i++) {
        if (p->pend[i].end <= lsn) {
            if (p->pend[i].end > acked_end)
                acked_end = p->pend[i].end;
            st_acked++;
        } else {
            p->pend[k++] = p->pend[i];
        }
    }
    p->npend = k;
}

static void recompute_commit(prop *p)
{
    if (p->state != P_RECOVERING && p->state != P_READY)
        return;
    lsn_t fl[NA];
    int n = 0, at_epoch = 0;
    for (int a = 0; a < NA; a++)
        if (p->sk[a].elected_term == p->term) {
            fl[n++] = p->sk[a].flush;
            at_epoch += p->sk[a].flush >= p->epoch_start;
        }
    lsn_t q = wp_quorum_lsn(fl, n, QUORUM);
    if (q > p->commit)
        set_commit(p, q);
    if (p->state == P_RECOVERING && at_epoch >= QUORUM) {
        trace("P%" PRIu64 " term %" PRIu64 " ready at %" PRIX64, p->inc, p->term,
              p->next_lsn);
        p->state = P_READY;
    }
}

static void start_vote(int i)
{
    prop *p = &P[i];
    uint64_t term = (p->max_term_seen > p->term ? p->max_term_seen : p->term) + 1;
    if (term >= 4096) {
        return;   /* bounded run */
    }
    p->vote_term = term;
    p->vote_gen++;
    p->voting = true;
    p->vote_started = now_us;
    for (int a = 0; a < NA; a++)
        p->sk[a].granted = false;
    trace("P%" PRIu64 " asks for votes in term %" PRIu64, p->inc, term);
    for (int a = 0; a < NA; a++) {
        msg *m = new_msg(M_VOTE, i, a);
        m->inc = p->inc;
        m->conn = p->sk[a].conn;
        m->gen = p->vote_gen;
        m->term = term;
        send_msg(m);
    }
}

static void become_elected(int i)
{
    prop *p = &P[i];
    wp_vote votes[NA];
    int nv = 0;
    lsn_t max_commit = 0;
    for (int a = 0; a < NA; a++) {
        psk *s = &p->sk[a];
        if (s->vote_gen_done == p->vote_gen && s->granted) {
            votes[nv].flush_lsn = s->v_flush;
            votes[nv].commit_lsn = s->v_commit;
            votes[nv].last_record_lsn = s->v_last;
            votes[nv].history = s->v_hist;
            votes[nv].n_history = s->v_nhist;
            votes[nv].elected_term = pre_fix ? 0 : s->v_elected;
            if (s->v_commit > max_commit)
                max_commit = s->v_commit;
            nv++;
        }
    }
    uint64_t term = p->vote_term;
    wp_term_switch *h;
    size_t nh;
    if (p->state == P_FAILED) {
        uint64_t t = wp_rival_term(votes, nv, p->term);
        if (t > 0) {
            fence(p, t, "another proposer was elected while our commit was failing");
            return;
        }
        if (!p->commit_prev_known || p->commit < p->epoch_start) {
            fail("walproposer rule broken: FAILED with commit %" PRIX64
                 " below epoch start %" PRIX64, p->commit, p->epoch_start);
            return;
        }
        if (wp_build_history(p->hist, p->nhist, term, p->commit, &h, &nh) != 0) {
            fail("wp_build_history failed on re-election");
            return;
        }
        if (wp_buf_truncate(&p->buf, p->commit) != 0) {
            fail("wp_buf_truncate failed on re-election");
            return;
        }
        p->epoch_start = p->commit;
        p->epoch_prev = p->commit_prev;
    } else {
        int d = wp_choose_donor(votes, nv);
        if (wp_build_history(votes[d].history, votes[d].n_history, term,
                             votes[d].flush_lsn, &h, &nh) != 0) {
            trace("P%" PRIu64 ": donor history invalid", p->inc);
            return;
        }
        p->epoch_start = votes[d].flush_lsn;
        p->epoch_prev = votes[d].last_record_lsn;
        wp_buf_reset(&p->buf, p->epoch_start);
        lsn_t c = max_commit < p->epoch_start ? max_commit : p->epoch_start;
        p->commit_prev_known = c == p->epoch_start;
        p->commit_prev = p->epoch_prev;
        if (c > p->commit) {
            lsn_t old = p->commit;
            p->term = term;  /* for the trace / source lookup */
            if (c > canon_end)
                fail("I3: a voter knew commit %" PRIX64 " beyond the committed "
                     "log end %" PRIX64, c, canon_end);
            (void)old;
        }
        p->commit = c;
    }
    /* I4: one proposer per term; a proposer's term only grows. */
    if (term <= p->term && p->nhist)
        fail("I4: proposer %" PRIu64 " elected in term %" PRIu64
             " not above its term %" PRIu64, p->inc, term, p->term);
    if (elected_by[term] && elected_by[term] != p->inc)
        fail("I4: term %" PRIu64 " elected two proposers (%" PRIu64 ", %" PRIu64 ")",
             term, elected_by[term], p->inc);
    elected_by[term] = p->inc;
    free(p->hist);
    p->hist = h;
    p->nhist = nh;
    p->term = term;
    p->next_lsn = p->epoch_start;
    p->prev_lsn = p->epoch_prev;
    p->state = P_RECOVERING;
    p->voting = false;
    /* Records still waiting for their commit were cut (FAILED) or never
     * ours (IDLE): the client was told they failed. */
    p->npend = 0;
    for (int a = 0; a < NA; a++)
        p->sk[a].need_elected = true;
    st_elections++;
    trace("P%" PRIu64 " elected in term %" PRIu64 " by %d; epoch %" PRIX64
          " commit %" PRIX64, p->inc, term, nv, p->epoch_start, p->commit);
    recompute_commit(p);
}

static void send_elected(int i, int a)
{
    prop *p = &P[i];
    msg *m = new_msg(M_ELECTED, i, a);
    m->inc = p->inc;
    m->conn = p->sk[a].conn;
    m->term = p->term;
    m->l1 = p->epoch_start;
    m->nhist = p->nhist;
    m->hist = malloc(p->nhist * sizeof *p->hist);
    memcpy(m->hist, p->hist, p->nhist * sizeof *p->hist);
    p->sk[a].elected_sent_at = now_us;
    send_msg(m);
}

static void send_append(int i, int a, const uint8_t *d, size_t len)
{
    prop *p = &P[i];
    psk *s = &p->sk[a];
    msg *m = new_msg(M_APPEND, i, a);
    m->inc = p->inc;
    m->conn = s->conn;
    m->term = p->term;
    m->l1 = s->send_lsn;
    m->l2 = p->commit < s->flush ? p->commit : s->flush;
    if (len) {
        m->data = malloc(len);
        memcpy(m->data, d, len);
        m->len = len;
    }
    s->send_lsn += len;
    s->sent_commit = m->l2;
    if (s->inflight == 0)
        s->last_heard = now_us;
    s->inflight++;
    send_msg(m);
}

/* One connection's turn (what sk_main does for it). */
static void conn_step(int i, int a)
{
    prop *p = &P[i];
    psk *s = &p->sk[a];
    if (p->state != P_RECOVERING && p->state != P_READY)
        return;
    if (s->elected_sent_at && now_us - s->elected_sent_at > RPC_TIMEOUT_US) {
        reconnect(p, a, "Elected timed out");
        return;
    }
    if (s->inflight && now_us - s->last_heard > RPC_TIMEOUT_US) {
        reconnect(p, a, "no ack");
        return;
    }
    if (s->read_out && now_us - s->read_sent_at > RPC_TIMEOUT_US)
        s->read_out = false;
    if (now_us < s->retry_at)
        return;
    if (s->elected_term != p->term || s->need_elected) {
        if (!s->elected_sent_at)
            send_elected(i, a);
        return;
    }
    if (s->inflight >= MAX_INFLIGHT)
        return;
    if (s->send_lsn < p->buf.start_lsn) {
        /* Catch up from a peer (StreamWal -> Append). */
        if (s->read_out || s->inflight)
            return;
        int peer = -1;
        for (int q = 0; q < NA; q++)
            if (q != a && p->sk[q].elected_term == p->term &&
                !p->sk[q].need_elected && p->sk[q].flush > s->send_lsn &&
                (peer < 0 || chance(500)))
                peer = q;
        if (peer < 0)
            return;
        msg *m = new_msg(M_READ, i, peer);
        m->lag = a;
        m->inc = p->inc;
        m->conn = s->conn;
        m->term = p->term;
        m->l1 = s->send_lsn;
        m->l2 = p->buf.start_lsn;
        s->read_out = true;
        s->read_sent_at = now_us;
        send_msg(m);
        return;
    }
    if (s->send_lsn < p->buf.end_lsn) {
        const uint8_t *d;
        size_t len;
        if (wp_buf_slice(&p->buf, s->send_lsn, 1024, &d, &len) != 0) {
            reconnect(p, a, "send position not a record boundary");
            return;
        }
        send_append(i, a, d, len);
        return;
    }
    lsn_t cap = p->commit < s->flush ? p->commit : s->flush;
    if (cap > s->sent_commit && s->inflight == 0)
        send_append(i, a, NULL, 0);   /* commit-only heartbeat */
}

static void client_append(int i)
{
    prop *p = &P[i];
    if (p->state != P_READY || p->npend >= MAX_PENDING)
        return;
    wal_record_hdr h = { .page_size = 4096, .lsn = p->next_lsn,
                         .prev_lsn = p->prev_lsn, .term = p->term,
                         .commit_ts_us = (int64_t)(rnd() >> 1),
                         .db_size_pages = (uint32_t)rn(1000000) };
    uint8_t page[4096];
    wal_page_in pg = { .pgno = 1, .image = page };
    uint32_t npg = 0;
    if (chance(200)) {
        memset(page, (int)rn(256), sizeof page);
        npg = 1;   /* sometimes a bigger record */
    }
    uint8_t *rec;
    size_t len;
    if (wal_record_encode(&h, &pg, npg, 0, &rec, &len) != 0) {
        fail("sim: wal_record_encode failed");
        return;
    }
    wp_buf_append(&p->buf, rec, len);
    free(rec);
    p->pend[p->npend++] = (pending){ p->next_lsn, p->next_lsn + len,
                                     now_us + COMMIT_TIMEOUT_US };
    p->prev_lsn = p->next_lsn;
    p->next_lsn += len;
    st_records++;
    /* Trim what everybody has (and is committed). */
    lsn_t keep = p->commit;
    for (int a = 0; a < NA; a++)
        if (p->sk[a].flush < keep)
            keep = p->sk[a].flush;
    wp_buf_trim(&p->buf, keep);
}

static void prop_tick(int i)
{
    prop *p = &P[i];
    if (!p->up)
        return;
    switch (p->state) {
    case P_IDLE:
    case P_FAILED:
        if (p->voting && now_us - p->vote_started > RPC_TIMEOUT_US) {
            p->voting = false;
            p->vote_retry_at = now_us + (int64_t)rn(50000);
        }
        if (!p->voting && now_us >= p->vote_retry_at)
            start_vote(i);
        return;
    case P_FENCED:
        if (now_us - p->fenced_at > 100000 + (int64_t)rn(200000)) {
            trace("P%" PRIu64 " restarts after being fenced", p->inc);
            prop_reset(i);
        }
        return;
    default:
        break;
    }
    /* Commit wait timeouts (wp_wait_commit). */
    for (int k = 0; k < p->npend; k++)
        if (p->state == P_READY && p->pend[k].deadline < now_us &&
            p->commit < p->pend[k].end) {
            trace("P%" PRIu64 " commit of %" PRIX64 " timed out: FAILED above %" PRIX64,
                  p->inc, p->pend[k].end, p->commit);
            for (int j = 0; j < p->npend; j++) {
                if (p->pend[j].end > p->commit && p->nfailed < 64)
                    p->failed[p->nfailed++] = (failed_rec){ p->pend[j].lsn,
                                                            p->pend[j].end, p->term };
                if (p->pend[j].end > p->commit && ngfailed < 4096)
                    gfailed[ngfailed++] = (failed_rec){ p->pend[j].lsn,
                                                        p->pend[j].end, p->term };
                st_failed++;
            }
            p->npend = 0;
            p->state = P_FAILED;
            p->voting = false;
            p->vote_retry_at = now_us + (int64_t)rn(30000);
            return;
        }
    for (int a = 0; a < NA; a++)
        conn_step(i, a);
}

/* ---- acceptor message handling ---------------------------------------- */

static void fill_hist(msg *r, const sk_tl_state *st)
{
    r->nhist = st->history.n;
    r->hist = malloc((r->nhist ? r->nhist : 1) * sizeof *r->hist);
    for (size_t k = 0; k < r->nhist; k++) {
        r->hist[k].term = st->history.e[k].term;
        r->hist[k].lsn = st->history.e[k].lsn;
    }
}

static void acc_flush(int ai)
{
    acc *a = &A[ai];
    if (!a->up || a->npend == 0)
        return;
    for (int k = 0; k < a->npend; k++) {
        pend_ack *pa = &a->pend[k];
        lsn_t flush = 0, commit = 0;
        int rc = sk_tl_flush(a->tl, pa->term, &flush, &commit);
        sk_tl_state st;
        sk_tl_get_state(a->tl, &st);
        msg *r = new_msg(M_APPEND_R, pa->p, ai);
        r->inc = pa->inc;
        r->conn = pa->conn;
        r->term = st.term;
        r->l1 = flush;
        r->l2 = commit;
        r->err = rc;
        send_msg(r);
    }
    a->npend = 0;
}

static void acc_deliver(msg *m)
{
    acc *a = &A[m->a];
    int ai = m->a;
    sk_tl_state st;
    switch (m->type) {
    case M_VOTE: {
        bool granted = false;
        int rc = sk_tl_vote(a->tl, m->term, &granted, &st);
        msg *r = new_msg(M_VOTE_R, m->p, ai);
        r->inc = m->inc;
        r->conn = m->conn;
        r->gen = m->gen;
        r->err = rc;
        r->granted = granted;
        r->term = st.term;
        r->l1 = st.flush_lsn;
        r->l2 = st.commit_lsn;
        r->l3 = st.last_record_lsn;
        r->elected_term = st.elected_term;
        fill_hist(r, &st);
        trace("A%d vote term %" PRIu64 ": %s", ai, m->term, granted ? "granted" : "refused");
        send_msg(r);
        break;
    }
    case M_ELECTED: {
        skh_entry h[64];
        size_t n = m->nhist < 64 ? m->nhist : 64;
        for (size_t k = 0; k < n; k++) {
            h[k].term = m->hist[k].term;
            h[k].lsn = m->hist[k].lsn;
        }
        memset(&st, 0, sizeof st);
        int rc = sk_tl_elected(a->tl, m->term, h, (uint32_t)n, m->l1, 0, &st);
        if (rc != 0)
            sk_tl_get_state(a->tl, &st);
        msg *r = new_msg(M_ELECTED_R, m->p, ai);
        r->inc = m->inc;
        r->conn = m->conn;
        r->term = st.term;
        r->gen = m->term;   /* the term it answers */
        r->l1 = st.flush_lsn;
        r->l3 = st.last_record_lsn;
        r->err = rc;
        trace("A%d Elected term %" PRIu64 ": %s, flush %" PRIX64, ai, m->term,
              rc ? sk_tl_strerror(rc) : "ok", st.flush_lsn);
        send_msg(r);
        break;
    }
    case M_APPEND: {
        uint64_t our = 0;
        int rc = sk_tl_append(a->tl, m->term, m->l1, m->data, m->len, m->l2, &our);
        if (a->npend < 32)
            a->pend[a->npend++] = (pend_ack){ m->p, m->inc, m->conn, m->term };
        if (rc != 0) {
            /* The group's good part is flushed, then the error goes back. */
            acc_flush(ai);
            msg *r = new_msg(M_APPEND_R, m->p, ai);
            r->inc = m->inc;
            r->conn = m->conn;
            r->term = our;
            r->err = rc;
            send_msg(r);
        }
        break;
    }
    case M_READ: {
        uint8_t *b = NULL;
        size_t n = 0;
        lsn_t next = m->l1;
        int rc = sk_tl_read(a->tl, m->l1, true, m->l2, READ_MAX, &b, &n, &next);
        msg *r = new_msg(M_READ_R, m->p, ai);
        r->lag = m->lag;
        r->inc = m->inc;
        r->conn = m->conn;
        r->term = m->term;
        r->l1 = m->l1;
        r->l2 = next;
        r->err = rc;
        r->data = b;
        r->len = rc == 0 ? n : 0;
        send_msg(r);
        break;
    }
    }
}

/* ---- proposer message handling ---------------------------------------- */

static void prop_deliver(msg *m)
{
    prop *p = &P[m->p];
    if (!p->up || m->inc != p->inc)
        return;   /* that proposer is gone */
    int a = m->type == M_READ_R ? m->lag : m->a;
    psk *s = &p->sk[a];
    if (m->conn != s->conn)
        return;   /* answer on a closed connection */
    if (m->term > p->max_term_seen)
        p->max_term_seen = m->term;
    switch (m->type) {
    case M_VOTE_R:
        if (m->err)
            return;
        if (!m->granted && m->term > p->term &&
            (p->state == P_RECOVERING || p->state == P_READY)) {
            fence(p, m->term, "vote rejected with a higher term");
            return;
        }
        if (!p->voting || m->gen != p->vote_gen || p->state == P_FENCED)
            return;
        s->vote_gen_done = m->gen;
        s->granted = m->granted;
        if (m->granted && m->l3 != 0 && m->l3 >= m->l1)
            s->granted = false;
        s->v_flush = m->l1;
        s->v_commit = m->l2;
        s->v_last = m->l3;
        s->v_elected = m->elected_term;
        free(s->v_hist);
        s->v_hist = NULL;
        s->v_nhist = m->nhist;
        if (m->nhist) {
            s->v_hist = malloc(m->nhist * sizeof *m->hist);
            memcpy(s->v_hist, m->hist, m->nhist * sizeof *m->hist);
        }
        int granted = 0;
        for (int k = 0; k < NA; k++)
            granted += p->sk[k].vote_gen_done == p->vote_gen && p->sk[k].granted;
        if (granted >= QUORUM)
            become_elected(m->p);
        return;
    case M_ELECTED_R:
        s->elected_sent_at = 0;
        if (m->term > m->gen) {
            if (m->gen == p->term)
                fence(p, m->term, "Elected rejected");
            return;
        }
        if (m->err) {
            reconnect(p, a, sk_tl_strerror(m->err));
            return;
        }
        if (m->gen != p->term || (p->state != P_RECOVERING && p->state != P_READY))
            return;
        s->elected_term = p->term;
        s->need_elected = false;
        s->flush = m->l1;
        s->send_lsn = m->l1;
        s->sent_commit = 0;
        s->inflight = 0;
        recompute_commit(p);
        return;
    case M_APPEND_R:
        if (s->inflight > 0)
            s->inflight--;
        s->last_heard = now_us;
        if (m->term > p->term) {
            fence(p, m->term, "Append rejected");
            return;
        }
        if (m->err) {
            reconnect(p, a, sk_tl_strerror(m->err));
            return;
        }
        if (s->elected_term == p->term && !s->need_elected) {
            trace("P%" PRIu64 " ack from A%d: flush %" PRIX64, p->inc, a, m->l1);
            if (m->l1 > s->flush)
                s->flush = m->l1;
            recompute_commit(p);
        }
        return;
    case M_READ_R:
        s->read_out = false;
        if (m->err || m->len == 0 || m->term != p->term ||
            s->elected_term != p->term || s->need_elected ||
            s->send_lsn != m->l1 || s->inflight >= MAX_INFLIGHT ||
            (p->state != P_RECOVERING && p->state != P_READY))
            return;
        send_append(m->p, a, m->data, m->len);
        return;
    }
}

/* ---- the checker ------------------------------------------------------ */

/* Extends a->agree over records equal to the committed log. */
static void verify_acceptor(int ai, const sk_tl_state *st)
{
    acc *a = &A[ai];
    lsn_t flush = st->flush_lsn;
    if (flush < a->agree)
        a->agree = flush;     /* truncated (or lost: I2 below decides) */
    if (a->chk_valid && a->chk_flush == flush && a->chk_canon == canon_end)
        return;
    lsn_t pos = a->agree;
    while (pos < flush && pos < canon_end) {
        uint8_t *b = NULL;
        size_t n = 0;
        lsn_t next;
        int rc = sk_tl_read(a->tl, pos, true, flush, 1 << 20, &b, &n, &next);
        if (rc != 0 || n == 0) {
            fail("I3: acceptor %d cannot read its own WAL at %" PRIX64 ": %s",
                 ai, pos, rc ? sk_tl_strerror(rc) : "nothing");
            free(b);
            return;
        }
        size_t off = 0;
        bool stop = false;
        while (off < n) {
            uint32_t rl;
            if (wal_record_peek_len(b + off, n - off, &rl) != 0 || rl > n - off) {
                fail("I3: acceptor %d returned a broken record at %" PRIX64, ai,
                     pos + off);
                stop = true;
                break;
            }
            lsn_t r = pos + off;
            if (r + rl > canon_end ||
                memcmp(b + off, canon + (r - START_LSN), rl) != 0) {
                stop = true;
                break;
            }
            off += rl;
        }
        free(b);
        pos += off;
        if (stop || violated)
            break;
    }
    a->agree = pos;
    a->chk_valid = true;
    a->chk_flush = flush;
    a->chk_canon = canon_end;
}

static void check(void)
{
    lsn_t agree[NA];
    for (int i = 0; i < NA && !violated; i++) {
        sk_tl_state st;
        sk_tl_get_state(A[i].tl, &st);
        if (st.term < A[i].max_term)
            fail("I4: acceptor %d's term went back from %" PRIu64 " to %" PRIu64,
                 i, A[i].max_term, st.term);
        A[i].max_term = st.term;
        if (st.commit_lsn > canon_end)
            fail("I3: acceptor %d knows commit %" PRIX64 " beyond anything "
                 "committed (%" PRIX64 ")", i, st.commit_lsn, canon_end);
        verify_acceptor(i, &st);
        lsn_t must = st.commit_lsn < st.flush_lsn ? st.commit_lsn : st.flush_lsn;
        if (!violated && A[i].agree < must && A[i].agree < canon_end)
            fail("I3: acceptor %d's log differs from the committed log at %" PRIX64
                 " below its commit %" PRIX64 " (flush %" PRIX64 ")", i,
                 A[i].agree, st.commit_lsn, st.flush_lsn);
        agree[i] = A[i].agree;
    }
    if (violated)
        return;
    int on = 0;
    for (int i = 0; i < NA; i++)
        on += agree[i] >= acked_end;
    if (on < QUORUM)
        fail("I2: acknowledged commits up to %" PRIX64 " are on %d of %d "
             "acceptors' durable logs (agree: %" PRIX64 " %" PRIX64 " %" PRIX64 ")",
             acked_end, on, NA, agree[0], agree[1], agree[2]);
    for (int i = 0; i < NP; i++)
        if (P[i].up && P[i].commit > canon_end)
            fail("I1: proposer commit beyond the committed log");
}

/* ---- one seed ---------------------------------------------------------- */

static char root[256];

static int rm_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void net_clear(void)
{
    for (size_t k = 0; k < n_net; k++)
        msg_free(net[k]);
    n_net = 0;
}

static int run_seed(uint64_t seed, int steps, bool broken)
{
    rng_s = seed * 0x2545F4914F6CDD1Dull + 1;
    cur_seed = seed;
    violated = false;
    violation[0] = 0;
    now_us = 0;
    step_no = 0;
    canon_end = START_LSN;
    acked_end = START_LSN;
    memset(elected_by, 0, sizeof elected_by);
    next_inc = 1;
    ngfailed = 0;
    net_clear();
    p_drop = (unsigned)rn(60);
    p_dup = (unsigned)rn(40);
    unsigned p_acc_crash = 1 + (unsigned)rn(6);     /* per mille per step */
    unsigned p_prop_crash = (unsigned)rn(3);
    int nprop = chance(700) ? 2 : 1;

    char sd[300];
    snprintf(sd, sizeof sd, "%s/s%" PRIu64, root, seed);
    if (mkdir(sd, 0700) != 0) {
        fprintf(stderr, "sim: mkdir %s: %s\n", sd, strerror(errno));
        return 2;
    }
    for (int i = 0; i < NA; i++) {
        memset(&A[i], 0, sizeof A[i]);
        snprintf(A[i].dir, sizeof A[i].dir, "%s/a%d", sd, i);
        mkdir(A[i].dir, 0700);
        disk_init(&A[i].disk);
        A[i].disk.broken_sync = broken && !broken_vote;
        A[i].up = true;
        A[i].agree = START_LSN;
        int rc = acc_open(&A[i]);
        if (rc != 0) {
            fprintf(stderr, "sim: acceptor open: %s\n", sk_tl_strerror(rc));
            return 2;
        }
        A[i].disk.broken_ctl = broken && broken_vote;
    }
    for (int i = 0; i < NP; i++) {
        memset(&P[i], 0, sizeof P[i]);
        wp_buf_init(&P[i].buf, 0);
        prop_reset(i);
        P[i].up = i < nprop;
        P[i].up_at = i < nprop ? 0 : INT64_MAX;
        P[i].vote_retry_at = (int64_t)rn(20000);
    }

    for (int s = 0; s < steps && !violated; s++) {
        step_no = (uint64_t)s;
        now_us += (int64_t)rn(1500);
        /* Restarts that are due. */
        for (int i = 0; i < NA; i++)
            if (!A[i].up && now_us >= A[i].up_at) {
                trace("acceptor %d restarts", i);
                A[i].up = true;
            }
        for (int i = 0; i < nprop; i++)
            if (!P[i].up && now_us >= P[i].up_at) {
                prop_reset(i);
                trace("proposer %d restarts as P%" PRIu64, i, P[i].inc);
            }
        unsigned r = (unsigned)rn(1000);
        if (r < 480 && n_net) {
            /* Deliver: mostly the oldest (a delay), sometimes any (reorder). */
            size_t k = chance(600) ? 0 : rn(n_net);
            msg *m = net[k];
            memmove(net + k, net + k + 1, (n_net - k - 1) * sizeof *net);
            n_net--;
            st_delivered++;
            if (m->type == M_VOTE || m->type == M_ELECTED ||
                m->type == M_APPEND || m->type == M_READ) {
                if (A[m->a].up)
                    acc_deliver(m);
            } else {
                prop_deliver(m);
            }
            msg_free(m);
        } else if (r < 700) {
            prop_tick((int)rn((uint64_t)nprop));
        } else if (r < 820) {
            acc_flush((int)rn(NA));
        } else if (r < 960) {
            int i = (int)rn((uint64_t)nprop);
            if (P[i].up && chance(800))
                client_append(i);
        } else if (r < 960 + p_acc_crash * 4) {
            int i = (int)rn(NA);
            if (A[i].up) {
                st_acc_crashes++;
                acc_crash(i);
            }
        } else if (r < 960 + p_acc_crash * 4 + p_prop_crash * 4) {
            int i = (int)rn((uint64_t)nprop);
            if (P[i].up) {
                st_prop_crashes++;
                trace("proposer P%" PRIu64 " crashes", P[i].inc);
                P[i].up = false;
                P[i].up_at = now_us + 10000 + (int64_t)rn(200000);
            }
        } else {
            now_us += (int64_t)rn(RPC_TIMEOUT_US);   /* a pause */
        }
        check();
    }
    int result = violated ? 1 : 0;
    if (violated) {
        fprintf(stderr, "sim_quorum: seed %" PRIu64 ": broken guarantee at step %"
                PRIu64 ": %s\n  replay: %s --seed %" PRIu64
                " --steps %d%s%s --verbose\n", seed, step_no, violation,
                broken ? "test_sim_quorum_broken" : "test_sim_quorum", seed, steps,
                pre_fix ? " --pre-fix" : "", broken_vote ? " --broken-vote" : "");
    }
    for (int i = 0; i < NA; i++) {
        sk_reg_close(A[i].reg);
        disk_free(&A[i].disk);
    }
    for (int i = 0; i < NP; i++) {
        free(P[i].hist);
        P[i].hist = NULL;
        for (int a = 0; a < NA; a++) {
            free(P[i].sk[a].v_hist);
            P[i].sk[a].v_hist = NULL;
        }
        wp_buf_free(&P[i].buf);
    }
    net_clear();
    nftw(sd, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return result;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    uint64_t first = 1, nseeds = 200;
    bool one = false, expect_violation = false;
    int steps = 1500;
    double max_seconds = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            first = strtoull(argv[++i], NULL, 10);
            nseeds = 1;
            one = true;
        } else if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
            nseeds = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--first") && i + 1 < argc) {
            first = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            steps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            max_seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--expect-violation")) {
            expect_violation = true;
        } else if (!strcmp(argv[i], "--broken-vote")) {
            broken_vote = true;
        } else if (!strcmp(argv[i], "--pre-fix")) {
            pre_fix = true;
        } else if (!strcmp(argv[i], "--verbose")) {
            verbose = true;
        } else {
            fprintf(stderr, "usage: %s [--seed N | --seeds N [--first S]] "
                    "[--steps N] [--seconds S] [--verbose] [--pre-fix] "
                    "[--expect-violation]\n", argv[0]);
            return 2;
        }
    }
    const char *env = getenv("ARBOR_SIM_SEEDS");
    if (env && *env && !one)
        nseeds = strtoull(env, NULL, 10);
    log_init("sim", verbose ? LOG_WARN : LOG_OFF);
#ifdef SIM_BROKEN
    broken_mode = true;
#endif
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL;
    if (!base)
        base = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(root, sizeof root, "%s/arbor-sim-XXXXXX", base);
    if (!mkdtemp(root)) {
        fprintf(stderr, "sim: mkdtemp: %s\n", strerror(errno));
        return 2;
    }
    double t0 = mono_s();
    uint64_t done = 0, bad = 0, first_bad = 0;
    int rc = 0;
    for (uint64_t s = first; s < first + nseeds; s++) {
        int r = run_seed(s, steps, broken_mode);
        done++;
        if (r == 2) {
            rc = 2;
            break;
        }
        if (r == 1) {
            bad++;
            first_bad = s;
            break;
        }
        if (max_seconds > 0 && mono_s() - t0 > max_seconds)
            break;
    }
    double dt = mono_s() - t0;
    nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    printf("sim_quorum%s: %" PRIu64 " seeds x %d steps in %.2f s (%.0f seeds/s); "
           "elections %" PRIu64 ", records %" PRIu64 ", acked %" PRIu64
           ", failed %" PRIu64 ", fenced %" PRIu64 ", acceptor crashes %" PRIu64
           ", proposer crashes %" PRIu64 ", messages %" PRIu64 " (dropped %" PRIu64
           ", duplicated %" PRIu64 "); failed commits later committed by a rival %"
           PRIu64 "; violations %" PRIu64 "\n",
           broken_mode ? "_broken" : "", done, steps, dt, done / (dt > 0 ? dt : 1),
           st_elections, st_records, st_acked, st_failed, st_fenced,
           st_acc_crashes, st_prop_crashes, st_sent, st_dropped, st_dup,
           st_failed_then_committed, bad);
    (void)st_delivered;
    if (rc)
        return rc;
    if (broken_mode) {
        if (bad) {
            printf("sim_quorum_broken: broken acceptor (%s) caught at seed %"
                   PRIu64 " after %.2f s (%" PRIu64 " seeds)\n",
                   broken_vote ? "vote/Elected answered before the control file "
                                 "is durable"
                               : "fdatasync acknowledged without durability",
                   first_bad, dt, done);
            return 0;
        }
        printf("sim_quorum_broken: the broken acceptor was NOT caught in %" PRIu64
               " seeds: the simulator cannot see lost acknowledged writes\n", done);
        return 1;
    }
    if (expect_violation) {
        printf("sim_quorum: violation %s, as expected: %s\n",
               bad ? "found" : "NOT found", bad ? "ok" : "FAIL");
        return bad ? 0 : 1;
    }
    return bad ? 1 : 0;
}
