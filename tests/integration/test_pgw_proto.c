/*
 * The PostgreSQL wire server (compute/pgw_*) at the protocol level: an
 * in-process pgw_server over a plain SQLite file, and a raw socket client.
 *   startup     SSLRequest / GSSENCRequest answered 'N'; greeting has
 *               ParameterStatus, BackendKeyData, ReadyForQuery
 *   malformed   bad length, huge length, unknown type, Bind whose counts
 *               run past its body: FATAL 08P01 and close; the server serves on
 *   auth        md5 and SCRAM with a wrong password: FATAL 28P01; right ones pass
 *   cancel      CancelRequest stops a runaway recursive CTE with 57014
 *   extended    binary parameters and results, Describe, Execute with a
 *               row limit -> PortalSuspended, errors skip to Sync
 *   txn         status I/T/E, 25P02 in an aborted transaction; command tags;
 *               a COMMIT that fails (deferred foreign key): ErrorResponse,
 *               never the COMMIT tag, by both protocols
 *   limits      max_sessions -> 53300
 *   stop        pgw_server_stop with sessions connected and one mid-query
 *   metrics     sessions, queries, errors, rows in a registry
 *   sql         rewrite and classification helpers
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "b64.h"
#include "alloc.h"
#include "pgw_auth.h"
#include "pgw_server.h"
#include "pgw_sql.h"

static char g_dir[256];
static char g_db[300];

static int open_db(void *arg, const pgw_session_info *who, sqlite3 **out, char *err,
                   size_t errlen)
{
    sqlite3 *db;
    if (sqlite3_open(g_db, &db) != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        sqlite3_close(db);
        return -EIO;
    }
    sqlite3_busy_timeout(db, 10000);
    *out = db;
    return 0;
}

static void close_db(void *arg, sqlite3 *db)
{
    assert_int_equal(sqlite3_close(db), SQLITE_OK); /* every statement finalized */
}

static pgw_server *start(pgw_auth_method auth, int max_sessions)
{
    pgw_options o = {0};
    o.auth = auth;
    o.user = auth == PGW_AUTH_TRUST ? NULL : "bob";
    o.password = "s3cret";
    o.max_sessions = max_sessions;
    o.open_db = open_db;
    o.close_db = close_db;
    pgw_server *srv;
    assert_int_equal(pgw_server_start(&o, &srv), 0);
    assert_true(pgw_server_port(srv) > 0);
    return srv;
}

/* ---- a raw client ------------------------------------------------------ */

typedef struct msg {
    char type;
    uint8_t body[65536];
    size_t len;
} msg;

static int dial(pgw_server *srv)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)pgw_server_port(srv));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {20, 0}; /* a hung server fails the test, not ctest's timeout */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static bool recv_all(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, (char *)p + got, n - got, 0);
        if (r <= 0) {
            return false;
        }
        got += (size_t)r;
    }
    return true;
}

/* Next message; false on EOF. */
static bool rd(int fd, msg *m)
{
    uint8_t h[5];
    if (!recv_all(fd, h, 5)) {
        return false;
    }
    m->type = (char)h[0];
    uint32_t n = ((uint32_t)h[1] << 24) | ((uint32_t)h[2] << 16) | ((uint32_t)h[3] << 8) | h[4];
    assert_true(n >= 4 && n - 4 < sizeof(m->body));
    m->len = n - 4;
    assert_true(recv_all(fd, m->body, m->len));
    return true;
}

/* Reads until a message of this type (failing on EOF). */
static void rd_until(int fd, char type, msg *m)
{
    for (;;) {
        assert_true(rd(fd, m));
        if (m->type == type) {
            return;
        }
    }
}

/* The SQLSTATE ('C' field) of an ErrorResponse/NoticeResponse. */
static const char *field(const msg *m, char code)
{
    size_t i = 0;
    while (i < m->len && m->body[i]) {
        const char *v = (const char *)m->body + i + 1;
        if (m->body[i] == (uint8_t)code) {
            return v;
        }
        i += 2 + strlen(v);
    }
    return "";
}

typedef struct wbuf {
    uint8_t d[8192];
    size_t n;
} wbuf;

