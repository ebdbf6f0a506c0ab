/*
 * pgw_testserver — serves one plain SQLite file over the PostgreSQL wire
 * protocol (compute/pgw_server.h), so that tests can drive real clients
 * (psql, pgbench, psycopg2) against it.
 *
 *   pgw_testserver --db=FILE [--listen=HOST[:PORT]] [--port-file=PATH]
 *                  [--auth=trust|md5|scram] [--user=U] [--password=P]
 *                  [--max-sessions=N] [--journal=delete|wal]
 *
 * The port file gets "<port> 0\n" once the server listens (the format
 * tests/integration/harness.c reads; --datadir and --http-port, which the
 * harness always passes, are accepted: a missing --db defaults to
 * <datadir>/db.sqlite). SIGTERM/SIGINT stop the server (pgw_server_stop)
 * and exit 0, so that sanitizers report at a clean exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"
#include "pgw_server.h"

typedef struct app {
    char db_path[1024];
    char journal[16];
} app;

static int open_db(void *arg, const pgw_session_info *who, sqlite3 **out, char *err,
                   size_t errlen)
{
    app *a = arg;
    if (strcmp(who->database, "no_such_db") == 0) {
        snprintf(err, errlen, "database \"%s\" does not exist", who->database);
        return -ENOENT;
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(a->db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -EIO;
    }
    sqlite3_busy_timeout(db, 30000);
    /* A test server: durability is not what is tested, speed helps. */
    sqlite3_exec(db, "PRAGMA synchronous=OFF", NULL, NULL, NULL);
    if (strcmp(a->journal, "wal") == 0) {
        sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    }
    *out = db;
    return 0;
}

static void close_db(void *arg, sqlite3 *db)
{
    (void)arg;
    sqlite3_close(db);
}

static const char *flag(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && arg[n] == '=' ? arg + n + 1 : NULL;
}

static int write_port_file(const char *path, int port)
{
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        return -errno;
    }
    fprintf(f, "%d 0\n", port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        return -errno;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static app a;
    char listen[256] = "127.0.0.1:0";
    const char *port_file = NULL, *v;
    pgw_options o = {0};
    o.auth = PGW_AUTH_TRUST;
    snprintf(a.journal, sizeof(a.journal), "delete");
    for (int i = 1; i < argc; i++) {
        if ((v = flag(argv[i], "--db"))) {
            snprintf(a.db_path, sizeof(a.db_path), "%s", v);
        } else if ((v = flag(argv[i], "--datadir"))) {
            if (!a.db_path[0]) {
                snprintf(a.db_path, sizeof(a.db_path), "%s/db.sqlite", v);
            }
        } else if ((v = flag(argv[i], "--listen"))) {
            snprintf(listen, sizeof(listen), "%s", v);
        } else if ((v = flag(argv[i], "--port-file"))) {
            port_file = v;
        } else if ((v = flag(argv[i], "--auth"))) {
            if (pgw_auth_method_parse(v, &o.auth) != 0) {
                fprintf(stderr, "bad --auth %s\n", v);
                return 2;
            }
        } else if ((v = flag(argv[i], "--user"))) {
            o.user = v;
        } else if ((v = flag(argv[i], "--password"))) {
            o.password = v;
        } else if ((v = flag(argv[i], "--max-sessions"))) {
            o.max_sessions = atoi(v);
        } else if ((v = flag(argv[i], "--journal"))) {
            snprintf(a.journal, sizeof(a.journal), "%s", v);
        } else if (flag(argv[i], "--http-port")) {
            /* the harness's; no HTTP here */
        } else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!a.db_path[0]) {
        fprintf(stderr, "--db is required\n");
        return 2;
    }
    log_init("pgw_testserver", LOG_INFO);
    char *colon = strrchr(listen, ':');
    o.port = 0;
    if (colon) {
        *colon = 0;
        o.port = atoi(colon + 1);
    }
    o.bind_address = listen;
    o.open_db = open_db;
    o.close_db = close_db;
    o.arg = &a;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by the server threads */

    pgw_server *srv;
    int rc = pgw_server_start(&o, &srv);
    if (rc != 0) {
        fprintf(stderr, "pgw_server_start: %s\n", strerror(-rc));
        return 1;
    }
    if (port_file && (rc = write_port_file(port_file, pgw_server_port(srv))) != 0) {
        fprintf(stderr, "port file: %s\n", strerror(-rc));
        pgw_server_stop(srv);
        return 1;
    }
    int sig = 0;
    sigwait(&set, &sig);
    log_info("signal %d: stopping", sig);
    pgw_server_stop(srv);
    return 0;
}
