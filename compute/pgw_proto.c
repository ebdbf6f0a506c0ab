/*
 * pgw_proto — see pgw_proto.h.
 */
#define _GNU_SOURCE
#include "pgw_proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"

void pgw_buf_free(pgw_buf *b)
{
    az_free(b->data);
    memset(b, 0, sizeof(*b));
}

static void buf_reserve(pgw_buf *b, size_t n)
{
    if (b->len + n <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) {
        cap *= 2;
    }
    b->data = az_realloc(b->data, cap);
    b->cap = cap;
}

void pgw_buf_put(pgw_buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
}

void pgw_buf_u8(pgw_buf *b, uint8_t v)
{
    pgw_buf_put(b, &v, 1);
}

void pgw_buf_i16(pgw_buf *b, int16_t v)
{
    uint16_t u = (uint16_t)v;
    uint8_t x[2] = {(uint8_t)(u >> 8), (uint8_t)u};
    pgw_buf_put(b, x, 2);
}

void pgw_buf_i32(pgw_buf *b, int32_t v)
{
    uint32_t u = (uint32_t)v;
    uint8_t x[4] = {(uint8_t)(u >> 24), (uint8_t)(u >> 16), (uint8_t)(u >> 8), (uint8_t)u};
    pgw_buf_put(b, x, 4);
}

void pgw_buf_i64(pgw_buf *b, int64_t v)
{
    uint64_t u = (uint64_t)v;
    pgw_buf_i32(b, (int32_t)(uint32_t)(u >> 32));
    pgw_buf_i32(b, (int32_t)(uint32_t)u);
}

void pgw_buf_str(pgw_buf *b, const char *s)
{
    pgw_buf_put(b, s, strlen(s) + 1);
}

size_t pgw_msg_begin(pgw_buf *b, uint8_t type)
{
    pgw_buf_u8(b, type);
    size_t start = b->len;
    pgw_buf_i32(b, 0);
    return start;
}

void pgw_msg_end(pgw_buf *b, size_t start)
{
    uint32_t n = (uint32_t)(b->len - start);
    b->data[start] = (uint8_t)(n >> 24);
    b->data[start + 1] = (uint8_t)(n >> 16);
    b->data[start + 2] = (uint8_t)(n >> 8);
    b->data[start + 3] = (uint8_t)n;
}

void pgw_rd_init(pgw_rd *r, const void *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->off = 0;
    r->bad = false;
}

const uint8_t *pgw_rd_bytes(pgw_rd *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

uint8_t pgw_rd_u8(pgw_rd *r)
{
    const uint8_t *p = pgw_rd_bytes(r, 1);
    return p ? p[0] : 0;
}

int16_t pgw_rd_i16(pgw_rd *r)
{
    const uint8_t *p = pgw_rd_bytes(r, 2);
    return p ? (int16_t)(uint16_t)((p[0] << 8) | p[1]) : 0;
}

int32_t pgw_rd_i32(pgw_rd *r)
{
    const uint8_t *p = pgw_rd_bytes(r, 4);
    if (!p) {
        return 0;
    }
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                     ((uint32_t)p[2] << 8) | p[3]);
}

const char *pgw_rd_str(pgw_rd *r)
{
    if (r->bad) {
        return "";
    }
    const uint8_t *nul = memchr(r->p + r->off, 0, r->len - r->off);
    if (!nul) {
        r->bad = true;
        return "";
    }
    const char *s = (const char *)(r->p + r->off);
    r->off = (size_t)(nul - r->p) + 1;
    return s;
}

bool pgw_rd_done(const pgw_rd *r)
{
    return !r->bad && r->off == r->len;
}

void pgw_conn_init(pgw_conn *c, int fd)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
}

void pgw_conn_free(pgw_conn *c)
{
    pgw_buf_free(&c->out);
    az_free(c->in);
    c->in = NULL;
}

int pgw_conn_flush(pgw_conn *c)
{
    size_t off = 0;
    while (c->io_error == 0 && off < c->out.len) {
        ssize_t n = c->send_fn ? c->send_fn(c->io, c->out.data + off, c->out.len - off)
                               : send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            c->io_error = -errno;
            break;
        }
        off += (size_t)n;
    }
    c->out.len = 0;
    return c->io_error;
}

int pgw_conn_maybe_flush(pgw_conn *c)
{
    return c->out.len > PGW_FLUSH_BYTES ? pgw_conn_flush(c) : c->io_error;
}