static void w8(wbuf *b, uint8_t v) { b->d[b->n++] = v; }
static void w16(wbuf *b, int v) { w8(b, (uint8_t)(v >> 8)); w8(b, (uint8_t)v); }
static void w32(wbuf *b, int32_t v)
{
    w16(b, (int)((uint32_t)v >> 16));
    w16(b, (int)((uint32_t)v & 0xffff));
}
static void wstr(wbuf *b, const char *s)
{
    size_t n = strlen(s) + 1;
    memcpy(b->d + b->n, s, n);
    b->n += n;
}
static void wbytes(wbuf *b, const void *p, size_t n)
{
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

/* Starts a typed message; msg_end patches its length. */
static size_t msg_begin(wbuf *b, char type)
{
    w8(b, (uint8_t)type);
    size_t at = b->n;
    w32(b, 0);
    return at;
}

static void msg_end(wbuf *b, size_t at)
{
    uint32_t n = (uint32_t)(b->n - at);
    b->d[at] = (uint8_t)(n >> 24);
    b->d[at + 1] = (uint8_t)(n >> 16);
    b->d[at + 2] = (uint8_t)(n >> 8);
    b->d[at + 3] = (uint8_t)n;
}

/* Parse of sql as statement stmt ("" = unnamed), no parameter types. */
static void msg_parse(wbuf *b, const char *stmt, const char *sql)
{
    size_t at = msg_begin(b, 'P');
    wstr(b, stmt);
    wstr(b, sql);
    w16(b, 0);
    msg_end(b, at);
}

static void send_startup(int fd, const char *user)
{
    wbuf b = {0};
    w32(&b, 0);
    w32(&b, 196608);
    wstr(&b, "user");
    wstr(&b, user);
    wstr(&b, "database");
    wstr(&b, "db");
    w8(&b, 0);
    b.d[3] = (uint8_t)b.n;
    b.d[2] = (uint8_t)(b.n >> 8);
    send_all(fd, b.d, b.n);
}

/* Connects with trust; returns fd; pid/key from BackendKeyData. */
static int login(pgw_server *srv, int32_t *pid, int32_t *key)
{
    int fd = dial(srv);
    send_startup(fd, "alice");
    msg m;
    bool saw_key = false, saw_version = false;
    for (;;) {
        assert_true(rd(fd, &m));
        if (m.type == 'S' && strcmp((char *)m.body, "server_version") == 0) {
            saw_version = true;
        }
        if (m.type == 'K') {
            saw_key = true;
            if (pid) {
                *pid = (int32_t)(((uint32_t)m.body[0] << 24) | ((uint32_t)m.body[1] << 16) |
                                 ((uint32_t)m.body[2] << 8) | m.body[3]);
                *key = (int32_t)(((uint32_t)m.body[4] << 24) | ((uint32_t)m.body[5] << 16) |
                                 ((uint32_t)m.body[6] << 8) | m.body[7]);
            }
        }
        assert_true(m.type != 'E');
        if (m.type == 'Z') {
            break;
        }
    }
    assert_true(saw_key && saw_version);
    return fd;
}

static void query(int fd, const char *sql)
{
    wbuf b = {0};
    size_t at = msg_begin(&b, 'Q');
    wstr(&b, sql);
    msg_end(&b, at);
    send_all(fd, b.d, b.n);
}

/* Runs sql; returns the first DataRow's first value as text (or the
 * SQLSTATE of an error, prefixed "E:"), the ReadyForQuery status, and the
 * command tags in order, joined by '|' (tags may be NULL). A command tag
 * after an ErrorResponse fails the test: an error ends the query. */
static void collect(int fd, const char *sql, char *out, size_t cap, char *status,
                    char *tags, size_t tcap)
{
    msg m;
    out[0] = 0;
    if (tags) {
        tags[0] = 0;
    }
    bool got = false, err = false;
    for (;;) {
        assert_true(rd(fd, &m));
        if (m.type == 'D' && !got) {
            int32_t n = (int32_t)(((uint32_t)m.body[2] << 24) | ((uint32_t)m.body[3] << 16) |
                                  ((uint32_t)m.body[4] << 8) | m.body[5]);
            snprintf(out, cap, "%.*s", n < 0 ? 4 : n, n < 0 ? "NULL" : (char *)m.body + 6);
            got = true;
        } else if (m.type == 'E') {
            snprintf(out, cap, "E:%s", field(&m, 'C'));
            got = true;
            err = true;
        } else if (m.type == 'C') {
            if (err) {
                fail_msg("%s: CommandComplete \"%s\" after an ErrorResponse", sql,
                         (char *)m.body);
            }
            if (tags) {
                size_t l = strlen(tags);
                snprintf(tags + l, tcap - l, "%s%s", l ? "|" : "", (char *)m.body);
            }
        } else if (m.type == 'Z') {
            if (status) {
                *status = (char)m.body[0];
            }
            return;
        }
    }
}

static void q1_tags(int fd, const char *sql, char *out, size_t cap, char *status,
                    char *tags, size_t tcap)
{
    query(fd, sql);
    collect(fd, sql, out, cap, status, tags, tcap);
}

/* The same by the extended protocol: Parse, Bind, Execute, Sync (no
 * parameters, unnamed statement and portal). */
static void ext_tags(int fd, const char *sql, char *out, size_t cap, char *status,
                     char *tags, size_t tcap)
{
    wbuf b = {0};
    msg_parse(&b, "", sql);
    size_t at = msg_begin(&b, 'B');
    wstr(&b, "");
    wstr(&b, "");
    w16(&b, 0); w16(&b, 0); w16(&b, 0);
    msg_end(&b, at);
    at = msg_begin(&b, 'E');
    wstr(&b, "");
    w32(&b, 0);
    msg_end(&b, at);
    at = msg_begin(&b, 'S');
    msg_end(&b, at);
    send_all(fd, b.d, b.n);
    collect(fd, sql, out, cap, status, tags, tcap);
}

static void q1(int fd, const char *sql, char *out, size_t cap, char *status)
{
    q1_tags(fd, sql, out, cap, status, NULL, 0);
}

static void expect_q1(int fd, const char *sql, const char *want, char want_status)
{
    char out[256], st;
    q1(fd, sql, out, sizeof(out), &st);
    if (strcmp(out, want) != 0 || st != want_status) {
        fail_msg("%s -> %s/%c, want %s/%c", sql, out, st, want, want_status);
    }
}

/* expect_q1 that also checks the command tags (joined by '|'; "" when
 * there must be none, e.g. after an error). */
static void expect_tags_by(bool extended, int fd, const char *sql, const char *want,
                           const char *want_tags, char want_status)
{
    char out[256], tags[512], st;
    if (extended) {
        ext_tags(fd, sql, out, sizeof(out), &st, tags, sizeof(tags));
    } else {
        q1_tags(fd, sql, out, sizeof(out), &st, tags, sizeof(tags));
    }
    if (strcmp(out, want) != 0 || st != want_status || strcmp(tags, want_tags) != 0) {
        fail_msg("%s (%s protocol) -> %s/%c tags \"%s\", want %s/%c tags \"%s\"", sql,
                 extended ? "extended" : "simple", out, st, tags, want, want_status, want_tags);
    }
}

static void expect_tags(int fd, const char *sql, const char *want, const char *want_tags,
                        char want_status)
{
    expect_tags_by(false, fd, sql, want, want_tags, want_status);
}

/* After a FATAL the server closes: the next read sees EOF. */
static void expect_fatal_and_close(int fd, const char *sqlstate)
{
    msg m;
    rd_until(fd, 'E', &m);
    assert_string_equal(field(&m, 'C'), sqlstate);
    assert_false(rd(fd, &m));
    close(fd);
}

static void expect_alive(pgw_server *srv)
{
    int fd = login(srv, NULL, NULL);
    expect_q1(fd, "SELECT 40 + 2", "42", 'I');
    close(fd);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_startup(void **state)
{
    pgw_server *srv = start(PGW_AUTH_TRUST, 0);
    int fd = dial(srv);
    uint8_t ssl[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}; /* 80877103 */
    uint8_t gss[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}; /* 80877104 */
    char c;
    send_all(fd, ssl, 8);
    assert_true(recv_all(fd, &c, 1));
    assert_int_equal(c, 'N');
    send_all(fd, gss, 8);
    assert_true(recv_all(fd, &c, 1));
    assert_int_equal(c, 'N');
    send_startup(fd, "alice");
    msg m;
    rd_until(fd, 'Z', &m);
    assert_int_equal(m.body[0], 'I');
    expect_q1(fd, "SELECT current_setting('server_encoding')", "UTF8", 'I');
    expect_q1(fd, "SHOW standard_conforming_strings", "on", 'I');
    expect_q1(fd, "SET search_path TO myschema", "", 'I');
    expect_q1(fd, "SHOW search_path", "myschema", 'I');
    expect_q1(fd, "SHOW nonsense", "E:42704", 'I');
    expect_q1(fd, "SET client_encoding = 'LATIN1'", "E:0A000", 'I');
    expect_q1(fd, "", "", 'I');
    close(fd);
    pgw_server_stop(srv);
}

static void test_malformed(void **state)
{
    pgw_server *srv = start(PGW_AUTH_TRUST, 0);
    /* length below 4 */
    int fd = login(srv, NULL, NULL);
    uint8_t bad_len[5] = {'Q', 0, 0, 0, 2};
    send_all(fd, bad_len, 5);
    expect_fatal_and_close(fd, "08P01");
    /* above the 64 MiB bound */
    fd = login(srv, NULL, NULL);
    uint8_t huge[5] = {'Q', 0x7f, 0xff, 0xff, 0xff};
    send_all(fd, huge, 5);
    expect_fatal_and_close(fd, "08P01");
    /* unknown type */
    fd = login(srv, NULL, NULL);
    uint8_t unknown[5] = {'@', 0, 0, 0, 4};
    send_all(fd, unknown, 5);
    expect_fatal_and_close(fd, "08P01");
    /* Bind claiming more parameters than its body holds */
    fd = login(srv, NULL, NULL);
    wbuf b = {0};
    msg_parse(&b, "", "SELECT $1");
    size_t at = msg_begin(&b, 'B');
    wstr(&b, "");
    wstr(&b, "");
    w16(&b, 0);
    w16(&b, 1);
    w32(&b, 1000); /* 1000 bytes promised, 2 given */
    wbytes(&b, "ab", 2);
    msg_end(&b, at);
    send_all(fd, b.d, b.n);
    expect_fatal_and_close(fd, "08P01");
    /* Query without its NUL */
    fd = login(srv, NULL, NULL);
    uint8_t nonul[8] = {'Q', 0, 0, 0, 7, 'a', 'b', 'c'};
    send_all(fd, nonul, 8);
    expect_fatal_and_close(fd, "08P01");
    /* a startup packet with a bad length, and one cut short */
    fd = dial(srv);
    uint8_t bad_startup[8] = {0, 0, 0, 3, 0, 3, 0, 0};
    send_all(fd, bad_startup, 8);
    expect_fatal_and_close(fd, "08P01");
    fd = dial(srv);
    uint8_t cut[6] = {0, 0, 0, 100, 0, 3};
    send_all(fd, cut, 6);
    close(fd);
    expect_alive(srv);
    pgw_server_stop(srv);
}

/* Reads an Authentication request; returns its code. */
static int32_t rd_auth(int fd, msg *m)
{
    assert_true(rd(fd, m));
    assert_int_equal(m->type, 'R');
    return (int32_t)(((uint32_t)m->body[0] << 24) | ((uint32_t)m->body[1] << 16) |
                     ((uint32_t)m->body[2] << 8) | m->body[3]);
}

static void password_msg(int fd, const void *p, size_t n)
{
    wbuf b = {0};
    size_t at = msg_begin(&b, 'p');
    wbytes(&b, p, n);
    msg_end(&b, at);
    send_all(fd, b.d, b.n);
}

static void md5_login(pgw_server *srv, const char *user, const char *password,
                      const char *want)
{
    int fd = dial(srv);
    send_startup(fd, user);
    msg m;
    assert_int_equal(rd_auth(fd, &m), 5);
    char resp[36];
    assert_int_equal(pgw_md5_response(user, password, m.body + 4, resp), 0);
    password_msg(fd, resp, 36);
    assert_true(rd(fd, &m));
    if (want) {
        assert_int_equal(m.type, 'E');
        assert_string_equal(field(&m, 'C'), want);
        assert_string_equal(field(&m, 'S'), "FATAL");
        assert_false(rd(fd, &m));
    } else {
        assert_int_equal(m.type, 'R');
        rd_until(fd, 'Z', &m);
    }
    close(fd);
}

/* A SCRAM client (RFC 5802). Returns the server's verdict: NULL = ok. */
static void scram_login(pgw_server *srv, const char *user, const char *password,
                        const char *want)
{
    int fd = dial(srv);
    send_startup(fd, user);
    msg m;
    assert_int_equal(rd_auth(fd, &m), 10);
    assert_string_equal((char *)m.body + 4, "SCRAM-SHA-256");
    const char *first_bare = "n=,r=abcdefghijklmnopqrstuv";
    char first[128];
    snprintf(first, sizeof(first), "n,,%s", first_bare);
    wbuf b = {0};
    size_t at = msg_begin(&b, 'p');
    wstr(&b, "SCRAM-SHA-256");
    w32(&b, (int32_t)strlen(first));
    wbytes(&b, first, strlen(first));
    msg_end(&b, at);
    send_all(fd, b.d, b.n);
    assert_int_equal(rd_auth(fd, &m), 11);
    char server_first[256];
    snprintf(server_first, sizeof(server_first), "%.*s", (int)m.len - 4, (char *)m.body + 4);
    /* r=<nonce>,s=<salt>,i=<n> */
    char nonce[128], salt_b64[64];
    int iters;
    assert_int_equal(sscanf(server_first, "r=%127[^,],s=%63[^,],i=%d", nonce, salt_b64, &iters),
                     3);
    assert_int_equal(strncmp(nonce, "abcdefghijklmnopqrstuv", 22), 0);
    uint8_t salt[64], salted[32], ck[32], sk[32], sig[32], proof[32];
    size_t salt_len;
    unsigned int len = 32;
    assert_int_equal(b64_decode(salt_b64, strlen(salt_b64), 0, salt, sizeof(salt), &salt_len), 0);
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iters, EVP_sha256(),
                      32, salted);
    HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Client Key", 10, ck, &len);
    EVP_Digest(ck, 32, sk, &len, EVP_sha256(), NULL);
    char final_wo[256], auth[768], proof_b64[64], msg_final[400];
    snprintf(final_wo, sizeof(final_wo), "c=biws,r=%s", nonce);
    snprintf(auth, sizeof(auth), "%s,%s,%s", first_bare, server_first, final_wo);
    HMAC(EVP_sha256(), sk, 32, (const uint8_t *)auth, strlen(auth), sig, &len);
    for (int i = 0; i < 32; i++) {
        proof[i] = ck[i] ^ sig[i];
    }
    b64_encode(proof, 32, proof_b64);
    snprintf(msg_final, sizeof(msg_final), "%s,p=%s", final_wo, proof_b64);
    password_msg(fd, msg_final, strlen(msg_final));
    assert_true(rd(fd, &m));
    if (want) {
        assert_int_equal(m.type, 'E');
        assert_string_equal(field(&m, 'C'), want);
        assert_false(rd(fd, &m));
    } else {
        assert_int_equal(m.type, 'R');
        assert_int_equal(m.body[3], 12); /* SASLFinal */
        rd_until(fd, 'Z', &m);
    }
    close(fd);
}

static void test_auth(void **state)
{
    pgw_server *srv = start(PGW_AUTH_MD5, 0);
    md5_login(srv, "bob", "wrong", "28P01");
    md5_login(srv, "eve", "s3cret", "28P01");
    md5_login(srv, "bob", "s3cret", NULL);
    pgw_server_stop(srv);
    srv = start(PGW_AUTH_SCRAM, 0);
    scram_login(srv, "bob", "wrong", "28P01");
    scram_login(srv, "eve", "s3cret", "28P01");
    scram_login(srv, "bob", "s3cret", NULL);
    pgw_server_stop(srv);
}

typedef struct cancel_arg {
    pgw_server *srv;
    int32_t pid, key;
    atomic_bool done; /* the query ended: stop cancelling */
} cancel_arg;

static void send_cancel(cancel_arg *a)
{
    int fd = dial(a->srv);
    wbuf b = {0};
    w32(&b, 16);
    w32(&b, 80877102);
    w32(&b, a->pid);
    w32(&b, a->key);
    send_all(fd, b.d, b.n);
    char c;
    assert_int_equal(recv(fd, &c, 1, 0), 0); /* closed without an answer */
    close(fd);
}

/* Cancels every 300 ms until the query is over (a cancel that arrives
 * before the query started is, as in PostgreSQL, lost). */
static void *canceller(void *p)
{
    cancel_arg *a = p;
    for (int i = 0; i < 60 && !atomic_load(&a->done); i++) {
        usleep(300 * 1000);
        if (!atomic_load(&a->done)) {
            send_cancel(a);
        }
    }
    return NULL;
}

static void test_cancel(void **state)
{
    pgw_server *srv = start(PGW_AUTH_TRUST, 0);
    cancel_arg a = {srv, 0, 0, false};
    int fd = login(srv, &a.pid, &a.key);
    /* a wrong key does nothing */
    cancel_arg wrong = {srv, a.pid, a.key ^ 1, false};
    send_cancel(&wrong);
    expect_q1(fd, "SELECT 1", "1", 'I');
    pthread_t t;
    pthread_create(&t, NULL, canceller, &a);
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    expect_q1(fd, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                  "SELECT count(*) FROM c", "E:57014", 'I');
    atomic_store(&a.done, true);
    gettimeofday(&t1, NULL);
    pthread_join(t, NULL);
    assert_true(t1.tv_sec - t0.tv_sec < 10);
    expect_q1(fd, "SELECT 2", "2", 'I'); /* the session goes on */
    close(fd);
    pgw_server_stop(srv);
}

static void test_txn(void **state)
{
    pgw_server *srv = start(PGW_AUTH_TRUST, 0);
    int fd = login(srv, NULL, NULL);
    expect_q1(fd, "CREATE TABLE tx(id INTEGER PRIMARY KEY, v TEXT NOT NULL, "
                  "c INTEGER CHECK (c > 0), p INTEGER REFERENCES tx(id))", "", 'I');
    expect_q1(fd, "PRAGMA foreign_keys = ON", "", 'I');
    expect_tags(fd, "BEGIN", "", "BEGIN", 'T');
    expect_tags(fd, "INSERT INTO tx VALUES (1, 'a', 1, NULL)", "", "INSERT 0 1", 'T');
    expect_tags(fd, "INSERT INTO tx VALUES (1, 'a', 1, NULL)", "E:23505", "", 'E');
    expect_tags(fd, "SELECT 1", "E:25P02", "", 'E');
    expect_tags(fd, "COMMIT", "", "ROLLBACK", 'I'); /* = ROLLBACK */
    expect_q1(fd, "SELECT count(*) FROM tx", "0", 'I');
    expect_q1(fd, "INSERT INTO tx VALUES (2, NULL, 1, NULL)", "E:23502", 'I');
    expect_q1(fd, "INSERT INTO tx VALUES (2, 'b', 0, NULL)", "E:23514", 'I');
    expect_q1(fd, "INSERT INTO tx VALUES (2, 'b', 1, 99)", "E:23503", 'I');
    expect_q1(fd, "SELEC 1", "E:42601", 'I');
    expect_q1(fd, "SELECT nope FROM tx", "E:42703", 'I');
    expect_q1(fd, "SELECT * FROM nope", "E:42P01", 'I');
    /* several statements: one implicit transaction */
    expect_q1(fd, "INSERT INTO tx VALUES (5, 'e', 1, NULL); INSERT INTO tx VALUES (5, 'e', 1, NULL)",
              "E:23505", 'I');
    expect_q1(fd, "SELECT count(*) FROM tx", "0", 'I');
    /* savepoints: ROLLBACK TO leaves the aborted state */
    expect_q1(fd, "BEGIN; SAVEPOINT s; INSERT INTO tx VALUES (7, 'g', 1, NULL)", "", 'T');
    expect_q1(fd, "INSERT INTO tx VALUES (7, 'g', 1, NULL)", "E:23505", 'E');
    expect_q1(fd, "ROLLBACK TO SAVEPOINT s", "", 'T');
    expect_tags(fd, "INSERT INTO tx VALUES (8, 'h', 1, NULL); COMMIT", "", "INSERT 0 1|COMMIT", 'I');
    expect_q1(fd, "SELECT group_concat(id) FROM tx", "8", 'I');
    expect_q1(fd, "BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE", "", 'T');
    expect_q1(fd, "ROLLBACK", "", 'I');
    expect_q1(fd, "START TRANSACTION", "", 'T');
    expect_q1(fd, "END", "", 'I');
    close(fd);
    pgw_server_stop(srv);
}

/* A COMMIT that fails (a deferred foreign key violated) is an
 * ErrorResponse with its SQLSTATE and never a COMMIT tag, by either
 * protocol; the transaction's rows are gone and the session goes on. */
static void test_commit_fails(void **state)
{
    pgw_server *srv = start(PGW_AUTH_TRUST, 0);
    int fd = login(srv, NULL, NULL);
    expect_tags(fd, "CREATE TABLE par(id INTEGER PRIMARY KEY)", "", "CREATE TABLE", 'I');
    expect_tags(fd, "CREATE TABLE chi(id INTEGER PRIMARY KEY, "
                    "p INTEGER REFERENCES par(id) DEFERRABLE INITIALLY DEFERRED)",
                "", "CREATE TABLE", 'I');
    expect_q1(fd, "PRAGMA foreign_keys = ON", "", 'I');
    for (int ext = 0; ext < 2; ext++) {
        const char *proto = ext ? "extended" : "simple";
        expect_tags_by(ext, fd, "BEGIN", "", "BEGIN", 'T');
        expect_tags_by(ext, fd, "INSERT INTO chi VALUES (1, 99)", "", "INSERT 0 1", 'T');
        char out[256], tags[512], st;
        if (ext) {
            ext_tags(fd, "COMMIT", out, sizeof(out), &st, tags, sizeof(tags));
        } else {
            q1_tags(fd, "COMMIT", out, sizeof(out), &st, tags, sizeof(tags));
        }
        if (strstr(tags, "COMMIT") || strcmp(out, "E:23503") != 0) {
            fail_msg("broken guarantee: a COMMIT that failed (deferred foreign key, %s "
                     "protocol) must be an ErrorResponse 23503 and never a COMMIT tag; "
                     "got \"%s\" tags \"%s\"", proto, out, tags);
        }
        assert_int_equal(st, 'I');
        expect_tags_by(ext, fd, "SELECT count(*) FROM chi", "0", "SELECT 1", 'I');
        /* The session is usable: a transaction that holds commits. */
        expect_tags_by(ext, fd, "INSERT INTO par VALUES (1)", "", "INSERT 0 1", 'I');
        expect_tags_by(ext, fd, "BEGIN", "", "BEGIN", 'T');
        expect_tags_by(ext, fd, "INSERT INTO chi VALUES (2, 1)", "", "INSERT 0 1", 'T');
        expect_tags_by(ext, fd, "COMMIT", "", "COMMIT", 'I');
        expect_tags_by(ext, fd, "SELECT count(*) FROM chi", "1", "SELECT 1", 'I');
        expect_tags_by(ext, fd, "DELETE FROM chi", "", "DELETE 1", 'I');
        expect_tags_by(ext, fd, "DELETE FROM par", "", "DELETE 1", 'I');
    }
    close(fd);
    pgw_server_stop(srv);
}

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) {
        p[i] = (uint8_t)v;
    }
}

