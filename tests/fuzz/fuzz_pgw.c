/*
 * fuzz_pgw — libFuzzer target for the PostgreSQL protocol as a compute's
 * session sees it (compute/pgw_*): the startup packet (and SSLRequest,
 * GSSENCRequest, CancelRequest), authentication (cleartext/MD5 password
 * messages, SCRAM-SHA-256 SASLInitialResponse with client-first and
 * SASLResponse with client-final, pgw_auth.c), then simple and extended
 * query messages (Query, Parse, Bind, Describe, Execute, Close, Sync,
 * Flush, CopyData/Fail..., pgw_session.c).
 *
 * Three real pgw servers run in this process on loopback, one per
 * authentication method (trust; md5 and scram for user "u", password "p"),
 * each session on an in-memory SQLite database. The first input byte picks
 * the server (mod 3); the rest is the client's whole byte stream, sent
 * over a fresh TCP connection that is then half-closed; the answer is
 * read and dropped until the server closes the connection.
 *
 * Properties: no crash or sanitizer report in the server threads, and the
 * server always ends the session within 10 s of the end of the input
 * (abort otherwise). SQLite's own work is bounded (length limit, a
 * progress handler, a heap limit) so a fuzzed query cannot make a run slow
 * or big: SQLite itself is not what is fuzzed here.
 */
#include "fuzz_sqlite.h"

#include "fuzz_net.h"
#include "log.h"
#include "pgw_server.h"

#define N_SERVERS 3

static pgw_server *servers[N_SERVERS];
static int ports[N_SERVERS];

static int open_db(void *arg, const pgw_session_info *who, sqlite3 **out, char *err,
                   size_t errlen)
{
    (void)arg;
    (void)who;
    return fz_sqlite_open(out, err, errlen) == SQLITE_OK ? 0 : -1;
}

static void close_db(void *arg, sqlite3 *db)
{
    (void)arg;
    sqlite3_close_v2(db);
}

static void stop_servers(void)
{
    for (int i = 0; i < N_SERVERS; i++)
        pgw_server_stop(servers[i]);
}

static void start_servers(void)
{
    static const pgw_auth_method methods[N_SERVERS] = { PGW_AUTH_TRUST, PGW_AUTH_MD5,
                                                        PGW_AUTH_SCRAM };
    log_init("fuzz", LOG_ERROR);
    sqlite3_hard_heap_limit64(256 << 20);
    for (int i = 0; i < N_SERVERS; i++) {
        pgw_options o;
        memset(&o, 0, sizeof o);
        o.auth = methods[i];
        o.user = methods[i] == PGW_AUTH_TRUST ? NULL : "u";
        o.password = "p";
        o.max_sessions = 8;
        o.open_db = open_db;
        o.close_db = close_db;
        CHECK(pgw_server_start(&o, &servers[i]) == 0);
        ports[i] = pgw_server_port(servers[i]);
    }
    atexit(stop_servers);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (servers[0] == NULL)
        start_servers();
    if (size < 1)
        return 0;
    long got = fz_exchange(ports[data[0] % N_SERVERS], data + 1, size - 1, 10000);
    CHECK(got >= 0);  /* the server ended the session */
    if (getenv("ARBOR_FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "answer: %ld bytes\n", got);
    return 0;
}
