/*
 * pgw_auth — see pgw_auth.h.
 */
#define _GNU_SOURCE
#include "pgw_auth.h"
#include "b64.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define AUTH_OK 0
#define AUTH_MD5 5
#define AUTH_SASL 10
#define AUTH_SASL_CONTINUE 11
#define AUTH_SASL_FINAL 12

int pgw_auth_method_parse(const char *s, pgw_auth_method *out)
{
    if (strcasecmp(s, "trust") == 0) {
        *out = PGW_AUTH_TRUST;
    } else if (strcasecmp(s, "md5") == 0) {
        *out = PGW_AUTH_MD5;
    } else if (strcasecmp(s, "scram") == 0 || strcasecmp(s, "scram-sha-256") == 0) {
        *out = PGW_AUTH_SCRAM;
    } else {
        return -EINVAL;
    }
    return 0;
}

static int sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

static int hmac256(const uint8_t *key, size_t keylen, const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    return HMAC(EVP_sha256(), key, (int)keylen, p, n, out, &len) ? 0 : -EIO;
}

int pgw_scram_secret_make(const char *password, pgw_scram_secret *out)
{
    uint8_t salted[32], client_key[32];
    memset(out, 0, sizeof(*out));
    out->iterations = PGW_SCRAM_ITERATIONS;
    if (RAND_bytes(out->salt, sizeof(out->salt)) != 1 ||
        PKCS5_PBKDF2_HMAC(password, (int)strlen(password), out->salt, sizeof(out->salt),
                          out->iterations, EVP_sha256(), 32, salted) != 1) {
        return -EIO;
    }
    int rc = hmac256(salted, 32, "Client Key", 10, client_key);
    if (rc == 0)
        rc = sha256(client_key, 32, out->stored_key);
    if (rc == 0)
        rc = hmac256(salted, 32, "Server Key", 10, out->server_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return rc;
}

bool pgw_scram_password_ok(const char *password, const pgw_scram_secret *s)
{
    uint8_t salted[32], client_key[32], stored[32];
    bool ok = s->iterations > 0 &&
              PKCS5_PBKDF2_HMAC(password, (int)strlen(password), s->salt, sizeof(s->salt),
                                s->iterations, EVP_sha256(), 32, salted) == 1 &&
              hmac256(salted, 32, "Client Key", 10, client_key) == 0 &&
              sha256(client_key, 32, stored) == 0 &&
              CRYPTO_memcmp(stored, s->stored_key, 32) == 0;
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return ok;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

int pgw_md5_response(const char *user, const char *password, const uint8_t salt[4],
                     char out[36])
{
    uint8_t d[16];
    unsigned int len = 16;
    char inner[33 + 4];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, password, strlen(password)) == 1 &&
             EVP_DigestUpdate(ctx, user, strlen(user)) == 1 &&
             EVP_DigestFinal_ex(ctx, d, &len) == 1;
    if (ok) {
        hex(d, 16, inner);
        memcpy(inner + 32, salt, 4);
        ok = EVP_Digest(inner, 36, d, &len, EVP_md5(), NULL) == 1;
    }
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        return -EIO;
    }
    memcpy(out, "md5", 3);
    hex(d, 16, out + 3);
    return 0;
}

static int fail_password(pgw_conn *c, const char *user)
{
    pgw_send_error(c, "FATAL", "28P01", "password authentication failed for user \"%s\"", user);
    pgw_conn_flush(c);
    return -EACCES;
}

static int protocol_error(pgw_conn *c, const char *what)
{
    pgw_send_error(c, "FATAL", "08P01", "%s", what);
    pgw_conn_flush(c);
    return -EPROTO;
}

/* Reads the client's next authentication message ('p'). */
static int read_password_msg(pgw_conn *c, pgw_rd *r)
{
    uint8_t type;
    const uint8_t *body;
    size_t len;
    int rc = pgw_conn_read_msg(c, &type, &body, &len);
    if (rc == -EPROTO) {
        return protocol_error(c, "invalid message length");
    }
    if (rc != 0) {
        return rc;
    }
    if (type != 'p') {
        return protocol_error(c, "expected password response");
    }
    pgw_rd_init(r, body, len);
    return 0;
}

static int auth_md5(pgw_conn *c, const pgw_auth_cfg *cfg, const char *user, bool user_ok)
{
    uint8_t salt[4];
    char expect[36];
    if (RAND_bytes(salt, 4) != 1 || pgw_md5_response(user, cfg->password, salt, expect) != 0) {
        return -EIO;
    }
    pgw_send_auth(c, AUTH_MD5, salt, 4);
    pgw_rd r;
    int rc = read_password_msg(c, &r);
    if (rc != 0) {
        return rc;
    }
    const char *got = pgw_rd_str(&r);
    if (!pgw_rd_done(&r)) {
        return protocol_error(c, "invalid password packet");
    }
    if (!user_ok || strlen(got) != 35 || CRYPTO_memcmp(got, expect, 35) != 0) {
        return fail_password(c, user);
    }
    return 0;
}

