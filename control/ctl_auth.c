/* ctl_auth — see ctl_auth.h. */
#include "b64.h"
#include "ctl_auth.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "pgw_auth.h"

/* Letters and digits only: a key or password survives any shell or URL. */
static int random_text(char *out, size_t n)
{
    static const char abc[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    uint8_t r[64];
    if (n > sizeof(r) || RAND_bytes(r, (int)n) != 1)
        return -EIO;
    for (size_t i = 0; i < n; i++)
        out[i] = abc[r[i] % (sizeof(abc) - 1)];
    out[n] = 0;
    return 0;
}

int ctl_auth_new_key(char key[CTL_KEY_LEN + 1])
{
    memcpy(key, "arbor_", 6);
    return random_text(key + 6, CTL_KEY_LEN - 6);
}

int ctl_auth_hash_key(const char *key, char hash[CTL_HASH_HEX])
{
    uint8_t md[32];
    unsigned len = 0;
    if (EVP_Digest(key, strlen(key), md, &len, EVP_sha256(), NULL) != 1 || len != 32)
        return -EIO;
    for (int i = 0; i < 32; i++)
        snprintf(hash + 2 * i, 3, "%02x", md[i]);
    return 0;
}

int ctl_auth_new_password(char pw[CTL_PASSWORD_LEN + 1])
{
    return random_text(pw, CTL_PASSWORD_LEN);
}

int ctl_auth_scram_verifier(const char *password, char out[CTL_VERIFIER_MAX])
{
    pgw_scram_secret s;
    if (pgw_scram_secret_make(password, &s) != 0)
        return -EIO;
    char salt[32], stored[48], server[48];
    b64_encode(s.salt, sizeof(s.salt), salt);
    b64_encode(s.stored_key, sizeof(s.stored_key), stored);
    b64_encode(s.server_key, sizeof(s.server_key), server);
    snprintf(out, CTL_VERIFIER_MAX, "SCRAM-SHA-256$%d:%s$%s:%s", s.iterations, salt, stored,
             server);
    return 0;
}

int ctl_auth_hmac_hex(const char *key, const void *data, size_t len, char out[CTL_HASH_HEX])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!HMAC(EVP_sha256(), key, (int)strlen(key), data, len, md, &n) || n != 32)
        return -EIO;
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}
