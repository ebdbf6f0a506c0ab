/*
 * ctl_auth — secrets of the control plane (prefix ctl_auth_): API keys
 * (random, shown once, stored as their SHA-256), role passwords (random,
 * shown once) and their SCRAM-SHA-256 verifiers, in PostgreSQL's format
 *   SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
 * which is what a proxy needs to run the exchange without the password;
 * webhook secrets and their HMAC-SHA256 signatures.
 * All functions are thread-safe; 0 or -EIO (libcrypto failed).
 */
#ifndef ARBOR_CTL_AUTH_H
#define ARBOR_CTL_AUTH_H

#include <stddef.h>

#define CTL_KEY_LEN 52       /* "arbor_" + 46 chars; buffers: CTL_KEY_LEN + 1 */
#define CTL_HASH_HEX 65      /* 64 hex digits + NUL */
#define CTL_PASSWORD_LEN 24
#define CTL_VERIFIER_MAX 200

int ctl_auth_new_key(char key[CTL_KEY_LEN + 1]);
int ctl_auth_hash_key(const char *key, char hash[CTL_HASH_HEX]);
int ctl_auth_new_password(char pw[CTL_PASSWORD_LEN + 1]);
int ctl_auth_scram_verifier(const char *password, char out[CTL_VERIFIER_MAX]);
/* HMAC-SHA256 of data under key, as 64 hex digits (webhook signatures). */
int ctl_auth_hmac_hex(const char *key, const void *data, size_t len, char out[CTL_HASH_HEX]);

#endif
