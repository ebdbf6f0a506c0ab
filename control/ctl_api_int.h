/*
 * ctl_api_int — what the parts of ctl_api share (private: only ctl_api*.c
 * include it): the request and route types and the helpers used by more
 * than one part. ctl_api.c: helpers, rows, usage, the internal routes, the
 * route table; ctl_api_branches.c,
 * ctl_api_endpoints.c, ctl_api_projects.c (projects, roles, API keys, SQL
 * tokens), ctl_api_feed.c (webhooks, the paged change feed).
 */
#ifndef ARBOR_CTL_API_INT_H
#define ARBOR_CTL_API_INT_H

#include "ctl_api.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "ctl_auth.h"
#include "feed.h"
#include "ids.h"
#include "log.h"
#include "lsn.h"

#define MAX_PARAMS 4
#define DEFAULT_SUSPEND_S 300

typedef struct req {
    ctl_api_ctx *x;
    const http_request *h;
    json_t *body;                 /* parsed for POST/PATCH with a body; else {} */
    const char *pname[MAX_PARAMS];
    char pval[MAX_PARAMS][128];
    int n_params;
    int status;
    json_t *err;
} req;

typedef json_t *(*route_fn)(req *r);

typedef struct route {
    const char *method;
    const char *pattern;          /* "/v1/projects/{project_id}" */
    route_fn fn;
} route;


/* A point in history: "X/Y" (LSN) or a Unix time in seconds (a JSON
 * number, or a string "@<seconds>"). */
typedef struct point {
    bool given;
    lsn_t lsn;
    int64_t time_us;   /* when not an LSN */
} point;

/* An endpoint row with its branch name (ctl_api.c, ctl_api_endpoints.c). */
#define EP_SELECT                                                                              \
    "SELECT e.id, e.name, e.project_id, b.name AS branch, e.branch_id, e.kind, e.point_lsn,"  \
    " e.suspend_timeout_s, e.pool_mode, e.state, e.host, e.pg_port, e.http_port,"             \
    " e.created_at, e.last_active_at, e.managed_by, e.pid, e.run_dir, e.run_ticks"         \
    " FROM endpoints e LEFT JOIN branches b"                                                \
    " ON b.project_id = e.project_id AND b.id = e.branch_id"

/* ---- shared between the parts ---- */

json_t *api_fail(req *r, int status, const char *code, const char *fmt, ...);
json_t *api_fail_db(req *r);
json_t *api_fail_ps(req *r, int rc, const char *what, const char *msg);
const char *api_param(req *r, const char *name);
double api_now_s(void);
const char *api_jstr(json_t *o, const char *k);
int api_body_str(req *r, const char *key, const char **out);
int api_body_str_need(req *r, const char *key, const char **out);
bool api_name_ok(const char *s);
json_t *api_fail_name(req *r, const char *what, const char *s);
int api_body_point(req *r, const char *key, point *p);
/* Query parameter key as a time in seconds (Unix seconds or RFC 3339), def
 * when absent; 0, or -1 after a 422. */
int api_query_time(req *r, const char *key, double def, double *out);
json_t *api_load_project(req *r);
int api_tenant_of(req *r, arbor_id *t);
json_t *api_load_branch(req *r, const char *pid, const char *name);
json_t *api_load_endpoint(req *r, const char *pid, const char *name);
int64_t api_jid(json_t *o);
/* Query parameter key as a flag: true for "?key", "key=true" or "key=1",
 * false when absent or "false"/"0"; 0, or -1 after a 422. */
int api_query_bool(req *r, const char *key, bool *out);
void api_hex_id(const arbor_id *id, char out[ID_STR_SIZE]);
int api_sync_branches(req *r, const char *pid, psc_timeline **tls, size_t *n);
json_t *api_h_branches_list(req *r);
json_t *api_h_branch_get(req *r);
/* Timeline tl's info with last_record_lsn >= every commit acknowledged
 * before the call: the pageserver waits (bounded) until it has ingested
 * what the safekeepers hold. With fewer than a quorum of them answering,
 * the head is what it has ingested. 0, -ENOENT, or another psc error. */
int api_timeline_at_head(req *r, const arbor_id *t, const arbor_id *tl, psc_timeline *out,
                         psc_err *e);
int api_lsn_at_time(req *r, const arbor_id *t, const arbor_id *tl, int64_t time_us, lsn_t *lsn,
                    bool *past);
int api_point_at_time(req *r, const arbor_id *t, const arbor_id *tl, const char *name,
                      int64_t time_us, lsn_t *lsn);
int api_create_timeline(req *r, const char *pid, const char *name, json_t *parent,
                        const point *pt, psc_timeline *out);
json_t *api_h_branch_create(req *r);
json_t *api_h_branch_update(req *r);
void api_suspend_branch_endpoints(req *r, const char *pid, const char *branch_id, bool with_static);
json_t *api_h_branch_delete(req *r);
json_t *api_h_branch_reset(req *r);
json_t *api_h_branch_restore(req *r);
/* pool_mode NULL: "transaction". */
int api_create_endpoint_row(req *r, const char *pid, const char *name, const char *branch_id,
                            const char *kind, const char *lsn, int64_t timeout_s,
                            const char *pool_mode);
json_t *api_h_projects_list(req *r);
json_t *api_h_project_create(req *r);
json_t *api_h_project_get(req *r);
json_t *api_h_project_update(req *r);
json_t *api_h_roles_list(req *r);
json_t *api_h_role_create(req *r);
json_t *api_h_role_reset(req *r);
json_t *api_h_role_delete(req *r);
json_t *api_h_role_update(req *r);
/* The body's "pool_mode" (absent: *out untouched): 0, or -1 after a 400 /
 * 422 answer. */
int api_body_pool_mode(req *r, const char **out);
json_t *api_h_keys_list(req *r);
json_t *api_h_key_create(req *r);
json_t *api_h_key_delete(req *r);
json_t *api_h_tokens_list(req *r);
json_t *api_h_token_create(req *r);
json_t *api_h_token_delete(req *r);
json_t *api_h_endpoints_list(req *r);
json_t *api_h_endpoint_get(req *r);
json_t *api_h_endpoint_create(req *r);
json_t *api_h_endpoint_update(req *r);
json_t *api_h_endpoint_delete(req *r);
json_t *api_wake_row(req *r, json_t *e, bool with_secret);
json_t *api_endpoint_start(req *r, bool with_secret);
json_t *api_h_endpoint_start(req *r);
json_t *api_h_endpoint_suspend(req *r);
json_t *api_h_int_cli_endpoint_put(req *r);
json_t *api_h_int_cli_endpoint_delete(req *r);
/* Row e is an endpoint the arbor CLI runs (managed_by 'cli'). */
bool api_is_cli_endpoint(json_t *e);
json_t *api_h_hooks_list(req *r);
json_t *api_h_hook_get(req *r);
json_t *api_h_hook_create(req *r);
json_t *api_h_hook_update(req *r);
json_t *api_h_hook_resume(req *r);
json_t *api_h_hook_delete(req *r);
json_t *api_h_branch_changes(req *r);

#endif