/* The SCRAM exchange's state between its two round trips. */
typedef struct scram_state {
    char gs2_header[64];
    bool plus;                  /* SCRAM-SHA-256-PLUS: c= carries cbind data */
    const uint8_t *cbind;
    size_t cbind_len;
    char client_first_bare[512];
    char server_first[512];
    char nonce[256];
} scram_state;

/* Parses the client-first message; fills st. 0 or -EPROTO. */
static int scram_client_first(scram_state *st, const char *msg, size_t len)
{
    if (len == 0 || len >= sizeof(st->client_first_bare) || memchr(msg, 0, len)) {
        return -EPROTO;
    }
    static const char pbind[] = "p=tls-server-end-point,";
    size_t skip;
    if (st->plus) {
        /* The mechanism with binding needs the binding, of our one type. */
        if (len < sizeof(pbind) || memcmp(msg, pbind, sizeof(pbind) - 1) != 0)
            return -EPROTO;
        skip = sizeof(pbind) - 1;
    } else if ((msg[0] == 'n' || (msg[0] == 'y' && st->cbind_len == 0)) && len >= 3 &&
               msg[1] == ',') {
        skip = 2;
    } else {
        /* "p=" without the -PLUS mechanism, or "y" while we offer binding:
         * a downgrade (RFC 5802 6). */
        return -EPROTO;
    }
    const char *comma = memchr(msg + skip, ',', len - skip); /* after the authzid */
    if (!comma) {
        return -EPROTO;
    }
    size_t gs2 = (size_t)(comma - msg) + 1;
    if (gs2 >= sizeof(st->gs2_header)) {
        return -EPROTO;
    }
    memcpy(st->gs2_header, msg, gs2);
    st->gs2_header[gs2] = 0;
    memcpy(st->client_first_bare, msg + gs2, len - gs2);
    st->client_first_bare[len - gs2] = 0;
    /* n=<user>,r=<nonce>[,ext...] */
    const char *bare = st->client_first_bare;
    if (strncmp(bare, "n=", 2) != 0) {
        return -EPROTO;
    }
    const char *r = strstr(bare, ",r=");
    if (!r) {
        return -EPROTO;
    }
    r += 3;
    size_t nlen = strcspn(r, ",");
    if (nlen == 0 || nlen > 128) {
        return -EPROTO;
    }
    memcpy(st->nonce, r, nlen);
    st->nonce[nlen] = 0;
    return 0;
}

static int scram_server_first(scram_state *st, const pgw_scram_secret *sec)
{
    uint8_t rnd[18];
    char snonce[32], salt[32];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return -EIO;
    }
    b64_encode(rnd, sizeof(rnd), snonce);
    b64_encode(sec->salt, sizeof(sec->salt), salt);
    size_t n = strlen(st->nonce);
    snprintf(st->nonce + n, sizeof(st->nonce) - n, "%s", snonce);
    snprintf(st->server_first, sizeof(st->server_first), "r=%s,s=%s,i=%d", st->nonce, salt,
             sec->iterations);
    return 0;
}

/*
 * Checks the client-final message. 0 and server_final filled; -EACCES for a
 * wrong proof; -EPROTO when malformed.
 */