static void test_extended(void **state)
{
    pgw_server *srv = start(PGW_AUTH_TRUST, 0);
    int fd = login(srv, NULL, NULL);
    expect_q1(fd, "CREATE TABLE e(i INTEGER, f REAL, b BOOLEAN, d BLOB, t TEXT)", "", 'I');
    wbuf b = {0};
    /* Parse with types int4, float8, bool, bytea, text; all binary */
    size_t at = msg_begin(&b, 'P');
    wstr(&b, "ins");
    wstr(&b, "INSERT INTO e VALUES ($1, $2, $3, $4, $5)");
    w16(&b, 5);
    w32(&b, 23); w32(&b, 701); w32(&b, 16); w32(&b, 17); w32(&b, 25);
    msg_end(&b, at);
    at = msg_begin(&b, 'D');
    w8(&b, 'S');
    wstr(&b, "ins");
    msg_end(&b, at);
    for (int k = 0; k < 3; k++) {
        at = msg_begin(&b, 'B');
        wstr(&b, "");
        wstr(&b, "ins");
        w16(&b, 1);
        w16(&b, 1);
        w16(&b, 5);
        w32(&b, 4); w32(&b, 100 + k);
        uint8_t f8[8];
        double d = 2.5 * k;
        uint64_t bits;
        memcpy(&bits, &d, 8);
        be64(f8, bits);
        w32(&b, 8); wbytes(&b, f8, 8);
        w32(&b, 1); w8(&b, (uint8_t)(k & 1));
        w32(&b, 3); wbytes(&b, "\x00\xff\x10", 3);
        w32(&b, 2); wbytes(&b, "hi", 2);
        w16(&b, 0);
        msg_end(&b, at);
        at = msg_begin(&b, 'E');
        wstr(&b, "");
        w32(&b, 0);
        msg_end(&b, at);
    }
    at = msg_begin(&b, 'S');
    msg_end(&b, at);
    send_all(fd, b.d, b.n);
    msg m;
    assert_true(rd(fd, &m)); assert_int_equal(m.type, '1');
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 't');
    assert_int_equal(m.body[1], 5);
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'n');
    for (int k = 0; k < 3; k++) {
        assert_true(rd(fd, &m)); assert_int_equal(m.type, '2');
        assert_true(rd(fd, &m)); assert_int_equal(m.type, 'C');
        assert_string_equal((char *)m.body, "INSERT 0 1");
    }
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'Z');
    expect_q1(fd, "SELECT sum(i) || ',' || sum(f) || ',' || sum(b) || ',' || hex(min(d)) || min(t) "
                  "FROM e", "303,7.5,1,00FF10hi", 'I');

    /* SELECT with $1 in text, results binary, 2 rows per Execute */
    b.n = 0;
    msg_parse(&b, "", "SELECT i, f, b, d, t, i * 2 AS x FROM e WHERE i >= $1 ORDER BY i");
    at = msg_begin(&b, 'B');
    wstr(&b, "p1");
    wstr(&b, "");
    w16(&b, 0);
    w16(&b, 1);
    w32(&b, 3); wbytes(&b, "100", 3);
    w16(&b, 1);
    w16(&b, 1);
    msg_end(&b, at);
    at = msg_begin(&b, 'D');
    w8(&b, 'P');
    wstr(&b, "p1");
    msg_end(&b, at);
    at = msg_begin(&b, 'E');
    wstr(&b, "p1");
    w32(&b, 2);
    msg_end(&b, at);
    at = msg_begin(&b, 'E');
    wstr(&b, "p1");
    w32(&b, 2);
    msg_end(&b, at);
    at = msg_begin(&b, 'S');
    msg_end(&b, at);
    send_all(fd, b.d, b.n);
    assert_true(rd(fd, &m)); assert_int_equal(m.type, '1');
    assert_true(rd(fd, &m)); assert_int_equal(m.type, '2');
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'T');
    assert_int_equal(m.body[1], 6);
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'D');
    /* i: int8 binary = 8 bytes of 100 */
    assert_int_equal(m.body[5], 8);
    assert_int_equal(m.body[6 + 7], 100);
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'D');
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 's'); /* PortalSuspended */
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'D');
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'C');
    assert_string_equal((char *)m.body, "SELECT 1");
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'Z');

    /* an error discards everything until Sync */
    b.n = 0;
    msg_parse(&b, "", "SELECT * FROM nope");
    at = msg_begin(&b, 'B');
    wstr(&b, "");
    wstr(&b, "");
    w16(&b, 0); w16(&b, 0); w16(&b, 0);
    msg_end(&b, at);
    at = msg_begin(&b, 'E');
    wstr(&b, "");
    w32(&b, 0);
    msg_end(&b, at);
    at = msg_begin(&b, 'S');
    msg_end(&b, at);
    send_all(fd, b.d, b.n);
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'E');
    assert_string_equal(field(&m, 'C'), "42P01");
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'Z');
    /* a bad text value for a typed parameter */
    b.n = 0;
    at = msg_begin(&b, 'P');
    wstr(&b, "");
    wstr(&b, "SELECT $1");
    w16(&b, 1); w32(&b, 20);
    msg_end(&b, at);
    at = msg_begin(&b, 'B');
    wstr(&b, "");
    wstr(&b, "");
    w16(&b, 0); w16(&b, 1); w32(&b, 3); wbytes(&b, "abc", 3); w16(&b, 0);
    msg_end(&b, at);
    at = msg_begin(&b, 'S');
    msg_end(&b, at);
    send_all(fd, b.d, b.n);
    assert_true(rd(fd, &m)); assert_int_equal(m.type, '1');
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'E');
    assert_string_equal(field(&m, 'C'), "22P02");
    assert_true(rd(fd, &m)); assert_int_equal(m.type, 'Z');
    close(fd);
    pgw_server_stop(srv);
}

