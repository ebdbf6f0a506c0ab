/*
 * px_tls — TLS for arbor-proxy's PostgreSQL door (prefix px_tls_), on
 * OpenSSL: the server context, a self-signed local CA and certificate for
 * `arbor start`, the handshake after a client's SSLRequest, and the
 * tls-server-end-point data of SCRAM channel binding (RFC 5929: a hash of
 * the server certificate, as PostgreSQL computes it).
 *
 * A px_tls is read-only after px_tls_load and shared by every session
 * thread; each session's SSL belongs to its thread.
 */
#ifndef ARBOR_PX_TLS_H
#define ARBOR_PX_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct px_tls px_tls;
typedef struct ssl_st px_tls_conn;   /* OpenSSL's SSL */

/*
 * Makes DIR/ca.crt (a self-signed CA, 10 years), DIR/server.crt and
 * DIR/server.key (P-256, for localhost and 127.0.0.1, signed by that CA)
 * unless DIR/server.crt exists already; the CA's key is not kept. 0, or
 * -errno / -EIO with err set.
 */
int px_tls_make_local(const char *dir, char err[256]);

/* A server context from PEM files. 0, or -EIO with err set. */
int px_tls_load(const char *cert_file, const char *key_file, px_tls **out, char err[256]);
void px_tls_free(px_tls *t);

/* The handshake on a connected, blocking socket (its SO_RCVTIMEO bounds
 * it). NULL with err set when it fails. */
px_tls_conn *px_tls_accept(px_tls *t, int fd, char err[256]);
/* Shuts down and frees a session's TLS (NULL is fine); the socket stays. */
void px_tls_close(px_tls_conn *c);

/* recv/send shaped calls over a session's TLS: bytes moved, 0 on a clean
 * end (read), or -1 with errno (EAGAIN when a non-blocking socket would
 * block, EIO otherwise). */
ssize_t px_tls_read(void *conn, void *buf, size_t n);
ssize_t px_tls_write(void *conn, const void *buf, size_t n);
/* The first label of the server name the client sent (SNI) when it names
 * a project: 32 hex digits followed by '.' (e.g. <project>.db.example);
 * 0 and out filled, else -ENOENT. */
int px_tls_sni_project(px_tls_conn *c, char out[33]);
/* Bytes already decrypted and waiting in OpenSSL's buffer. */
int px_tls_pending(px_tls_conn *c);

/* tls-server-end-point channel-binding data of t's certificate (32..64
 * bytes) into out; its length, or 0. */
size_t px_tls_cbind(const px_tls *t, uint8_t out[64]);

#endif