static int scram_client_final(const scram_state *st, const pgw_scram_secret *sec,
                              const char *msg, size_t len, char *server_final, size_t cap)
{
    char buf[1024], auth[2048], expect_c[256];
    if (len == 0 || len >= sizeof(buf) || memchr(msg, 0, len)) {
        return -EPROTO;
    }
    memcpy(buf, msg, len);
    buf[len] = 0;
    char *p = strstr(buf, ",p=");
    if (!p) {
        return -EPROTO;
    }
    *p = 0; /* buf is now client-final-without-proof */
    const char *proof_b64 = p + 3;
    /* c= is base64(gs2 header [+ channel-binding data]) */
    uint8_t cb[64 + 64];
    size_t hl = strlen(st->gs2_header), cbl = st->plus ? st->cbind_len : 0;
    if (hl + cbl > sizeof(cb))
        return -EPROTO;
    memcpy(cb, st->gs2_header, hl);
    if (cbl)
        memcpy(cb + hl, st->cbind, cbl);
    b64_encode(cb, hl + cbl, expect_c);
    const char *r = strstr(buf, ",r=");
    if (strncmp(buf, "c=", 2) != 0 || !r || (size_t)(r - buf - 2) != strlen(expect_c) ||
        strncmp(buf + 2, expect_c, strlen(expect_c)) != 0) {
        return -EPROTO;
    }
    r += 3;
    size_t nlen = strcspn(r, ",");
    if (nlen != strlen(st->nonce) || strncmp(r, st->nonce, nlen) != 0) {
        return -EPROTO;
    }
    uint8_t proof[64];
    size_t proof_len;
    if (b64_decode(proof_b64, strlen(proof_b64), 0, proof, sizeof(proof), &proof_len) != 0 ||
        proof_len != 32) {
        return -EPROTO;
    }
    int n = snprintf(auth, sizeof(auth), "%s,%s,%s", st->client_first_bare, st->server_first,
                     buf);
    if (n < 0 || (size_t)n >= sizeof(auth)) {
        return -EPROTO;
    }
    uint8_t sig[32], client_key[32], stored[32];
    if (hmac256(sec->stored_key, 32, auth, (size_t)n, sig) != 0) {
        return -EIO;
    }
    for (int i = 0; i < 32; i++) {
        client_key[i] = proof[i] ^ sig[i];
    }
    if (sha256(client_key, 32, stored) != 0) {
        return -EIO;
    }
    if (CRYPTO_memcmp(stored, sec->stored_key, 32) != 0) {
        return -EACCES;
    }
    char v[64];
    if (hmac256(sec->server_key, 32, auth, (size_t)n, sig) != 0) {
        return -EIO;
    }
    b64_encode(sig, 32, v);
    snprintf(server_final, cap, "v=%s", v);
    return 0;
}

static int auth_scram(pgw_conn *c, const pgw_auth_cfg *cfg, const char *user, bool user_ok)
{
    static const char mechs[] = "SCRAM-SHA-256\0";
    static const char mechs_plus[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
    scram_state st;
    memset(&st, 0, sizeof(st));
    st.cbind = cfg->cbind;
    st.cbind_len = cfg->cbind ? cfg->cbind_len : 0;
    if (st.cbind_len) /* two NULs: end of list */
        pgw_send_auth(c, AUTH_SASL, mechs_plus, sizeof(mechs_plus));
    else
        pgw_send_auth(c, AUTH_SASL, mechs, sizeof(mechs));
    pgw_rd r;
    int rc = read_password_msg(c, &r);
    if (rc != 0) {
        return rc;
    }
    const char *mech = pgw_rd_str(&r);
    int32_t n = pgw_rd_i32(&r);
    const uint8_t *data = n >= 0 ? pgw_rd_bytes(&r, (size_t)n) : NULL;
    if (!data || !pgw_rd_done(&r)) {
        return protocol_error(c, "malformed SASLInitialResponse");
    }
    st.plus = st.cbind_len && strcmp(mech, "SCRAM-SHA-256-PLUS") == 0;
    if (strcmp(mech, "SCRAM-SHA-256") != 0 && !st.plus) {
        return protocol_error(c, "client selected an invalid SASL authentication mechanism");
    }
    if (scram_client_first(&st, (const char *)data, (size_t)n) != 0) {
        return protocol_error(c, "malformed SCRAM message");
    }
    rc = scram_server_first(&st, &cfg->scram);
    if (rc != 0) {
        return rc;
    }
    pgw_send_auth(c, AUTH_SASL_CONTINUE, st.server_first, strlen(st.server_first));
    rc = read_password_msg(c, &r);
    if (rc != 0) {
        return rc;
    }
    char final[128];
    rc = scram_client_final(&st, &cfg->scram, (const char *)r.p, r.len, final, sizeof(final));
    if (rc == -EPROTO) {
        return protocol_error(c, "malformed SCRAM message");
    }
    if (rc == -EACCES || (rc == 0 && !user_ok)) {
        return fail_password(c, user);
    }
    if (rc != 0) {
        return rc;
    }
    pgw_send_auth(c, AUTH_SASL_FINAL, final, strlen(final));
    return 0;
}

int pgw_auth_run(pgw_conn *c, const pgw_auth_cfg *cfg, const char *user)
{
    bool user_ok = !cfg->user || strcmp(cfg->user, user) == 0;
    switch (cfg->method) {
    case PGW_AUTH_TRUST:
        if (!user_ok) {
            pgw_send_error(c, "FATAL", "28000", "role \"%s\" does not exist", user);
            pgw_conn_flush(c);
            return -EACCES;
        }
        return 0;
    case PGW_AUTH_MD5:
        return auth_md5(c, cfg, user, user_ok);
    case PGW_AUTH_SCRAM:
        return auth_scram(c, cfg, user, user_ok);
    }
    return -EINVAL;
}
