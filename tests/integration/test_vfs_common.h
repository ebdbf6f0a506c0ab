/*
 * test_vfs_common — a real cluster for the VFS tests (prefix vc_): three
 * safekeepers and a pageserver started with the harness, one tenant, and
 * helpers to create branches, build arbor URIs, run SQL and dump a
 * database's contents for comparison. Everything is stopped at exit (the
 * harness kills every child even when a test fails).
 */
#ifndef ARBOR_TEST_VFS_COMMON_H
#define ARBOR_TEST_VFS_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <sqlite3.h>

#include "harness.h"

extern h_sk vc_sk[3];
extern h_sk vc_ps;
extern char vc_tenant_hex[33];

/* One more pageserver argument for vc_cluster_up (set before it). */
extern const char *vc_ps_extra_arg;
/* Up to four more (NULL-terminated if fewer), after that one. */
extern const char *vc_ps_more_args[4];
/* Starts the cluster and creates the tenant (asserts on failure). */
void vc_cluster_up(void);
/* Stops everything; returns 0 if the pageserver exited cleanly. */
int vc_cluster_down(void);
/* The two above as a cmocka group setup and teardown, for the tests that
 * need nothing else: cmocka_run_group_tests(tests, vc_group_setup,
 * vc_group_teardown). The teardown fails unless the pageserver exited
 * cleanly (under ASan: no leak). */
int vc_group_setup(void **state);
int vc_group_teardown(void **state);

#ifdef ARBOR_COMPUTE_BIN
/* An arbor-compute serving branch "main" (PostgreSQL + HTTP, trust), for
 * the client tests. */
extern h_sk vc_compute;
/* One more arbor-compute argument (set before the setup); NULL: none. */
extern const char *vc_compute_extra_arg;
/* Group setup: the cluster, branch "main", the compute on it. Teardown:
 * fails unless the compute and the pageserver exited cleanly. */
int vc_compute_group_setup(void **state);
int vc_compute_group_teardown(void **state);
#endif

/* Creates a root timeline (parent NULL) or a branch of parent at lsn. */
void vc_create_branch(const char *name, const char *parent, uint64_t lsn);
/* The branch's timeline id, 32 lowercase hex chars. */
void vc_timeline_hex(const char *branch, char out[33]);
/* Waits until the pageserver ingested branch up to lsn. */
void vc_wait_ingested(const char *branch, uint64_t lsn);

/* "file:<branch>?vfs=arbor&pageserver=..&safekeepers=..&tenant=..&branch=<branch>[&extra]" */
void vc_uri(char *buf, size_t len, const char *branch, const char *extra);

sqlite3 *vc_open(const char *uri);           /* asserts */
int vc_open_rc(const char *uri, sqlite3 **out);
void vc_exec(sqlite3 *db, const char *sql);  /* asserts SQLITE_OK */
int vc_exec_rc(sqlite3 *db, const char *sql);/* extended result code */
int64_t vc_int(sqlite3 *db, const char *sql);/* first column of first row */
/* Every table's rows, in name / rowid order, as text (malloc'ed). */
char *vc_dump(sqlite3 *db);
uint64_t vc_lsn(sqlite3 *db);                /* ARBOR_FCNTL_LSN */
/* On a connection of its own to branch: runs sql (several statements
 * allowed, each its own transaction unless sql says otherwise), then the
 * LSN it ended at into *lsn (NULL: not wanted). Asserts. */
void vc_write(const char *branch, const char *sql, uint64_t *lsn);
/* On a connection of its own to branch: the first column of sql's first
 * row. Asserts. */
int64_t vc_query_int(const char *branch, const char *sql);

#endif
