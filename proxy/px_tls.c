/*
 * px_tls — see px_tls.h.
 */
#define _GNU_SOURCE
#include "px_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "alloc.h"

struct px_tls {
    SSL_CTX *ctx;
    uint8_t cbind[64];
    size_t cbind_len;
};

static void ssl_err(char err[256], const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[200] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, 256, "%s%s%s", what, buf[0] ? ": " : "", buf);
    ERR_clear_error();
}

/* ---- a local CA and certificate -------------------------------------------- */

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ex)
        return -1;
    int ok = X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return ok ? 0 : -1;
}

/* A certificate for key, named cn, signed by (issuer, issuer_key); a
 * self-signed one when issuer is NULL. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       long serial, bool ca)
{
    X509 *c = X509_new();
    if (!c)
        return NULL;
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), serial);
    X509_gmtime_adj(X509_getm_notBefore(c), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c), 10L * 365 * 24 * 3600);
    X509_set_pubkey(c, key);
    X509_NAME *name = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Arbor", -1,
                               -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                               0);
    X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name);
    X509 *iss = issuer ? issuer : c;
    int rc = 0;
    if (ca) {
        rc |= add_ext(c, iss, NID_basic_constraints, "critical,CA:TRUE");
        rc |= add_ext(c, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
        rc |= add_ext(c, iss, NID_subject_key_identifier, "hash");
    } else {
        rc |= add_ext(c, iss, NID_basic_constraints, "critical,CA:FALSE");
        rc |= add_ext(c, iss, NID_key_usage, "critical,digitalSignature,keyEncipherment");
        rc |= add_ext(c, iss, NID_ext_key_usage, "serverAuth");
        rc |= add_ext(c, iss, NID_subject_alt_name, "DNS:localhost,DNS:*.localhost,IP:127.0.0.1,IP:::1");
        rc |= add_ext(c, iss, NID_authority_key_identifier, "keyid:always");
    }
    if (rc != 0 || !X509_sign(c, issuer_key ? issuer_key : key, EVP_sha256())) {
        X509_free(c);
        return NULL;
    }
    return c;
}

static int write_pem(const char *path, X509 *cert, EVP_PKEY *key, char err[256])
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, key ? 0600 : 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        snprintf(err, 256, "cannot write %.180s: %s", tmp, strerror(errno));
        return -EIO;
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_X509(f, cert);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        snprintf(err, 256, "cannot write %.200s", path);
        return -EIO;
    }
    return 0;
}

int px_tls_make_local(const char *dir, char err[256])
{
    char ca_path[4200], crt_path[4200], key_path[4200];
    snprintf(ca_path, sizeof(ca_path), "%s/ca.crt", dir);
    snprintf(crt_path, sizeof(crt_path), "%s/server.crt", dir);
    snprintf(key_path, sizeof(key_path), "%s/server.key", dir);
    struct stat sb;
    if (stat(crt_path, &sb) == 0 && stat(key_path, &sb) == 0)
        return 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, 256, "cannot create %.180s: %s", dir, strerror(errno));
        return -errno;
    }
    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
    X509 *ca = ca_key ? make_cert(ca_key, "Arbor local CA", NULL, NULL, 1, true) : NULL;
    X509 *crt = ca && key ? make_cert(key, "localhost", ca, ca_key, 2, false) : NULL;
    int rc = -EIO;
    if (!crt) {
        ssl_err(err, "cannot make the local certificates");
    } else if ((rc = write_pem(ca_path, ca, NULL, err)) == 0 &&
               (rc = write_pem(key_path, NULL, key, err)) == 0) {
        /* The certificate last: its presence says the set is complete. */
        rc = write_pem(crt_path, crt, NULL, err);
    }
    X509_free(crt);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    return rc;
}

/* ---- the server context ----------------------------------------------------- */

/* RFC 5929 tls-server-end-point: the certificate's hash with its signature
 * digest, SHA-256 when that is MD5 or SHA-1 (as PostgreSQL does). */
static size_t cert_hash(X509 *cert, uint8_t out[64])
{
    int md_nid = NID_undef, pk_nid;
    if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid))
        return 0;
    if (md_nid == NID_md5 || md_nid == NID_sha1 || md_nid == NID_undef)
        md_nid = NID_sha256;
    const EVP_MD *md = EVP_get_digestbynid(md_nid);
    unsigned n = 0;
    if (!md || !X509_digest(cert, md, out, &n))
        return 0;
    return n;
}

int px_tls_load(const char *cert_file, const char *key_file, px_tls **out, char err[256])
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_err(err, "TLS context");
        return -EIO;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        ssl_err(err, cert_file);
        SSL_CTX_free(ctx);
        return -EIO;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err(err, key_file);
        SSL_CTX_free(ctx);
        return -EIO;
    }
    px_tls *t = az_calloc(1, sizeof(*t));
    t->ctx = ctx;
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    t->cbind_len = cert ? cert_hash(cert, t->cbind) : 0;
    *out = t;
    return 0;
}

void px_tls_free(px_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    az_free(t);
}

size_t px_tls_cbind(const px_tls *t, uint8_t out[64])
{
    memcpy(out, t->cbind, t->cbind_len);
    return t->cbind_len;
}

/* ---- sessions ------------------------------------------------------------------ */

px_tls_conn *px_tls_accept(px_tls *t, int fd, char err[256])
{
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        ssl_err(err, "TLS session");
        SSL_free(ssl);
        return NULL;
    }
    int rc = SSL_accept(ssl);
    if (rc != 1) {
        ssl_err(err, "TLS handshake failed");
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

void px_tls_close(px_tls_conn *c)
{
    if (!c)
        return;
    /* One close_notify, without waiting for the peer's (it may be gone). */
    SSL_set_quiet_shutdown(c, 0);
    SSL_shutdown(c);
    ERR_clear_error();
    SSL_free(c);
}

static ssize_t io_result(SSL *ssl, int n)
{
    if (n > 0)
        return n;
    int e = SSL_get_error(ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_SYSCALL && errno != 0)
        return -1;   /* errno from the socket (EAGAIN: SO_RCVTIMEO) */
    if (e == SSL_ERROR_SYSCALL && n == 0)
        return 0;    /* EOF without close_notify: an end all the same */
    errno = EIO;
    return -1;
}

ssize_t px_tls_read(void *conn, void *buf, size_t n)
{
    SSL *ssl = conn;
    errno = 0;
    int len = n > 1 << 30 ? 1 << 30 : (int)n;
    return io_result(ssl, SSL_read(ssl, buf, len));
}

ssize_t px_tls_write(void *conn, const void *buf, size_t n)
{
    SSL *ssl = conn;
    errno = 0;
    int len = n > 1 << 30 ? 1 << 30 : (int)n;
    return io_result(ssl, SSL_write(ssl, buf, len));
}

int px_tls_sni_project(px_tls_conn *c, char out[33])
{
    const char *name = c ? SSL_get_servername(c, TLSEXT_NAMETYPE_host_name) : NULL;
    if (!name || strlen(name) < 34 || name[32] != '.')
        return -ENOENT;
    for (int i = 0; i < 32; i++) {
        char ch = name[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return -ENOENT;
        out[i] = (char)(ch >= 'A' && ch <= 'F' ? ch + 32 : ch);
    }
    out[32] = 0;
    return 0;
}

int px_tls_pending(px_tls_conn *c)
{
    return c ? SSL_pending(c) : 0;
}
