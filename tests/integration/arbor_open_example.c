/*
 * A plain SQLite program (links the system's libsqlite3, nothing of Arbor)
 * that opens an Arbor branch through the loadable extension libarbor.so:
 * load it once (it registers the "arbor" VFS for the whole process), then
 * open the branch's URI. The README's "Connect from X" shows this code.
 *
 *   arbor_open_example <path to libarbor.so> <file:...?vfs=arbor&... URI> <SQL>
 *
 * Runs the SQL and prints each row's columns separated by '|'. Exit 0, or
 * 1 with SQLite's message on stderr. Run by test_vfs_shell.
 */
#include <sqlite3.h>
#include <stdio.h>

static int print_row(void *arg, int n, char **vals, char **names)
{
    (void)arg;
    (void)names;
    for (int i = 0; i < n; i++)
        printf("%s%s", i ? "|" : "", vals[i] ? vals[i] : "");
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s LIBARBOR URI SQL\n", argv[0]);
        return 1;
    }
    /* 1. load the extension into any connection (an in-memory one here) */
    sqlite3 *mem;
    char *err = NULL;
    sqlite3_open(":memory:", &mem);
    sqlite3_enable_load_extension(mem, 1);
    if (sqlite3_load_extension(mem, argv[1], NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "load %s: %s\n", argv[1], err);
        return 1;
    }
    sqlite3_close(mem);
    /* 2. open the branch: a URI with vfs=arbor */
    sqlite3 *db;
    if (sqlite3_open_v2(argv[2], &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                        NULL) != SQLITE_OK) {
        fprintf(stderr, "open: %s\n", sqlite3_errmsg(db));
        return 1;
    }
    if (sqlite3_exec(db, argv[3], print_row, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "exec: %s\n", err);
        sqlite3_free(err);
        sqlite3_close(db);
        return 1;
    }
    return sqlite3_close(db) == SQLITE_OK ? 0 : 1;
}