/* Makes n bytes available at c->in + c->in_start. 0, -ECONNRESET, -errno. */
static int conn_fill(pgw_conn *c, size_t n)
{
    if (c->in_end - c->in_start >= n) {
        return 0;
    }
    if (c->in_start > 0) {
        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
    }
    if (n > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 8192;
        while (cap < n) {
            cap *= 2;
        }
        c->in = az_realloc(c->in, cap);
        c->in_cap = cap;
    }
    while (c->in_end < n) {
        int rc = pgw_conn_flush(c); /* never wait for input with answers unsent */
        if (rc != 0) {
            return rc;
        }
        ssize_t got = c->recv_fn ? c->recv_fn(c->io, c->in + c->in_end, c->in_cap - c->in_end)
                                 : recv(c->fd, c->in + c->in_end, c->in_cap - c->in_end, 0);
        if (got == 0) {
            return -ECONNRESET;
        }
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        c->in_end += (size_t)got;
    }
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int pgw_conn_read_startup(pgw_conn *c, int32_t *code, const uint8_t **body, size_t *len)
{
    int rc = conn_fill(c, 8);
    if (rc != 0) {
        return rc;
    }
    uint32_t n = be32(c->in + c->in_start);
    if (n < 8 || n > PGW_MAX_STARTUP_BYTES) {
        return -EPROTO;
    }
    rc = conn_fill(c, n);
    if (rc != 0) {
        return rc;
    }
    *code = (int32_t)be32(c->in + c->in_start + 4);
    *body = c->in + c->in_start + 8;
    *len = n - 8;
    c->in_start += n;
    return 0;
}

int pgw_conn_read_msg(pgw_conn *c, uint8_t *type, const uint8_t **body, size_t *len)
{
    int rc = conn_fill(c, 5);
    if (rc != 0) {
        return rc;
    }
    *type = c->in[c->in_start];
    uint32_t n = be32(c->in + c->in_start + 1);
    if (n < 4 || n - 4 > PGW_MAX_MSG_BYTES) {
        return -EPROTO;
    }
    rc = conn_fill(c, (size_t)n + 1);
    if (rc != 0) {
        return rc;
    }
    *body = c->in + c->in_start + 5;
    *len = n - 4;
    c->in_start += (size_t)n + 1;
    return 0;
}

static void send_report(pgw_conn *c, uint8_t type, const char *severity, const char *sqlstate,
                        const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t at = pgw_msg_begin(&c->out, type);
    pgw_buf_u8(&c->out, 'S');
    pgw_buf_str(&c->out, severity);
    pgw_buf_u8(&c->out, 'V');
    pgw_buf_str(&c->out, severity);
    pgw_buf_u8(&c->out, 'C');
    pgw_buf_str(&c->out, sqlstate);
    pgw_buf_u8(&c->out, 'M');
    pgw_buf_str(&c->out, msg);
    pgw_buf_u8(&c->out, 0);
    pgw_msg_end(&c->out, at);
}

void pgw_send_error(pgw_conn *c, const char *severity, const char *sqlstate,
                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_report(c, 'E', severity, sqlstate, fmt, ap);
    va_end(ap);
}

void pgw_send_notice(pgw_conn *c, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_report(c, 'N', "WARNING", sqlstate, fmt, ap);
    va_end(ap);
}

void pgw_send_ready(pgw_conn *c, char status)
{
    size_t at = pgw_msg_begin(&c->out, 'Z');
    pgw_buf_u8(&c->out, (uint8_t)status);
    pgw_msg_end(&c->out, at);
}

void pgw_send_param_status(pgw_conn *c, const char *name, const char *value)
{
    size_t at = pgw_msg_begin(&c->out, 'S');
    pgw_buf_str(&c->out, name);
    pgw_buf_str(&c->out, value);
    pgw_msg_end(&c->out, at);
}

void pgw_send_complete(pgw_conn *c, const char *tag)
{
    size_t at = pgw_msg_begin(&c->out, 'C');
    pgw_buf_str(&c->out, tag);
    pgw_msg_end(&c->out, at);
}

void pgw_send_auth(pgw_conn *c, int32_t code, const void *extra, size_t n)
{
    size_t at = pgw_msg_begin(&c->out, 'R');
    pgw_buf_i32(&c->out, code);
    pgw_buf_put(&c->out, extra, n);
    pgw_msg_end(&c->out, at);
}

void pgw_send_empty(pgw_conn *c, uint8_t type)
{
    size_t at = pgw_msg_begin(&c->out, type);
    pgw_msg_end(&c->out, at);
}
