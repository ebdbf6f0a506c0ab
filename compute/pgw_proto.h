/*
 * pgw_proto — PostgreSQL frontend/backend protocol v3 framing (prefix pgw_).
 *
 * Wire format (all integers big-endian):
 *
 *   startup phase (no type byte):
 *     int32 length (including itself), int32 code, body
 *       code 196608 (3.0)   StartupMessage: (cstring name, cstring value)*, \0
 *       code 80877103       SSLRequest     (answered with the byte 'N')
 *       code 80877104       GSSENCRequest  (answered with the byte 'N')
 *       code 80877102       CancelRequest: int32 process id, int32 secret key
 *     A startup packet is 8 .. PGW_MAX_STARTUP_BYTES bytes long.
 *
 *   afterwards, in both directions:
 *     byte type, int32 length (including itself, not the type), body
 *     4 <= length <= PGW_MAX_MSG_BYTES + 4; anything else is a protocol
 *     violation (SQLSTATE 08P01) and ends the session.
 *
 * pgw_buf is a growable output buffer; pgw_msg_begin/pgw_msg_end frame one
 * message in it (the length is patched at the end). pgw_rd reads a received
 * body: reads past the end or a string without its NUL set `bad` and
 * return zeroes/"" so that a parser can check once at the end.
 *
 * pgw_conn is one client socket with buffered input and output. Output is
 * flushed before the connection would block waiting for input (so a
 * pipelining client gets all answers up to its Sync) and whenever it grows
 * past PGW_FLUSH_BYTES. A pgw_conn belongs to one thread.
 */
#ifndef ARBOR_PGW_PROTO_H
#define ARBOR_PGW_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PGW_MAX_MSG_BYTES ((size_t)64 << 20)
#define PGW_MAX_STARTUP_BYTES 10000
#define PGW_FLUSH_BYTES ((size_t)256 << 10)

#define PGW_PROTO_V3 196608
#define PGW_CODE_SSL 80877103
#define PGW_CODE_GSSENC 80877104
#define PGW_CODE_CANCEL 80877102

typedef struct pgw_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} pgw_buf;

void pgw_buf_free(pgw_buf *b);
void pgw_buf_put(pgw_buf *b, const void *p, size_t n);
void pgw_buf_u8(pgw_buf *b, uint8_t v);
void pgw_buf_i16(pgw_buf *b, int16_t v);
void pgw_buf_i32(pgw_buf *b, int32_t v);
void pgw_buf_i64(pgw_buf *b, int64_t v);
/* The string and its NUL. */
void pgw_buf_str(pgw_buf *b, const char *s);
/* Starts a message of this type; returns where its length goes. */
size_t pgw_msg_begin(pgw_buf *b, uint8_t type);
/* Writes the length of the message started at `start`. */
void pgw_msg_end(pgw_buf *b, size_t start);

typedef struct pgw_rd {
    const uint8_t *p;
    size_t len;
    size_t off;
    bool bad;
} pgw_rd;

void pgw_rd_init(pgw_rd *r, const void *p, size_t len);
uint8_t pgw_rd_u8(pgw_rd *r);
int16_t pgw_rd_i16(pgw_rd *r);
int32_t pgw_rd_i32(pgw_rd *r);
/* A NUL-terminated string inside the body (valid as long as the body). */
const char *pgw_rd_str(pgw_rd *r);
/* n bytes inside the body, or NULL (and bad) when fewer remain. */
const uint8_t *pgw_rd_bytes(pgw_rd *r, size_t n);
/* True when everything was read and nothing was missing. */
bool pgw_rd_done(const pgw_rd *r);

typedef struct pgw_conn {
    int fd;
    /* Optional transport over fd (arbor-proxy's TLS): recv/send shaped
     * calls on io; NULL = the socket itself. */
    ssize_t (*recv_fn)(void *io, void *buf, size_t n);
    ssize_t (*send_fn)(void *io, const void *buf, size_t n);
    void *io;
    pgw_buf out;
    uint8_t *in;
    size_t in_start;
    size_t in_end;
    size_t in_cap;
    int io_error;      /* sticky: first send error (-errno) */
} pgw_conn;

void pgw_conn_init(pgw_conn *c, int fd);
/* Frees the buffers; the socket is the caller's. */
void pgw_conn_free(pgw_conn *c);
/* Sends all buffered output. 0 or -errno (also sticky in io_error). */
int pgw_conn_flush(pgw_conn *c);
/* Flushes when the output buffer is larger than PGW_FLUSH_BYTES. */
int pgw_conn_maybe_flush(pgw_conn *c);
/*
 * Reads one startup packet: *code and the body after it (valid until the
 * next read). 0; -ECONNRESET on EOF; -EPROTO for a bad length; -errno.
 */
int pgw_conn_read_startup(pgw_conn *c, int32_t *code, const uint8_t **body, size_t *len);
/*
 * Reads one typed message (flushing output first if it has to wait). The
 * body stays valid until the next read. 0; -ECONNRESET on EOF; -EPROTO for
 * a bad length (*type is set); -errno.
 */
int pgw_conn_read_msg(pgw_conn *c, uint8_t *type, const uint8_t **body, size_t *len);

/* Frequent backend messages (buffered; flushed by the rules above). */
void pgw_send_error(pgw_conn *c, const char *severity, const char *sqlstate,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void pgw_send_notice(pgw_conn *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pgw_send_ready(pgw_conn *c, char status);
void pgw_send_param_status(pgw_conn *c, const char *name, const char *value);
void pgw_send_complete(pgw_conn *c, const char *tag);
/* AuthenticationXXX: code and its extra bytes. */
void pgw_send_auth(pgw_conn *c, int32_t code, const void *extra, size_t n);
/* A message with an empty body ('1', '2', '3', 'n', 'I', 's'). */
void pgw_send_empty(pgw_conn *c, uint8_t type);

#endif
