/*
 * px_cplane — arbor-proxy's client of arbor-control's internal routes
 * (prefix pxc_; control/README.md, "Internal routes"): the SCRAM secret of
 * a role and the wake of an endpoint. Blocking (common/http_client), safe
 * from any thread; one pxc per proxy, read-only after pxc_open.
 *
 * Answers for a control plane that is down (pxc_set_fallback): the last
 * answer of each question (a role's secret, a wake, a token's project) is
 * kept for a while and given instead when arbor-control cannot be reached
 * at all (no connection, a timeout: not when it answers, even 503), so
 * that clients of computes that are running keep connecting through a
 * control-plane restart or outage. Passwords are still checked (against
 * the kept verifier) and each compute still checks its own secret: a kept
 * address of a compute that has stopped or been rebound fails the
 * connection, it does not reach another endpoint. What changed meanwhile
 * (a role deleted, a password reset) takes effect when the control plane
 * answers again.
 *
 * Errors: 0; PXC_ENOTFOUND (404: unknown role, project, branch or
 * endpoint; msg says which); PXC_ECONFLICT (409: a role in several
 * projects); PXC_EUNAVAIL (503, 5xx, or no answer: worth a retry); -EIO for
 * anything else (401: a bad API key). msg gets the control plane's
 * message, or curl's.
 */
#ifndef ARBOR_PX_CPLANE_H
#define ARBOR_PX_CPLANE_H

#include <stdbool.h>
#include <stdint.h>

#include "metrics.h"
#include "pgw_auth.h"

#define PXC_ENOTFOUND (-2001)
#define PXC_ECONFLICT (-2002)
#define PXC_EUNAVAIL (-2003)

typedef struct pxc {
    char url[256];      /* "http://host:port", no trailing slash */
    char key[128];      /* bearer API key */
    int timeout_ms;     /* per request */
    char port_file[512]; /* "" or arbor-control's port file: read at each
                            call, so that a restarted control plane on a
                            new port is found (host of url kept) */
    struct pxc_fallback *fallback;   /* pxc_set_fallback; NULL: off */
} pxc;

/* What a wake answers: where the endpoint's compute listens. */
typedef struct pxc_compute {
    char endpoint[96];
    char branch[96];
    char host[64];
    int pg_port;
    int http_port;      /* SQL over HTTP, Hrana */
    bool cold;          /* this wake bound a compute */
    char secret[80];    /* what the compute wants from the proxy ("" = none) */
} pxc_compute;

/* url: "http://host:port" (a trailing "/" or "/v1" is dropped). */
void pxc_open(pxc *c, const char *url, const char *key, int timeout_ms);
/* Follows arbor-control's port file (NULL or "": the url as given). */
void pxc_follow_port_file(pxc *c, const char *path);
/* Keeps answers for ttl_ms to give while the control plane cannot be
 * reached (0: off). reg (may be NULL): arbor_proxy_control_fallback_total.
 * Lives as long as the process (sessions on detached threads use it). */
void pxc_set_fallback(pxc *c, int64_t ttl_ms, met_registry *reg);

/* The SCRAM secret of role (in project, or found from the role when
 * project is NULL or ""); *project_out (cap 64) gets its project. With
 * endpoint (or else branch) given, *session (may be NULL) says whether the
 * role or that endpoint asks for a compute session per client connection
 * (pool_mode "session"); false when neither is given and the role does
 * not. */
int pxc_role_secret(const pxc *c, const char *project, const char *role, const char *endpoint,
                    const char *branch, pgw_scram_secret *out, char *project_out, bool *session,
                    char msg[256]);

/* Wakes the endpoint named `endpoint`, or (endpoint NULL) the read_write
 * endpoint of `branch` (created on first use). One try: retries are the
 * caller's (px_session). */
int pxc_wake(const pxc *c, const char *project, const char *branch, const char *endpoint,
             pxc_compute *out, char msg[256]);

/* The project of a bearer token of the HTTP door (control plane's
 * POST /v1/internal/tokens/verify). 0 and project_out (cap 64);
 * PXC_ENOTFOUND for an unknown token. */
int pxc_token_project(const pxc *c, const char *token, char *project_out, char msg[256]);

#endif
