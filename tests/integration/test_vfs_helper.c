/*
 * test_vfs_helper — a compute process for the VFS tests: links the VFS,
 * opens an arbor database and commits in a loop.
 *
 *   test_vfs_helper loop URI FIRST_ID
 *     INSERT INTO k(id) VALUES(FIRST_ID), (FIRST_ID+1), ... one autocommit
 *     transaction each; prints each acknowledged id on its own line
 *     (flushed) — an id printed is a commit the client was told succeeded.
 *     On the first error prints "ERR <extended code> <message>" and exits 3.
 *
 *   test_vfs_helper big URI ROWS
 *     One transaction: UPDATE marker SET v = 'orphan' (a page the next
 *     primary's commit does not rewrite), then INSERT INTO big(b) ROWS x
 *     randomblob(1000000); prints "COMMITTED" when it returns (the tests
 *     kill it before).
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <signal.h>

#include "vfs_main.h"

int main(int argc, char **argv)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (argc != 4 || (strcmp(argv[1], "loop") != 0 && strcmp(argv[1], "big") != 0)) {
        fprintf(stderr, "usage: %s loop URI FIRST_ID | big URI ROWS\n", argv[0]);
        return 2;
    }
    if (arbor_vfs_register() != SQLITE_OK)
        return 2;
    sqlite3 *db;
    if (sqlite3_open_v2(argv[2], &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_URI, NULL) != SQLITE_OK) {
        printf("ERR open %s\n", sqlite3_errmsg(db));
        sqlite3_close(db);
        return 3;
    }
    sqlite3_extended_result_codes(db, 1);
    if (!strcmp(argv[1], "big")) {
        char sql[256];
        snprintf(sql, sizeof(sql), "BEGIN; UPDATE marker SET v = 'orphan'; "
                 "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                 "FROM s WHERE i < %d) INSERT INTO big(b) SELECT randomblob(1000000) FROM s; "
                 "COMMIT", atoi(argv[3]));
        int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            printf("COMMITTED\n");
        else
            printf("ERR %d %s\n", sqlite3_extended_errcode(db), sqlite3_errmsg(db));
        fflush(stdout);
        sqlite3_close(db);   /* also after a failure: LeakSanitizer checks at exit */
        return rc == SQLITE_OK ? 0 : 3;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT INTO k(id, pad) VALUES(?, zeroblob(200))",
                           -1, &st, NULL) != SQLITE_OK) {
        printf("ERR prepare %s\n", sqlite3_errmsg(db));
        sqlite3_close(db);
        return 3;
    }
    for (long id = atol(argv[3]);; id++) {
        sqlite3_bind_int64(st, 1, id);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            printf("ERR %d %s\n", sqlite3_extended_errcode(db), sqlite3_errmsg(db));
            fflush(stdout);
            sqlite3_finalize(st);
            sqlite3_close(db);
            return 3;
        }
        printf("%ld\n", id);
        fflush(stdout);
    }
}