/* The RowDescription's field count and first field name of the next one. */
static int rd_row_description(int fd, char *first, size_t cap)
{
    msg m;
    rd_until(fd, 'T', &m);
    snprintf(first, cap, "%.*s", (int)(cap - 1), (char *)m.body + 2);
    return (m.body[0] << 8) | m.body[1];
}

static void msg_simple(wbuf *b, char type, char what, const char *name)
{
    size_t at = msg_begin(b, type);
    if (what) {
        w8(b, (uint8_t)what);
    }
    wstr(b, name);
    msg_end(b, at);
}

/* Bind of stmt to the unnamed portal, no parameters, text results. */
static void msg_bind(wbuf *b, const char *stmt)
{
    size_t at = msg_begin(b, 'B');
    wstr(b, "");
    wstr(b, stmt);
    w16(b, 0);
    w16(b, 0);
    w16(b, 0);
    msg_end(b, at);
}

static void msg_execute_sync(wbuf *b)
{
    size_t at = msg_begin(b, 'E');
    wstr(b, "");
    w32(b, 0);
    msg_end(b, at);
    at = msg_begin(b, 'S');
    msg_end(b, at);
}

/* Issue 22: another session's DDL changes the shape of a statement this one
 * prepared. A statement it described fails with 0A000 (as in PostgreSQL);
 * one it did not is described afresh; a simple query gets the new shape. */
