/*
 * The arbor VFS under failures, on a real cluster:
 *
 *   stateless    a compute process (test_vfs_helper) commits rows in a loop
 *                and is killed -9 mid-load, twice; a new compute on the
 *                branch has every acknowledged row and nothing else beyond
 *                at most the one in flight. Breaks if: acknowledging before
 *                the quorum flush, or state kept only in the compute.
 *   fencing      while a helper commits, a second primary opens the branch:
 *                the helper's next commit fails with an error, no
 *                acknowledged row is lost, the new primary writes.
 *   two writers  threads with their own connections increment one counter
 *                with read-modify-write transactions, retrying on
 *                SQLITE_BUSY / SQLITE_BUSY_SNAPSHOT: the total is exact.
 *                Breaks if: a stale snapshot gets RESERVED (lost updates).
 *   commit fail  2 of 3 safekeepers SIGSTOPped: the INSERT gets an I/O
 *                error, its row is invisible (same connection, another
 *                connection, a fresh compute after recovery), and the
 *                connection commits again once they are resumed.
 *   pipeline     with 2 of 3 safekeepers SIGSTOPped, two writers commit one
 *                after the other (the second builds on the first while it
 *                is in flight: both records are queued) and block; a reader
 *                meanwhile sees neither row. Resumed: both return OK and
 *                their rows are there. Again with the pause outlasting the
 *                commit timeout: both fail (the second because the first
 *                did), no reader ever sees them, a fresh compute neither.
 *                Breaks if: readers pin commits in flight, the write lock
 *                is held until durable (the second is not queued), or a
 *                commit built on a failed one is acknowledged.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_vfs_common.h"
#include "vfs_main.h"

/* ---- the helper process ------------------------------------------------------ */

typedef struct helper {
    pid_t pid;
    int fd;             /* its stdout */
    char buf[8192];
    size_t len;
    long last_acked;    /* highest id it printed, 0 = none */
    long n_acked;
    bool err;           /* printed an ERR line */
    char err_line[256];
} helper;

