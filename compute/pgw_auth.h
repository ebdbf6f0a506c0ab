/*
 * pgw_auth — password authentication of a PostgreSQL session (prefix pgw_).
 *
 * Methods: trust, md5 (AuthenticationMD5Password: the client answers
 * "md5" || hex(md5(hex(md5(password || user)) || salt))) and SCRAM-SHA-256
 * (RFC 5802 / RFC 7677, as PostgreSQL does it; channel binding is not
 * offered, so the client's GS2 header is "n,," or "y,,"):
 *
 *   server: AuthenticationSASL          "SCRAM-SHA-256\0\0"
 *   client: SASLInitialResponse         n,,n=<ignored>,r=<cnonce>
 *   server: AuthenticationSASLContinue  r=<cnonce><snonce>,s=<b64 salt>,i=4096
 *   client: SASLResponse                c=<b64 gs2 header>,r=<nonce>,p=<b64 proof>
 *   server: AuthenticationSASLFinal     v=<b64 ServerSignature>
 *
 * The SCRAM secret (salt, StoredKey, ServerKey) is derived once from the
 * password (PBKDF2-HMAC-SHA256, 4096 iterations) by pgw_scram_secret_make;
 * the exchange then costs a few HMACs. The user name of the startup packet
 * is the one that counts (libpq sends "n=" empty). The password is used as
 * given (no SASLprep: non-ASCII passwords may not match libpq's).
 *
 * A failed check sends ErrorResponse FATAL 28P01 (also for an unknown user,
 * after the full exchange, so that it reveals nothing).
 */
#ifndef ARBOR_PGW_AUTH_H
#define ARBOR_PGW_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>

#include "pgw_proto.h"

typedef enum { PGW_AUTH_TRUST = 0, PGW_AUTH_MD5, PGW_AUTH_SCRAM } pgw_auth_method;

#define PGW_SCRAM_ITERATIONS 4096

typedef struct pgw_scram_secret {
    uint8_t salt[16];
    uint8_t stored_key[32];
    uint8_t server_key[32];
    int iterations;
} pgw_scram_secret;

typedef struct pgw_auth_cfg {
    pgw_auth_method method;
    const char *user;       /* NULL: any user name is accepted */
    const char *password;   /* md5 and scram */
    pgw_scram_secret scram; /* scram: from pgw_scram_secret_make */
    /* SCRAM channel binding (RFC 5929 tls-server-end-point) over TLS: the
     * hash of the server certificate; cbind_len 0 = not offered. With it,
     * SCRAM-SHA-256-PLUS is offered, and a client that says it could bind
     * but thought the server could not ("y") is refused (a downgrade). */
    const uint8_t *cbind;
    size_t cbind_len;
} pgw_auth_cfg;

/* "trust" | "md5" | "scram" | "scram-sha-256" -> 0 and *out, or -EINVAL. */
int pgw_auth_method_parse(const char *s, pgw_auth_method *out);

/* Random salt + keys for password. 0 or -EIO (libcrypto failed). */
int pgw_scram_secret_make(const char *password, pgw_scram_secret *out);

/* Whether password is the one s was made from (its salt and iterations;
 * constant-time compare). For doors that take a password in clear over
 * TLS-or-loopback, e.g. arbor-proxy's HTTP Basic auth. */
bool pgw_scram_password_ok(const char *password, const pgw_scram_secret *s);

/* out = "md5" + 32 hex digits + NUL for user/password/salt. 0 or -EIO. */
int pgw_md5_response(const char *user, const char *password, const uint8_t salt[4],
                     char out[36]);

/*
 * Runs the exchange for `user` on c (does not send AuthenticationOk).
 * 0: authenticated. -EACCES: rejected (FATAL 28P01/28000 sent). -EPROTO:
 * protocol violation (FATAL 08P01 sent). -ECONNRESET / -errno: I/O.
 */
int pgw_auth_run(pgw_conn *c, const pgw_auth_cfg *cfg, const char *user);

#endif