static void test_ddl_shapes(void **state)
{
    pgw_server *srv = start(PGW_AUTH_TRUST, 0);
    int a = login(srv, NULL, NULL), b = login(srv, NULL, NULL);
    expect_q1(a, "CREATE TABLE sh(x); INSERT INTO sh VALUES (1)", "", 'I');
    char name[64];
    query(a, "SELECT * FROM sh");
    assert_int_equal(rd_row_description(a, name, sizeof(name)), 1);
    rd_until(a, 'Z', &(msg){0});
    wbuf w = {0};
    msg_parse(&w, "told", "SELECT * FROM sh");
    msg_simple(&w, 'D', 'S', "told");
    msg_parse(&w, "quiet", "SELECT * FROM sh");
    size_t at = msg_begin(&w, 'S');
    msg_end(&w, at);
    send_all(a, w.d, w.n);
    assert_int_equal(rd_row_description(a, name, sizeof(name)), 1);
    rd_until(a, 'Z', &(msg){0});

    expect_q1(b, "ALTER TABLE sh ADD COLUMN y DEFAULT 7", "", 'I');

    msg m;
    w.n = 0;
    msg_bind(&w, "told");
    msg_execute_sync(&w);
    send_all(a, w.d, w.n);
    rd_until(a, 'E', &m);
    assert_string_equal(field(&m, 'C'), "0A000");
    assert_string_equal(field(&m, 'M'), "cached plan must not change result type");
    rd_until(a, 'Z', &m);

    w.n = 0;
    msg_bind(&w, "quiet");
    msg_simple(&w, 'D', 'P', "");
    msg_execute_sync(&w);
    send_all(a, w.d, w.n);
    assert_int_equal(rd_row_description(a, name, sizeof(name)), 2);
    rd_until(a, 'D', &m);
    assert_int_equal((m.body[0] << 8) | m.body[1], 2);
    rd_until(a, 'Z', &m);

    expect_q1(b, "DROP TABLE sh; CREATE TABLE sh(z)", "", 'I');
    query(a, "SELECT * FROM sh");
    assert_int_equal(rd_row_description(a, name, sizeof(name)), 1);
    assert_string_equal(name, "z");
    rd_until(a, 'Z', &m);
    close(a);
    close(b);
    pgw_server_stop(srv);
}