static void helper_start(helper *h, const char *uri, long first_id)
{
    memset(h, 0, sizeof(*h));
    int p[2];
    assert_int_equal(pipe(p), 0);
    char first[32];
    snprintf(first, sizeof(first), "%ld", first_id);
    h->pid = fork();
    assert_true(h->pid >= 0);
    if (h->pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execl(ARBOR_VFS_HELPER_BIN, "test_vfs_helper", "loop", uri, first, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    h->fd = p[0];
}

/* Reads what the helper printed within timeout_ms; false at EOF. */
static bool helper_poll(helper *h, int timeout_ms)
{
    struct pollfd pfd = { h->fd, POLLIN, 0 };
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return true;
    ssize_t n = read(h->fd, h->buf + h->len, sizeof(h->buf) - 1 - h->len);
    if (n <= 0)
        return false;
    h->len += (size_t)n;
    h->buf[h->len] = '\0';
    char *line = h->buf, *nl;
    while ((nl = strchr(line, '\n'))) {
        *nl = '\0';
        if (!strncmp(line, "ERR", 3)) {
            h->err = true;
            snprintf(h->err_line, sizeof(h->err_line), "%.200s", line);
        } else {
            long id = atol(line);
            assert_true(id == (h->last_acked ? h->last_acked + 1 : id));
            h->last_acked = id;
            h->n_acked++;
        }
        line = nl + 1;
    }
    h->len = strlen(line);
    memmove(h->buf, line, h->len + 1);
    return true;
}

static void helper_wait_acks(helper *h, long n, int timeout_ms)
{
    for (int waited = 0; h->n_acked < n; waited += 50) {
        if (waited > timeout_ms || h->err)
            fail_msg("helper acknowledged %ld of %ld rows (%s)", h->n_acked, n,
                     h->err ? h->err_line : "timeout");
        helper_poll(h, 50);
    }
}

/* Drains its output to EOF and reaps it; returns the wait status. */
static int helper_finish(helper *h)
{
    while (helper_poll(h, 20000))
        ;
    close(h->fd);
    int st;
    assert_int_equal(waitpid(h->pid, &st, 0), h->pid);
    return st;
}

static void create_k(const char *branch, char *uri, size_t len)
{
    vc_create_branch(branch, NULL, 0);
    vc_uri(uri, len, branch, "timeout_ms=3000");
    sqlite3 *db = vc_open(uri);
    vc_exec(db, "CREATE TABLE k(id INTEGER PRIMARY KEY, pad BLOB)");
    sqlite3_close(db);
}

/* The ids in k are exactly first..last, or first..last+1. */
static void check_ids(sqlite3 *db, long first, long last)
{
    int64_t n = vc_int(db, "SELECT count(*) FROM k");
    int64_t lo = vc_int(db, "SELECT min(id) FROM k");
    int64_t hi = vc_int(db, "SELECT max(id) FROM k");
    if (lo != first || n != hi - lo + 1 || hi < last || hi > last + 1)
        fail_msg("rows %" PRId64 " ids %" PRId64 "..%" PRId64 ", acknowledged %ld..%ld",
                 n, lo, hi, first, last);
}

static void test_stateless(void **state)
{
    char uri[1024];
    create_k("stateless", uri, sizeof(uri));
    long next = 1;
    for (int round = 0; round < 2; round++) {
        helper h;
        helper_start(&h, uri, next);
        helper_wait_acks(&h, 150, 30000);
        kill(h.pid, SIGKILL);
        int st = helper_finish(&h);
        assert_true(WIFSIGNALED(st));
        sqlite3 *db = vc_open(uri);
        check_ids(db, 1, h.last_acked);
        next = vc_int(db, "SELECT max(id) FROM k") + 1;
        assert_int_equal(vc_int(db, "PRAGMA integrity_check = 1") , 0);
        sqlite3_close(db);
    }
}

static void test_fencing(void **state)
{
    char uri[1024];
    create_k("fence", uri, sizeof(uri));
    helper h;
    helper_start(&h, uri, 1);
    helper_wait_acks(&h, 100, 30000);
    /* A second primary: its election fences the helper. */
    sqlite3 *db = vc_open(uri);
    int st = helper_finish(&h);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 3);
    assert_true(h.err);
    print_message("helper after fencing: %s (acked %ld)\n", h.err_line, h.last_acked);
    assert_non_null(strstr(h.err_line, "ERR 1034"));   /* SQLITE_IOERR_FSYNC */
    check_ids(db, 1, h.last_acked);
    vc_exec(db, "INSERT INTO k(id) VALUES(1000000)");
    sqlite3_close(db);
    db = vc_open(uri);
    assert_int_equal(vc_int(db, "SELECT count(*) FROM k WHERE id = 1000000"), 1);
    sqlite3_close(db);
}

/* ---- two writers ----------------------------------------------------------------- */

#define WRITERS 4
#define INCREMENTS 40

typedef struct writer_arg {
    const char *uri;
    int busy, stale;
} writer_arg;

static void *writer_main(void *p)
{
    writer_arg *a = p;
    sqlite3 *db;
    if (vc_open_rc(a->uri, &db) != SQLITE_OK)
        return (void *)1;
    for (int done = 0; done < INCREMENTS;) {
        int rc = vc_exec_rc(db, "BEGIN");
        sqlite3_stmt *st = NULL;
        int64_t n = -1;
        if (rc == SQLITE_OK &&
            sqlite3_prepare_v2(db, "SELECT n FROM c", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        if (n >= 0) {
            char sql[64];
            snprintf(sql, sizeof(sql), "UPDATE c SET n = %" PRId64, n + 1);
            rc = vc_exec_rc(db, sql);
            if (rc == SQLITE_OK)
                rc = vc_exec_rc(db, "COMMIT");
        } else {
            rc = sqlite3_extended_errcode(db);
        }
        if (rc == SQLITE_OK) {
            done++;
            continue;
        }
        if (rc == SQLITE_BUSY_SNAPSHOT)
            a->stale++;
        else if (rc == SQLITE_BUSY)
            a->busy++;
        else
            return (void *)(intptr_t)rc;
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        usleep(1000);
    }
    sqlite3_close(db);
    return NULL;
}

static void test_two_writers(void **state)
{
    vc_create_branch("writers", NULL, 0);
    char uri[1024];
    vc_uri(uri, sizeof(uri), "writers", NULL);
    sqlite3 *db = vc_open(uri);   /* keeps the shared state (one election) */
    vc_exec(db, "CREATE TABLE c(n INTEGER); INSERT INTO c VALUES(0)");
    pthread_t t[WRITERS];
    writer_arg a[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        a[i] = (writer_arg){ uri, 0, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, writer_main, &a[i]), 0);
    }
    int stale = 0, busy = 0;
    for (int i = 0; i < WRITERS; i++) {
        void *r;
        pthread_join(t[i], &r);
        if (r)
            fail_msg("writer %d failed with %d", i, (int)(intptr_t)r);
        stale += a[i].stale;
        busy += a[i].busy;
    }
    print_message("retries: %d stale snapshot, %d busy\n", stale, busy);
    assert_int_equal(vc_int(db, "SELECT n FROM c"), WRITERS * INCREMENTS);
    assert_true(stale + busy > 0);   /* they did collide */
    sqlite3_close(db);
}

/* ---- a commit that fails ------------------------------------------------------------ */

static void test_commit_failure(void **state)
{
    vc_create_branch("cfail", NULL, 0);
    char uri[1024];
    vc_uri(uri, sizeof(uri), "cfail", "timeout_ms=1500");
    sqlite3 *db = vc_open(uri), *other = vc_open(uri);
    vc_exec(db, "CREATE TABLE f(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO f VALUES(1, 'a')");
    assert_int_equal(h_sk_pause(&vc_sk[0]), 0);
    assert_int_equal(h_sk_pause(&vc_sk[1]), 0);
    int rc = vc_exec_rc(db, "INSERT INTO f VALUES(2, 'lost')");
    assert_int_equal(rc, SQLITE_IOERR_FSYNC);
    assert_int_equal(vc_int(db, "SELECT count(*) FROM f"), 1);
    assert_int_equal(vc_int(other, "SELECT count(*) FROM f"), 1);
    /* Still down: fails again, cleanly. */
    rc = vc_exec_rc(db, "INSERT INTO f VALUES(3, 'lost too')");
    assert_true((rc & 0xff) == SQLITE_IOERR);
    h_sk_resume(&vc_sk[0]);
    h_sk_resume(&vc_sk[1]);
    for (int i = 0; i < 20 && (rc = vc_exec_rc(db, "INSERT INTO f VALUES(4, 'b')")) != 0; i++)
        h_sleep_ms(200);
    assert_int_equal(rc, SQLITE_OK);
    assert_int_equal(vc_int(other, "SELECT count(*) FROM f"), 2);
    assert_int_equal(vc_int(other, "SELECT count(*) FROM f WHERE id IN (2, 3)"), 0);
    sqlite3_close(other);
    sqlite3_close(db);
    /* A fresh compute (new election, recovery from the safekeepers). */
    db = vc_open(uri);
    assert_int_equal(vc_int(db, "SELECT group_concat(id) = '1,4' FROM f"), 1);
    sqlite3_close(db);
}

/* ---- pipelined commits ------------------------------------------------------------- */

typedef struct pipe_writer {
    const char *uri;
    long id;
    int rc;
    bool done;
} pipe_writer;

static void *pipe_writer_main(void *arg)
{
    pipe_writer *w = arg;
    sqlite3 *db = vc_open(w->uri);
    arbor_vfs_busy_wait(db, 5000);   /* a write refused for a commit in flight retries */
    char sql[128];
    snprintf(sql, sizeof(sql), "INSERT INTO p VALUES(%ld, 'w')", w->id);
    w->rc = vc_exec_rc(db, sql);
    __atomic_store_n(&w->done, true, __ATOMIC_SEQ_CST);
    sqlite3_close(db);
    return NULL;
}

/* Starts a writer of row id and waits until its commit is queued (the
 * process's WAL bytes grew): it now waits for the quorum, lock released. */
static void pipe_start(pthread_t *t, pipe_writer *w, const char *uri, long id)
{
    uint64_t before = arbor_vfs_wal_bytes_total();
    *w = (pipe_writer){ .uri = uri, .id = id };
    assert_int_equal(pthread_create(t, NULL, pipe_writer_main, w), 0);
    for (int i = 0; i < 200 && arbor_vfs_wal_bytes_total() == before; i++)
        h_sleep_ms(10);
    if (arbor_vfs_wal_bytes_total() == before)
        fail_msg("writer %ld never queued its commit (still waiting for the "
                 "write lock: commits are not pipelined)", id);
    assert_false(__atomic_load_n(&w->done, __ATOMIC_SEQ_CST));   /* not durable yet */
}

static void pipe_round(const char *uri, sqlite3 *reader, long id, bool resume)
{
    pthread_t t1, t2;
    pipe_writer w1, w2;
    int64_t before = vc_int(reader, "SELECT count(*) FROM p");
    assert_int_equal(h_sk_pause(&vc_sk[0]), 0);
    assert_int_equal(h_sk_pause(&vc_sk[1]), 0);
    pipe_start(&t1, &w1, uri, id);
    pipe_start(&t2, &w2, uri, id + 1);
    /* Neither is durable: a reader (a fresh snapshot) sees neither. */
    assert_int_equal(vc_int(reader, "SELECT count(*) FROM p"), before);
    if (resume) {
        h_sk_resume(&vc_sk[0]);
        h_sk_resume(&vc_sk[1]);
    }
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    if (!resume) {
        h_sk_resume(&vc_sk[0]);
        h_sk_resume(&vc_sk[1]);
    }
    if (resume) {
        assert_int_equal(w1.rc, SQLITE_OK);
        assert_int_equal(w2.rc, SQLITE_OK);
        assert_int_equal(vc_int(reader, "SELECT count(*) FROM p"), before + 2);
    } else {
        assert_int_equal(w1.rc & 0xff, SQLITE_IOERR);
        assert_int_equal(w2.rc & 0xff, SQLITE_IOERR);
        assert_int_equal(vc_int(reader, "SELECT count(*) FROM p"), before);
    }
}

/* One branch per round: the commit timeout must outlast the safekeepers'
 * reconnection after SIGCONT (backoff up to 1 s) when they come back, and
 * be short when they do not. */
static void pipe_branch(const char *branch, int timeout_ms, char *uri, size_t len,
                        sqlite3 **reader)
{
    vc_create_branch(branch, NULL, 0);
    char extra[32];
    snprintf(extra, sizeof(extra), "timeout_ms=%d", timeout_ms);
    vc_uri(uri, len, branch, extra);
    *reader = vc_open(uri);   /* keeps the shared state */
    vc_exec(*reader, "CREATE TABLE p(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO p VALUES(1, 'a')");
}

static void test_pipeline(void **state)
{
    char uri[1024];
    sqlite3 *reader;
    pipe_branch("pipe_ok", 8000, uri, sizeof(uri), &reader);
    pipe_round(uri, reader, 10, true);     /* both become durable */
    assert_int_equal(vc_int(reader, "SELECT group_concat(id) = '1,10,11' FROM p"), 1);
    sqlite3_close(reader);

    pipe_branch("pipe_fail", 1500, uri, sizeof(uri), &reader);
    pipe_round(uri, reader, 20, false);    /* the first fails, so does the second */
    int rc = SQLITE_ERROR;
    for (int i = 0; i < 20 && (rc = vc_exec_rc(reader, "INSERT INTO p VALUES(30, 'b')")) != 0; i++)
        h_sleep_ms(200);
    assert_int_equal(rc, SQLITE_OK);
    assert_int_equal(vc_int(reader, "SELECT group_concat(id) = '1,30' FROM p"), 1);
    sqlite3_close(reader);
    /* A fresh compute (new election, recovery from the safekeepers). */
    sqlite3 *db = vc_open(uri);
    assert_int_equal(vc_int(db, "SELECT group_concat(id) = '1,30' FROM p"), 1);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stateless),
        cmocka_unit_test(test_fencing),
        cmocka_unit_test(test_two_writers),
        cmocka_unit_test(test_commit_failure),
        cmocka_unit_test(test_pipeline),
    };
    return cmocka_run_group_tests(tests, vc_group_setup, vc_group_teardown);
}
