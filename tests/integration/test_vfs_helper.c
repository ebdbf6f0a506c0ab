/*
 * test_vfs_helper — a compute process for the VFS tests: links the VFS,
 * opens an arbor database and commits in a loop.
 *
 *   test_vfs_helper loop URI FIRST_ID
 *     INSERT INTO k(id) VALUES(FIRST_ID), (FIRST_ID+1), ... one autocommit
 *     transaction each; prints each acknowledged id on its own line
 *     (flushed) — an id printed is a commit the client was told succeeded.
 *     On the first error prints "ERR <extended code> <message>" and exits 3.
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
    if (argc != 4 || strcmp(argv[1], "loop") != 0) {
        fprintf(stderr, "usage: %s loop URI FIRST_ID\n", argv[0]);
        return 2;
    }
    if (arbor_vfs_register() != SQLITE_OK)
        return 2;
    sqlite3 *db;
    if (sqlite3_open_v2(argv[2], &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_URI, NULL) != SQLITE_OK) {
        printf("ERR open %s\n", sqlite3_errmsg(db));
        return 3;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT INTO k(id, pad) VALUES(?, zeroblob(200))",
                           -1, &st, NULL) != SQLITE_OK) {
        printf("ERR prepare %s\n", sqlite3_errmsg(db));
        return 3;
    }
    for (long id = atol(argv[3]);; id++) {
        sqlite3_bind_int64(st, 1, id);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            printf("ERR %d %s\n", sqlite3_extended_errcode(db), sqlite3_errmsg(db));
            fflush(stdout);
            return 3;
        }
        printf("%ld\n", id);
        fflush(stdout);
    }
}