static void test_limits_and_stop(void **state)
{
    pgw_server *srv = start(PGW_AUTH_TRUST, 2);
    int a = login(srv, NULL, NULL), b = login(srv, NULL, NULL);
    int c = dial(srv);
    send_startup(c, "alice");
    expect_fatal_and_close(c, "53300");
    assert_int_equal(pgw_server_sessions(srv), 2);
    /* one session mid-query when the server stops */
    query(b, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
             "SELECT count(*) FROM c");
    usleep(200 * 1000);
    pgw_server_stop(srv);
    msg m;
    rd_until(a, 'E', &m);
    assert_string_equal(field(&m, 'C'), "57P01");
    rd_until(b, 'E', &m); /* the interrupted query (57P01 if it had not started) */
    assert_true(strcmp(field(&m, 'C'), "57014") == 0 || strcmp(field(&m, 'C'), "57P01") == 0);
    while (rd(b, &m)) {
    } /* then closed */
    close(a);
    close(b);
}

static void test_metrics(void **state)
{
    met_registry *reg;
    assert_int_equal(met_registry_new(&reg), 0);
    pgw_options o = {0};
    o.open_db = open_db;
    o.close_db = close_db;
    o.metrics = reg;
    pgw_server *srv;
    assert_int_equal(pgw_server_start(&o, &srv), 0);
    int fd = login(srv, NULL, NULL);
    expect_q1(fd, "SELECT 1 UNION ALL SELECT 2", "1", 'I');
    expect_q1(fd, "SELECT * FROM nope", "E:42P01", 'I');
    assert_int_equal(pgw_server_sessions(srv), 1);
    char *text;
    size_t len;
    assert_int_equal(met_render(reg, &text, &len), 0);
    if (!strstr(text, "arbor_compute_pg_sessions 1") ||
        !strstr(text, "arbor_compute_pg_rows_total 2") ||
        !strstr(text, "arbor_compute_pg_errors_total 1") ||
        !strstr(text, "arbor_compute_pg_queries_total 1")) {
        fail_msg("metrics:\n%s", text);
    }
    free(text);
    /* the names are taken: a second server on the same registry is refused */
    pgw_server *again;
    assert_int_equal(pgw_server_start(&o, &again), -EEXIST);
    close(fd);
    pgw_server_stop(srv);
    met_registry_free(reg);
}

static void test_sql_helpers(void **state)
{
    const char *in = "SELECT '\\x0a0b'::bytea, 1::int, 'a::b', x::double precision, "
                     "y::varchar(10), $1::int8[]";
    char *s = pgw_sql_rewrite(in, strlen(in));
    assert_string_equal(s, "SELECT X'0a0b', 1, 'a::b', x, y, $1");
    az_free(s);
    /* the schema public is main; not inside names, strings or after a dot */
    const char *pub = "SELECT public.t.a, \"public\".\"t\".b, PUBLIC.c FROM public.t "
                      "JOIN x.public ON 'public.t' = notpublic.t";
    s = pgw_sql_rewrite(pub, strlen(pub));
    assert_string_equal(s, "SELECT main.t.a, main.\"t\".b, main.c FROM main.t "
                           "JOIN x.public ON 'public.t' = notpublic.t");
    az_free(s);
    pgw_sql_stmt st;
    const char *tail;
    char err[128];
    assert_int_equal(pgw_sql_classify("SET datestyle TO 'ISO', 'MDY'; x", NULL, &st, &tail,
                                      err, sizeof(err)), 0);
    assert_int_equal(st.kind, PGW_KIND_SET);
    assert_string_equal(st.name, "datestyle");
    assert_string_equal(st.value, "ISO, MDY");
    assert_string_equal(tail, " x");
    pgw_sql_stmt_clear(&st);
    assert_int_equal(pgw_sql_classify("  create unique index i on t(x)", NULL, &st, &tail,
                                      err, sizeof(err)), 0);
    assert_string_equal(st.tag, "CREATE INDEX");
    assert_null(tail);
    pgw_sql_stmt_clear(&st);
    assert_int_equal(pgw_sql_classify("WITH a AS (SELECT 1) DELETE FROM t", NULL, &st, &tail,
                                      err, sizeof(err)), 0);
    assert_string_equal(st.tag, "DELETE");
    pgw_sql_stmt_clear(&st);
    char tag[64];
    sqlt_command_tag("INSERT", 0, 3, tag, sizeof(tag));
    assert_string_equal(tag, "INSERT 0 3");
    assert_int_equal(pgw_sql_decl_oid("VARCHAR(20)"), 25);
    assert_int_equal(pgw_sql_decl_oid("BIGINT"), 20);
    assert_int_equal(pgw_sql_decl_oid("DOUBLE"), 701);
    assert_int_equal(pgw_sql_decl_oid("DATETIME"), 0);
}

int main(void)
{
    snprintf(g_dir, sizeof(g_dir), "%s/pgw-proto-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR")
                                                                           : "/tmp");
    if (!mkdtemp(g_dir)) {
        return 1;
    }
    snprintf(g_db, sizeof(g_db), "%s/db.sqlite", g_dir);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sql_helpers),
        cmocka_unit_test(test_startup),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_txn),
        cmocka_unit_test(test_commit_fails),
        cmocka_unit_test(test_extended),
        cmocka_unit_test(test_ddl_shapes),
        cmocka_unit_test(test_limits_and_stop),
        cmocka_unit_test(test_metrics),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "could not remove %s\n", g_dir);
    }
    return rc;
}
