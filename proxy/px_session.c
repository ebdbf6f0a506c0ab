/* px_session — see px_session.h. */
#define _GNU_SOURCE
#include "px_session.h"
#include "px_pool.h"
#include "px_tls.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "pgw_auth.h"
#include "pgw_proto.h"
#include "px_limit.h"

#define MAX_PARAMS 32
#define RELAY_BUF_BYTES (64 << 10)
#define CONNECT_TIMEOUT_MS 5000

struct px_cancel_entry {
    int32_t pid, key;            /* what the client was given */
    int32_t cpid, ckey;          /* the compute's */
    char host[64];
    int port;
    px_cancel_entry *next;
};

/* What the client's StartupMessage asked for. */
typedef struct startup {
    const char *names[MAX_PARAMS];
    const char *values[MAX_PARAMS];
    int n;
    const char *user;
    const char *database;
    char endpoint[96];
    char project[64];
    char options[512];           /* what is left for the compute */
    bool session_pool;           /* options pool=session: a compute session of its own */
} startup;

/* ---- server ---------------------------------------------------------------- */

int px_server_init(px_server *s, met_registry *reg)
{
    pthread_mutex_init(&s->mu, NULL);
    s->cancels = NULL;
    if (RAND_bytes(s->mock_key, sizeof(s->mock_key)) != 1 ||
        RAND_bytes((uint8_t *)&s->next_pid, sizeof(s->next_pid)) != 1)
        return -EIO;
    s->next_pid = (s->next_pid % 1000000) + 1000;
    static const double wake_bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 };
    met_counter_new(reg, "arbor_proxy_connections_total", "client connections accepted",
                    &s->m_conns);
    met_counter_new(reg, "arbor_proxy_auth_failures_total",
                    "authentications refused (wrong password or unknown role)", &s->m_auth_fail);
    met_counter_new(reg, "arbor_proxy_wakes_cold_total",
                    "wakes that bound a compute (the endpoint was suspended)", &s->m_wake_cold);
    met_counter_new(reg, "arbor_proxy_wakes_warm_total",
                    "wakes of an endpoint that was active", &s->m_wake_warm);
    met_counter_new(reg, "arbor_proxy_wake_failures_total",
                    "sessions refused because no compute could be reached", &s->m_wake_fail);
    met_counter_new(reg, "arbor_proxy_cancels_total", "cancel requests sent on to a compute",
                    &s->m_cancels);
    met_counter_new(reg, "arbor_proxy_bytes_in_total", "bytes from clients to computes",
                    &s->m_bytes_in);
    met_counter_new(reg, "arbor_proxy_bytes_out_total", "bytes from computes to clients",
                    &s->m_bytes_out);
    met_counter_new(reg, "arbor_proxy_errors_total",
                    "sessions ended by an error before relaying", &s->m_errors);
    met_gauge_new(reg, "arbor_proxy_active_connections", "client connections open",
                  &s->m_active);
    met_histogram_new(reg, "arbor_proxy_wake_seconds",
                      "time from authenticated to connected to a compute", wake_bounds,
                      sizeof(wake_bounds) / sizeof(wake_bounds[0]), &s->m_wake_s);
    return 0;
}

void px_server_destroy(px_server *s)
{
    px_tls_free(s->tls);
    s->tls = NULL;
    pthread_mutex_lock(&s->mu);
    while (s->cancels) {
        px_cancel_entry *e = s->cancels;
        s->cancels = e->next;
        az_free(e);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&s->mu);
}

int px_routes_parse(px_server *s, const char *spec)
{
    s->n_routes = 0;
    if (!spec || !*spec)
        return 0;
    char *copy = az_strdup(spec), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '='), *colon = strrchr(t, ':');
        px_route *r = &s->routes[s->n_routes];
        if (s->n_routes == PX_MAX_ROUTES || !eq || !colon || colon < eq ||
            (size_t)(eq - t) >= sizeof(r->branch) || (size_t)(colon - eq - 1) >= sizeof(r->host) ||
            atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535) {
            rc = -EINVAL;
            break;
        }
        snprintf(r->branch, sizeof(r->branch), "%.*s", (int)(eq - t), t);
        snprintf(r->host, sizeof(r->host), "%.*s", (int)(colon - eq - 1), eq + 1);
        r->port = atoi(colon + 1);
        s->n_routes++;
    }
    az_free(copy);
    return rc;
}

/* ---- sockets ----------------------------------------------------------------- */

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -errno;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* A TCP connection to host:port within CONNECT_TIMEOUT_MS; blocking fd. */
static int tcp_connect(const char *host, int port, int *out)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &ai) != 0)
        return -EHOSTUNREACH;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int rc = fd < 0 ? -errno : 0;
    if (rc == 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS)
        rc = -errno;
    if (rc == 0) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int err = 0;
        socklen_t len = sizeof(err);
        if (poll(&p, 1, CONNECT_TIMEOUT_MS) != 1)
            rc = -ETIMEDOUT;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
            rc = -(err ? err : errno);
    }
    freeaddrinfo(ai);
    if (rc != 0) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *out = fd;
    return 0;
}

/* ---- cancel ------------------------------------------------------------------ */

static void cancel_register(px_server *s, px_cancel_entry *e)
{
    pthread_mutex_lock(&s->mu);
    e->pid = (int32_t)(s->next_pid++ & 0x7fffffff);
    e->next = s->cancels;
    s->cancels = e;
    pthread_mutex_unlock(&s->mu);
    RAND_bytes((uint8_t *)&e->key, sizeof(e->key));
}

static void cancel_unregister(px_server *s, px_cancel_entry *e)
{
    pthread_mutex_lock(&s->mu);
    for (px_cancel_entry **pp = &s->cancels; *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* A CancelRequest from a client: sent on to the compute whose session has
 * this key; an unknown key is ignored (as PostgreSQL does). */
static void cancel_forward(px_server *s, const uint8_t *body, size_t len)
{
    pgw_rd r;
    pgw_rd_init(&r, body, len);
    int32_t pid = pgw_rd_i32(&r), key = pgw_rd_i32(&r);
    if (!pgw_rd_done(&r))
        return;
    px_cancel_entry found = { 0 };
    bool ok = false;
    pthread_mutex_lock(&s->mu);
    for (px_cancel_entry *e = s->cancels; e; e = e->next) {
        if (e->pid == pid && e->key == key) {
            found = *e;
            ok = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    int fd;
    if (!ok || found.port == 0 || tcp_connect(found.host, found.port, &fd) != 0)
        return;     /* (port 0: a pooled client between transactions) */
    pgw_buf b = { 0 };
    pgw_buf_i32(&b, 16);
    pgw_buf_i32(&b, PGW_CODE_CANCEL);
    pgw_buf_i32(&b, found.cpid);
    pgw_buf_i32(&b, found.ckey);
    if (write_all(fd, b.data, b.len) == 0)
        met_counter_inc(s->m_cancels);
    pgw_buf_free(&b);
    close(fd);
}

/* ---- startup ----------------------------------------------------------------- */

/* Splits the options into the proxy's (endpoint=, project=) and the rest. */
static void parse_options(startup *st, const char *opts)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", opts);
    size_t used = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (strncmp(t, "endpoint=", 9) == 0)
            snprintf(st->endpoint, sizeof(st->endpoint), "%s", t + 9);
        else if (strncmp(t, "project=", 8) == 0)
            snprintf(st->project, sizeof(st->project), "%s", t + 8);
        else if (strcmp(t, "pool=session") == 0)
            st->session_pool = true;
        else if (strcmp(t, "pool=transaction") == 0)
            st->session_pool = false;
        else if (used + strlen(t) + 2 < sizeof(st->options))
            used += (size_t)snprintf(st->options + used, sizeof(st->options) - used, "%s%s",
                                     used ? " " : "", t);
    }
}

/* Parses a StartupMessage body (kept by the caller: strings point into it). */
static int parse_startup(startup *st, const uint8_t *body, size_t len)
{
    memset(st, 0, sizeof(*st));
    pgw_rd r;
    pgw_rd_init(&r, body, len);
    for (;;) {
        const char *name = pgw_rd_str(&r);
        if (r.bad)
            return -EPROTO;
        if (!*name)
            break;
        const char *value = pgw_rd_str(&r);
        if (r.bad || st->n == MAX_PARAMS)
            return -EPROTO;
        if (strcmp(name, "user") == 0)
            st->user = value;
        else if (strcmp(name, "database") == 0)
            st->database = value;
        else if (strcmp(name, "options") == 0)
            parse_options(st, value);
        else {
            st->names[st->n] = name;
            st->values[st->n++] = value;
        }
    }
    if (!st->database || !*st->database)
        st->database = "main";
    return 0;
}

/* Reads startup packets until a StartupMessage, answering SSL/GSS requests
 * 'N' and serving a CancelRequest. 1 = handled (cancel; the session ends);
 * 0 = *copy holds the StartupMessage body (az_free it); <0 error. */
static int read_startup(px_server *s, pgw_conn *c, uint8_t **copy, size_t *len)
{
    for (int i = 0; i < 3; i++) {
        int32_t code;
        const uint8_t *body;
        size_t n;
        int rc = pgw_conn_read_startup(c, &code, &body, &n);
        if (rc != 0)
            return rc;
        if (code == PGW_CODE_SSL && s->tls && !c->io) {
            /* Nothing may follow the SSLRequest in the clear: bytes sent
             * before the handshake would be taken as coming over TLS. */
            if (c->in_end != c->in_start) {
                pgw_send_error(c, "FATAL", "08P01", "unencrypted data after SSL request");
                return -EPROTO;
            }
            if (write_all(c->fd, "S", 1) != 0)
                return -EIO;
            char err[256];
            px_tls_conn *t = px_tls_accept(s->tls, c->fd, err);
            if (!t) {
                log_info("proxy: %s", err);
                return -EIO;
            }
            c->io = t;
            c->recv_fn = px_tls_read;
            c->send_fn = px_tls_write;
            continue;
        }
        if (code == PGW_CODE_SSL || code == PGW_CODE_GSSENC) {
            if (write_all(c->fd, "N", 1) != 0)
                return -EIO;
            continue;
        }
        if (code == PGW_CODE_CANCEL) {
            cancel_forward(s, body, n);
            return 1;
        }
        if (code != PGW_PROTO_V3) {
            pgw_send_error(c, "FATAL", "0A000", "unsupported frontend protocol %d.%d",
                           code >> 16, code & 0xffff);
            return -EPROTO;
        }
        *copy = az_malloc(n + 1);
        memcpy(*copy, body, n);
        (*copy)[n] = 0;
        *len = n;
        return 0;
    }
    return -EPROTO;
}

/* ---- authentication ---------------------------------------------------------- */

/* A secret that no password matches, the same for a role every time (so a
 * prober sees a stable salt, as for a real role). */
static void mock_secret(const px_server *s, const char *role, pgw_scram_secret *out)
{
    uint8_t mac[32];
    unsigned mlen = 0;
    HMAC(EVP_sha256(), s->mock_key, sizeof(s->mock_key), (const uint8_t *)role, strlen(role),
         mac, &mlen);
    memset(out, 0, sizeof(*out));
    memcpy(out->salt, mac, sizeof(out->salt));
    RAND_bytes(out->stored_key, sizeof(out->stored_key));
    RAND_bytes(out->server_key, sizeof(out->server_key));
    out->iterations = PGW_SCRAM_ITERATIONS;
}

/* SCRAM against the control plane's verifier. 0: authenticated, and
 * st->project is the role's project. Else the error was sent. */
static int authenticate(px_server *s, pgw_conn *c, startup *st, const char *peer)
{
    pgw_auth_cfg cfg = { .method = PGW_AUTH_SCRAM, .user = st->user };
    uint8_t cbind[64];
    if (c->io) {   /* over TLS: offer SCRAM-SHA-256-PLUS */
        cfg.cbind_len = px_tls_cbind(s->tls, cbind);
        cfg.cbind = cbind;
    }
    char msg[256], project[64] = "";
    const char *ep = st->endpoint[0] ? st->endpoint : st->database;
    int wait_s = pxl_auth_blocked(s->limits, "pg", ep, peer);
    if (wait_s > 0) {
        pgw_send_error(c, "FATAL", "53300", "too many failed authentication attempts for \"%s\" "
                       "from this address: try again in %d s", ep, wait_s);
        return -EACCES;
    }
    bool session = false;
    int rc = pxc_role_secret(&s->cp, st->project, st->user, st->endpoint, st->database,
                             &cfg.scram, project, &session, msg);
    if (rc == PXC_ENOTFOUND) {
        mock_secret(s, st->user, &cfg.scram);
        cfg.user = "";                      /* matches no role name: the check fails */
    } else if (rc == PXC_ECONFLICT) {
        pgw_send_error(c, "FATAL", "28000", "%s; name it with options=project%%3D<id>", msg);
        return -EACCES;
    } else if (rc != 0) {
        log_warn("proxy: secret of role %s: %s", st->user, msg);
        pgw_send_error(c, "FATAL", "08006", "the control plane cannot authenticate now: %s",
                       msg);
        return -EIO;
    }
    rc = pgw_auth_run(c, &cfg, st->user);
    if (rc == -EACCES) {
        met_counter_inc(s->m_auth_fail);
        pxl_auth_failed(s->limits, "pg", ep, peer);
    }
    if (rc != 0)
        return rc;
    if (!st->project[0])
        snprintf(st->project, sizeof(st->project), "%s", project);
    /* The role or the endpoint wants a session per connection (temp
     * tables, session PRAGMAs): that wins over the client's pool=. */
    st->session_pool |= session;
    pgw_send_auth(c, 0, NULL, 0);           /* AuthenticationOk */
    return pgw_conn_flush(c);
}

/* ---- the compute ------------------------------------------------------------- */

enum { CS_OK = 0, CS_RETRY = 1, CS_FATAL = 2 };

/* The SQLSTATE of an ErrorResponse body ("" if none). */
/* Field f of an ErrorResponse body into out ("" when absent). */
static void error_field(const uint8_t *body, size_t len, uint8_t f, char *out, size_t cap)
{
    out[0] = 0;
    for (size_t i = 0; i < len && body[i];) {
        uint8_t k = body[i++];
        const char *v = (const char *)body + i;
        size_t n = strnlen(v, len - i);
        if (k == f)
            snprintf(out, cap, "%.*s", (int)n, v);
        i += n + 1;
    }
}

static void error_code(const uint8_t *body, size_t len, char out[6])
{
    error_field(body, len, 'C', out, 6);
}

/* An ErrorResponse that ends the session (FATAL or PANIC): the client has
 * been told why, and needs no second error from the proxy. */
static bool error_ends_session(const uint8_t *body, size_t len)
{
    char sev[16];
    error_field(body, len, 'V', sev, sizeof(sev));   /* not localized */
    if (!sev[0])
        error_field(body, len, 'S', sev, sizeof(sev));
    return strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0;
}

static void put_msg(pgw_buf *b, uint8_t type, const uint8_t *body, size_t len)
{
    size_t at = pgw_msg_begin(b, type);
    pgw_buf_put(b, body, len);
    pgw_msg_end(b, at);
}

/* Starts a session on the compute at fd as the client's role and reads its
 * answers up to ReadyForQuery into *hello (BackendKeyData taken out into
 * *e). CS_OK; CS_RETRY (the compute is going away or not bound: wake
 * again); CS_FATAL (its ErrorResponse is in *hello, or msg says why). */
static int compute_startup(int fd, const startup *st, const char *branch, const char *secret,
                           px_cancel_entry *e, pgw_buf *hello, char msg[256])
{
    pgw_buf b = { 0 };
    pgw_buf_i32(&b, 0);
    pgw_buf_i32(&b, PGW_PROTO_V3);
    pgw_buf_str(&b, "user");
    pgw_buf_str(&b, st->user);
    pgw_buf_str(&b, "database");
    pgw_buf_str(&b, branch);
    if (st->options[0]) {
        pgw_buf_str(&b, "options");
        pgw_buf_str(&b, st->options);
    }
    for (int i = 0; i < st->n; i++) {
        if (strcmp(st->names[i], "arbor.compute_secret") == 0)
            continue;                       /* only the proxy's own goes on */
        pgw_buf_str(&b, st->names[i]);
        pgw_buf_str(&b, st->values[i]);
    }
    if (secret && *secret) {                /* computes of the control plane want it */
        pgw_buf_str(&b, "arbor.compute_secret");
        pgw_buf_str(&b, secret);
    }
    pgw_buf_u8(&b, 0);
    uint32_t n = htonl((uint32_t)b.len);
    memcpy(b.data, &n, 4);
    int rc = write_all(fd, b.data, b.len) == 0 ? CS_OK : CS_RETRY;
    pgw_buf_free(&b);
    if (rc != CS_OK) {
        snprintf(msg, 256, "the compute closed the connection");
        return rc;
    }
    pgw_conn cc;
    pgw_conn_init(&cc, fd);
    for (;;) {
        uint8_t type;
        const uint8_t *body;
        size_t len;
        if (pgw_conn_read_msg(&cc, &type, &body, &len) != 0) {
            snprintf(msg, 256, "the compute closed the connection during start-up");
            rc = CS_RETRY;
            break;
        }
        if (type == 'R') {
            pgw_rd r;
            pgw_rd_init(&r, body, len);
            if (pgw_rd_i32(&r) != 0) {
                snprintf(msg, 256, "the compute asks for a password (it must trust the proxy)");
                rc = CS_FATAL;
                break;
            }
        } else if (type == 'K' && len == 8) {
            pgw_rd r;
            pgw_rd_init(&r, body, len);
            e->cpid = pgw_rd_i32(&r);
            e->ckey = pgw_rd_i32(&r);
        } else if (type == 'E') {
            char code[6];
            error_code(body, len, code);
            bool gone = strcmp(code, "08006") == 0 || strcmp(code, "57P01") == 0 ||
                        strcmp(code, "57P03") == 0 || strcmp(code, "53300") == 0;
            snprintf(msg, 256, "the compute refused the session (SQLSTATE %s)", code);
            put_msg(hello, type, body, len);
            rc = gone ? CS_RETRY : CS_FATAL;
            break;
        } else {
            put_msg(hello, type, body, len);
            if (type == 'Z') {
                rc = CS_OK;
                break;
            }
        }
    }
    pgw_conn_free(&cc);   /* nothing follows ReadyForQuery unasked */
    return rc;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static const px_route *find_route(const px_server *s, const startup *st)
{
    for (int i = 0; !st->endpoint[0] && i < s->n_routes; i++)
        if (strcmp(s->routes[i].branch, st->database) == 0)
            return &s->routes[i];
    return NULL;
}

/* WAKE + CONNECT with bounded retries. 0 and *cfd (a compute session ready
 * for queries, its greeting in *hello); else the error was sent to c. */
static int reach_compute(px_server *s, pgw_conn *c, const startup *st, px_cancel_entry *e,
                         pgw_buf *hello, int *cfd)
{
    char msg[256] = "no attempt";
    const px_route *route = find_route(s, st);
    int64_t t0 = clock_mono_ms();
    for (int attempt = 0; attempt < s->wake_attempts; attempt++) {
        if (attempt > 0) {
            int pause = s->wake_backoff_ms << (attempt - 1 < 10 ? attempt - 1 : 10);
            sleep_ms(pause > 2000 ? 2000 : pause);
        }
        pxc_compute w = { 0 };
        if (route) {
            snprintf(w.host, sizeof(w.host), "%s", route->host);
            snprintf(w.branch, sizeof(w.branch), "%s", route->branch);
            w.pg_port = route->port;
        } else {
            int rc = pxc_wake(&s->cp, st->project, st->database,
                              st->endpoint[0] ? st->endpoint : NULL, &w, msg);
            if (rc == PXC_ENOTFOUND) {
                if (st->endpoint[0])
                    pgw_send_error(c, "FATAL", "3D000", "endpoint \"%s\" does not exist: %s",
                                   st->endpoint, msg);
                else
                    pgw_send_error(c, "FATAL", "3D000", "database \"%s\" does not exist: %s",
                                   st->database, msg);
                return -ENOENT;
            }
            if (rc == PXC_EUNAVAIL)
                continue;
            if (rc != 0) {
                pgw_send_error(c, "FATAL", "08006", "cannot wake the endpoint: %s", msg);
                return -EIO;
            }
        }
        int fd;
        int rc = tcp_connect(w.host, w.pg_port, &fd);
        if (rc != 0) {
            snprintf(msg, sizeof(msg), "compute at %s:%d: %s", w.host, w.pg_port,
                     strerror(-rc));
            continue;
        }
        hello->len = 0;
        rc = compute_startup(fd, st, w.branch[0] ? w.branch : st->database, w.secret, e, hello,
                             msg);
        if (rc == CS_OK) {
            met_counter_inc(w.cold ? s->m_wake_cold : s->m_wake_warm);
            met_histogram_observe(s->m_wake_s, (double)(clock_mono_ms() - t0) / 1000.0);
            snprintf(e->host, sizeof(e->host), "%s", w.host);
            e->port = w.pg_port;
            *cfd = fd;
            return 0;
        }
        close(fd);
        if (rc == CS_FATAL) {
            if (hello->len > 0) {
                pgw_buf_put(&c->out, hello->data, hello->len);
            } else {
                pgw_send_error(c, "FATAL", "08006", "%s", msg);
            }
            return -EIO;
        }
    }
    met_counter_inc(s->m_wake_fail);
    pgw_send_error(c, "FATAL", "57P03",
                   "could not reach a compute for %s \"%s\" after %d attempts: %s",
                   st->endpoint[0] ? "endpoint" : "branch",
                   st->endpoint[0] ? st->endpoint : st->database, s->wake_attempts, msg);
    return -EAGAIN;
}

/* ---- relay ----------------------------------------------------------------------- */

typedef struct pipe_dir {
    int from, to;
    void *from_tls, *to_tls;   /* px_tls_conn of a TLS side, else NULL */
    uint8_t *buf;
    size_t start, end;
    bool eof;
    met_counter *bytes;
} pipe_dir;

static ssize_t side_recv(int fd, void *tls, void *buf, size_t n)
{
    return tls ? px_tls_read(tls, buf, n) : recv(fd, buf, n, 0);
}

static ssize_t side_send(int fd, void *tls, const void *buf, size_t n)
{
    return tls ? px_tls_write(tls, buf, n) : send(fd, buf, n, MSG_NOSIGNAL);
}

/* Moves what can move without blocking. -1 when the direction is finished
 * (EOF drained, or an error). */
static int pipe_step(pipe_dir *d, short rev_from, short rev_to)
{
    if (d->end == d->start && !d->eof && (rev_from & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n = side_recv(d->from, d->from_tls, d->buf, RELAY_BUF_BYTES);
        if (n > 0) {
            d->start = 0;
            d->end = (size_t)n;
            met_counter_add(d->bytes, (uint64_t)n);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            d->eof = true;
        }
    }
    if (d->end > d->start) {
        ssize_t n = side_send(d->to, d->to_tls, d->buf + d->start, d->end - d->start);
        if (n > 0)
            d->start += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
    }
    return d->eof && d->end == d->start ? -1 : 0;
}

/* Relays until the compute is done, or the client can no longer be
 * written to. The client's end (EOF: a half-close, or a close after
 * Terminate) is passed on as a half-close to the compute, which answers
 * what it got before it closes, as PostgreSQL does.
 * ctls: the client's TLS (NULL: plain). */
static void relay(px_server *s, int cfd, px_tls_conn *ctls, int sfd)
{
    fcntl(cfd, F_SETFL, fcntl(cfd, F_GETFL) | O_NONBLOCK);
    fcntl(sfd, F_SETFL, fcntl(sfd, F_GETFL) | O_NONBLOCK);
    pipe_dir up = { .from = cfd, .to = sfd, .from_tls = ctls,
                    .buf = az_malloc(RELAY_BUF_BYTES), .bytes = s->m_bytes_in };
    pipe_dir down = { .from = sfd, .to = cfd, .to_tls = ctls,
                      .buf = az_malloc(RELAY_BUF_BYTES), .bytes = s->m_bytes_out };
    bool up_done = false;
    for (;;) {
        /* After the client's end, its socket is watched only to write to
         * (a closed one would report POLLHUP at once, over and over). */
        struct pollfd p[2] = { { .fd = !up_done || down.end > down.start ? cfd : -1 },
                               { .fd = sfd } };
        p[0].events = (!up_done && up.end == up.start ? POLLIN : 0) |
                      (down.end > down.start ? POLLOUT : 0);
        p[1].events = (down.end == down.start ? POLLIN : 0) |
                      (!up_done && up.end > up.start ? POLLOUT : 0);
        /* Bytes TLS decrypted already wait in OpenSSL, not in the socket. */
        bool buffered = !up_done && up.end == up.start && px_tls_pending(ctls) > 0;
        if (poll(p, 2, buffered ? 0 : -1) < 0 && errno != EINTR)
            break;
        if (buffered)
            p[0].revents |= POLLIN;
        if (!up_done && pipe_step(&up, p[0].revents, p[1].revents) != 0) {
            if (!up.eof)
                break;         /* the compute cannot be written to */
            up_done = true;
            shutdown(sfd, SHUT_WR);
        }
        if (pipe_step(&down, p[1].revents, p[0].revents) != 0)
            break;
    }
    az_free(up.buf);
    az_free(down.buf);
}

/* ---- transaction pooling ------------------------------------------------------ */

/* A client's named prepared statement: its Parse message, kept to prepare
 * it again on whichever pooled session serves the client next. */
typedef struct cstmt {
    char *name;
    uint8_t *msg;          /* the whole Parse message, framed */
    size_t len;
    uint64_t hash;
    struct cstmt *next;
} cstmt;

typedef struct pooled {
    px_server *s;
    pgw_conn *c;
    const startup *st;
    px_cancel_entry *e;
    pxc_compute w;         /* the last wake answer */
    bool have_w;
    bool sent_error;       /* an error went to the client already */
    bool greeted;          /* past the start-up: a pool wait is not FATAL */
    bool waited_out;       /* the last pooled_get: pool wait over (ERROR sent) */
    pgw_buf fatal;         /* a compute's ErrorResponse at start-up */
    char msg[256];
    cstmt *stmts;
} pooled;

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* pxp_connect_fn: a new compute session for the pool (the client's role,
 * branch and options; the compute's secret). */
static int pool_connect(void *arg, int *fd, int32_t *cpid, int32_t *ckey, uint8_t **hello,
                        size_t *hello_len)
{
    pooled *x = arg;
    int tfd;
    int rc = tcp_connect(x->w.host, x->w.pg_port, &tfd);
    if (rc != 0) {
        snprintf(x->msg, sizeof(x->msg), "compute at %s:%d: %s", x->w.host, x->w.pg_port,
                 strerror(-rc));
        return -ECONNREFUSED;
    }
    px_cancel_entry tmp = { 0 };
    pgw_buf h = { 0 };
    rc = compute_startup(tfd, x->st, x->w.branch[0] ? x->w.branch : x->st->database,
                         x->w.secret, &tmp, &h, x->msg);
    if (rc != CS_OK) {
        close(tfd);
        if (rc == CS_FATAL && h.len) {
            x->fatal.len = 0;
            pgw_buf_put(&x->fatal, h.data, h.len);
        }
        pgw_buf_free(&h);
        return rc == CS_RETRY ? -ECONNREFUSED : -EPROTO;
    }
    assert(h.len >= 6 && h.data[h.len - 6] == 'Z');
    *hello_len = h.len - 6;          /* ParameterStatus...; not its ReadyForQuery */
    *hello = az_malloc(*hello_len ? *hello_len : 1);
    memcpy(*hello, h.data, *hello_len);
    pgw_buf_free(&h);
    *fd = tfd;
    *cpid = tmp.cpid;
    *ckey = tmp.ckey;
    return 0;
}

/* A pooled compute session for the client's next transaction: WAKE (or the
 * last wake answer), then the pool of that compute. A compute that went
 * away (suspended between two transactions) is woken again, within the
 * attempt budget. 0 and *out; else the error was sent to the client. */
static int pooled_get(pooled *x, pxp_conn **out)
{
    px_server *s = x->s;
    const startup *st = x->st;
    const px_route *route = find_route(s, st);
    int64_t t0 = clock_mono_ms();
    snprintf(x->msg, sizeof(x->msg), "no attempt");
    for (int attempt = 0; attempt < s->wake_attempts; attempt++) {
        if (attempt > 0) {
            int pause = s->wake_backoff_ms << (attempt - 1 < 10 ? attempt - 1 : 10);
            sleep_ms(pause > 2000 ? 2000 : pause);
        }
        bool woke = false;
        if (!x->have_w) {
            memset(&x->w, 0, sizeof(x->w));
            if (route) {
                snprintf(x->w.host, sizeof(x->w.host), "%s", route->host);
                snprintf(x->w.branch, sizeof(x->w.branch), "%s", route->branch);
                x->w.pg_port = route->port;
            } else {
                int rc = pxc_wake(&s->cp, st->project, st->database,
                                  st->endpoint[0] ? st->endpoint : NULL, &x->w, x->msg);
                if (rc == PXC_ENOTFOUND) {
                    pgw_send_error(x->c, "FATAL", "3D000", "%s \"%s\" does not exist: %s",
                                   st->endpoint[0] ? "endpoint" : "database",
                                   st->endpoint[0] ? st->endpoint : st->database, x->msg);
                    return -ENOENT;
                }
                if (rc == PXC_EUNAVAIL)
                    continue;
                if (rc != 0) {
                    pgw_send_error(x->c, "FATAL", "08006", "cannot wake the endpoint: %s",
                                   x->msg);
                    return -EIO;
                }
            }
            x->have_w = true;
            woke = true;
        }
        char key[1400];
        snprintf(key, sizeof(key), "%s:%d/%s/%s/%s", x->w.host, x->w.pg_port, st->user,
                 x->w.branch[0] ? x->w.branch : st->database, st->options);
        int rc = pxp_acquire(s->pool, key, pool_connect, x, out);
        if (rc == 0) {
            if (woke) {
                met_counter_inc(x->w.cold ? s->m_wake_cold : s->m_wake_warm);
                met_histogram_observe(s->m_wake_s, (double)(clock_mono_ms() - t0) / 1000.0);
            }
            return 0;
        }
        if (rc == -EAGAIN) {
            /* After the start-up the client keeps its connection: it holds
             * no session, so it can simply try again (as after a
             * serialization failure), unlike PgBouncer's query_wait_timeout
             * which closes it. */
            x->waited_out = x->greeted;
            pgw_send_error(x->c, x->greeted ? "ERROR" : "FATAL", "53300",
                           "no compute session free for \"%s\" within the pool wait: too many "
                           "clients at once%s", st->database,
                           x->greeted ? "; try the transaction again" : "");
            return rc;
        }
        if (rc == -EPROTO) {
            if (x->fatal.len)
                pgw_buf_put(&x->c->out, x->fatal.data, x->fatal.len);
            else
                pgw_send_error(x->c, "FATAL", "08006", "%s", x->msg);
            return -EIO;
        }
        x->have_w = false;      /* gone: wake again */
    }
    met_counter_inc(s->m_wake_fail);
    pgw_send_error(x->c, "FATAL", "57P03",
                   "could not reach a compute for %s \"%s\" after %d attempts: %s",
                   st->endpoint[0] ? "endpoint" : "branch",
                   st->endpoint[0] ? st->endpoint : st->database, s->wake_attempts, x->msg);
    return -EAGAIN;
}

static cstmt *find_cstmt(pooled *x, const char *name)
{
    for (cstmt *t = x->stmts; t; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

static void drop_cstmt(pooled *x, const char *name)
{
    for (cstmt **t = &x->stmts; *t; t = &(*t)->next) {
        if (strcmp((*t)->name, name) == 0) {
            cstmt *d = *t;
            *t = d->next;
            az_free(d->name);
            az_free(d->msg);
            az_free(d);
            return;
        }
    }
}

/* Whether a whole message waits in c's input buffer. */
static bool msg_buffered(const pgw_conn *c)
{
    size_t avail = c->in_end - c->in_start;
    if (avail < 5)
        return false;
    const uint8_t *p = c->in + c->in_start + 1;
    uint32_t len = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return avail >= (size_t)len + 1;
}

static void set_cancel_target(px_server *s, px_cancel_entry *e, const pxp_conn *sc,
                              const pxc_compute *w)
{
    pthread_mutex_lock(&s->mu);
    if (sc) {
        e->cpid = sc->cpid;
        e->ckey = sc->ckey;
        snprintf(e->host, sizeof(e->host), "%s", w->host);
        e->port = w->pg_port;
    } else {
        e->port = 0;           /* between transactions: nothing to cancel */
    }
    pthread_mutex_unlock(&s->mu);
}

/* A Close of server statement sname, injected: its CloseComplete is
 * swallowed (*drop_close). */
static void inject_close(pgw_buf *fwd, const char *sname, int *drop_close)
{
    size_t cat = pgw_msg_begin(fwd, 'C');
    pgw_buf_u8(fwd, 'S');
    pgw_buf_str(fwd, sname);
    pgw_msg_end(fwd, cat);
    (*drop_close)++;
}

/* Before a statement is added to the compute session sc: while it holds
 * the most it may (pxp_set_max_stmts), the least recently used is closed.
 * A portal bound from it lives on: a Close of a statement leaves its
 * portals. */
static void make_room(pxp_conn *sc, pgw_buf *fwd, int *drop_close)
{
    char old[40];
    while (pxp_evict_stmt(sc, old, sizeof(old)))
        inject_close(fwd, old, drop_close);
}

/* A client's Parse, Bind, Describe or Close of a named statement, rewritten
 * for the pooled compute session sc into fwd: server-side names from the
 * statement's text (px_<hash of the Parse without its name>: clients
 * sharing a session never collide, the same text is one server statement),
 * the statement prepared again on a session that lacks it (its
 * ParseComplete counted in *drop_parse, a Close injected before a Parse of
 * a name another client made counted in *drop_close). false: the message
 * goes as it is. */
static bool rewrite_stmt_msg(pooled *x, pxp_conn *sc, uint8_t type, const uint8_t *body,
                             size_t len, pgw_buf *fwd, int *drop_parse, int *drop_close)
{
    pgw_rd r;
    pgw_rd_init(&r, body, len);
    if (type == 'P') {
        const char *name = pgw_rd_str(&r);
        if (!r.bad && name[0]) {
            size_t nlen = strlen(name) + 1;
            uint64_t h = fnv1a(body + nlen, len - nlen);
            char sname[40];
            snprintf(sname, sizeof(sname), "px_%016llx", (unsigned long long)h);
            drop_cstmt(x, name);
            cstmt *t = az_calloc(1, sizeof(*t));
            t->name = az_strdup(name);
            pgw_buf m = { 0 };
            size_t mat = pgw_msg_begin(&m, 'P');
            pgw_buf_str(&m, sname);
            pgw_buf_put(&m, body + nlen, len - nlen);
            pgw_msg_end(&m, mat);
            t->msg = m.data;
            t->len = m.len;
            t->hash = h;
            t->next = x->stmts;
            x->stmts = t;
            if (pxp_has_stmt(sc, sname, h)) {
                /* Made by another client: closed first, so this
                 * Parse answers. */
                inject_close(fwd, sname, drop_close);
            } else {
                make_room(sc, fwd, drop_close);
            }
            pgw_buf_put(fwd, t->msg, t->len);
            pxp_add_stmt(sc, sname, h);
            return true;
        }
    } else if (type == 'B' || (type == 'D' && len > 0 && body[0] == 'S')) {
        const char *portal = NULL, *name;
        if (type == 'B') {
            portal = pgw_rd_str(&r);
            name = pgw_rd_str(&r);
        } else {
            pgw_rd_bytes(&r, 1);
            name = pgw_rd_str(&r);
        }
        cstmt *t = !r.bad && name[0] ? find_cstmt(x, name) : NULL;
        if (t) {
            char sname[40];
            snprintf(sname, sizeof(sname), "px_%016llx", (unsigned long long)t->hash);
            if (!pxp_has_stmt(sc, sname, t->hash)) {
                make_room(sc, fwd, drop_close);
                pgw_buf_put(fwd, t->msg, t->len);
                pxp_add_stmt(sc, sname, t->hash);
                (*drop_parse)++;
            }
            size_t mat = pgw_msg_begin(fwd, type);
            if (type == 'B') {
                pgw_buf_str(fwd, portal);
                pgw_buf_str(fwd, sname);
                pgw_buf_put(fwd, r.p + r.off, r.len - r.off);   /* the rest */
            } else {
                pgw_buf_u8(fwd, 'S');
                pgw_buf_str(fwd, sname);
            }
            pgw_msg_end(fwd, mat);
            return true;
        }
    } else if (type == 'C' && len > 0 && body[0] == 'S') {
        pgw_rd_bytes(&r, 1);
        const char *name = pgw_rd_str(&r);
        if (!r.bad && name[0] && find_cstmt(x, name)) {
            /* The server statement may serve other clients: it stays;
             * a Close of a name nobody has still answers CloseComplete. */
            drop_cstmt(x, name);
            size_t mat = pgw_msg_begin(fwd, 'C');
            pgw_buf_u8(fwd, 'S');
            pgw_buf_str(fwd, "px_closed");
            pgw_msg_end(fwd, mat);
            return true;
        }
    }
    return false;
}

/*
 * The session in transaction-pooling mode: the client's messages are read
 * one at a time; the first of a transaction takes a pooled compute session
 * which goes back when the compute says ReadyForQuery 'I' with nothing of
 * the client's in flight (every Sync / Query answered, no extended-protocol
 * message after the last Sync). Named prepared statements are prepared
 * again (Parse injected, its ParseComplete swallowed) on a session that
 * does not have them.
 */
static void run_pooled(px_server *s, pgw_conn *c, const startup *st, px_cancel_entry *e)
{
    pooled x = { .s = s, .c = c, .st = st, .e = e };
    pxp_conn *sc = NULL;
    pgw_conn sconn;
    int pending = 0, drop_parse = 0, drop_close = 0;
    bool unsynced = false, broken = false;
    /* The client ended (EOF, a half-close, Terminate): what it sent before
     * still gets its answers, as from PostgreSQL, which reads on after a
     * Query. Nothing more is read from it. */
    bool client_done = false;
    uint8_t last_z = 'I';
    /* The greeting: the compute's parameters from a first session (which
     * also proves the branch is reachable), our key, ReadyForQuery. */
    if (pooled_get(&x, &sc) != 0)
        goto out;
    uint8_t *hello;
    size_t hello_len;
    if (pxp_hello(sc->pool, &hello, &hello_len) == 0) {
        pgw_buf_put(&c->out, hello, hello_len);
        az_free(hello);
    }
    pxp_release(sc, true);
    sc = NULL;
    cancel_register(s, e);               /* our (pid, key): given to the client */
    size_t at = pgw_msg_begin(&c->out, 'K');
    pgw_buf_i32(&c->out, e->pid);
    pgw_buf_i32(&c->out, e->key);
    pgw_msg_end(&c->out, at);
    at = pgw_msg_begin(&c->out, 'Z');
    pgw_buf_u8(&c->out, 'I');
    pgw_msg_end(&c->out, at);
    if (pgw_conn_flush(c) != 0)
        goto out;
    x.greeted = true;
    bool skip_to_sync = false;  /* an extended-protocol batch that got no session */
    bool told_fatal = false;    /* the compute's FATAL was forwarded */
    for (;;) {
        if (sc && pending == 0 && !unsynced && last_z == 'I') {
            pgw_conn_free(&sconn);
            set_cancel_target(s, e, NULL, NULL);
            pxp_release(sc, true);
            sc = NULL;
        }
        if (client_done && (!sc || pending == 0))
            break;
        bool cbuf = !client_done && (msg_buffered(c) || px_tls_pending(c->io) > 0);
        bool sbuf = sc && msg_buffered(&sconn);
        struct pollfd pf[2] = { { .fd = client_done ? -1 : c->fd, .events = POLLIN },
                                { .fd = sc ? sc->fd : -1, .events = POLLIN } };
        if (!cbuf && !sbuf && poll(pf, 2, -1) < 0 && errno != EINTR)
            break;
        if (sc && (sbuf || (pf[1].revents & (POLLIN | POLLHUP | POLLERR)))) {
            uint8_t type;
            const uint8_t *body;
            size_t len;
            if (pgw_conn_read_msg(&sconn, &type, &body, &len) != 0) {
                if (!told_fatal)
                    pgw_send_error(c, "FATAL", "08006", "the compute closed the session");
                broken = true;
                break;
            }
            if (type == 'E' && error_ends_session(body, len))
                told_fatal = true;   /* e.g. 57P01 when the compute stops */
            if (type == '1' && drop_parse > 0) {
                drop_parse--;          /* the ParseComplete of an injected Parse */
                continue;
            }
            if (type == '3' && drop_close > 0) {
                drop_close--;          /* the CloseComplete of an injected Close */
                continue;
            }
            put_msg(&c->out, type, body, len);
            if (type == 'Z' && len == 1) {
                pending = pending > 0 ? pending - 1 : 0;
                last_z = body[0];
                /* All answered: an injected message the server skipped
                 * after an error answers nothing; start counting afresh. */
                if (pending == 0)
                    drop_parse = drop_close = 0;
            }
            if ((type == 'Z' || !msg_buffered(&sconn)) && pgw_conn_flush(c) != 0)
                break;
            continue;
        }
        if (!cbuf && !(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        uint8_t type;
        const uint8_t *body;
        size_t len;
        if (pgw_conn_read_msg(c, &type, &body, &len) != 0 || type == 'X') {
            client_done = true;
            continue;
        }
        if (!sc && skip_to_sync) {
            /* As a server does after an error: the rest of the batch is
             * discarded up to its Sync, which gets ReadyForQuery. */
            if (type == 'S') {
                skip_to_sync = false;
                pgw_send_ready(c, 'I');
                if (pgw_conn_flush(c) != 0)
                    goto out;
            }
            continue;
        }
        if (!sc) {
            x.waited_out = false;
            if (pooled_get(&x, &sc) != 0) {
                if (!x.waited_out)
                    goto out;
                if (type == 'Q' || type == 'S')
                    pgw_send_ready(c, 'I');
                else
                    skip_to_sync = true;
                if (pgw_conn_flush(c) != 0)
                    goto out;
                continue;
            }
            pgw_conn_init(&sconn, sc->fd);
            set_cancel_target(s, e, sc, &x.w);
            last_z = 'I';
            drop_parse = drop_close = 0;
        }
        pgw_buf fwd = { 0 };
        bool sent = rewrite_stmt_msg(&x, sc, type, body, len, &fwd, &drop_parse, &drop_close);
        if (type == 'S' || type == 'Q') {
            pending++;
            unsynced = false;
        } else if (type != 'd' && type != 'c' && type != 'f') {
            unsynced = true;   /* COPY's data belongs to the Query before it */
        }
        if (!sent)
            put_msg(&fwd, type, body, len);
        int wrc = write_all(sc->fd, fwd.data, fwd.len);
        pgw_buf_free(&fwd);
        if (wrc != 0) {
            pgw_send_error(c, "FATAL", "08006", "the compute closed the session");
            broken = true;
            break;
        }
        met_counter_add(s->m_bytes_in, len + 5);
    }
out:
    if (sc) {
        pgw_conn_free(&sconn);
        set_cancel_target(s, e, NULL, NULL);
        /* Mid-transaction or broken: closed (the compute rolls it back). */
        pxp_release(sc, !broken && pending == 0 && !unsynced && last_z == 'I');
    }
    cancel_unregister(s, e);
    while (x.stmts)
        drop_cstmt(&x, x.stmts->name);
    pgw_buf_free(&x.fatal);
}

/* ---- a session --------------------------------------------------------------- */

static void set_rcv_timeout(int fd, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void px_session_run(px_server *s, int fd, const char *peer)
{
    met_counter_inc(s->m_conns);
    met_gauge_add(s->m_active, 1);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    set_rcv_timeout(fd, s->auth_timeout_ms);
    pgw_conn c;
    pgw_conn_init(&c, fd);
    pgw_buf hello = { 0 };
    uint8_t *body = NULL;
    size_t len = 0;
    int sfd = -1;
    bool relayed = false, limited = false;
    px_cancel_entry *e = az_calloc(1, sizeof(*e));
    startup st = { 0 };
    int rc = read_startup(s, &c, &body, &len);
    if (rc != 0) {
        relayed = rc == 1;          /* a cancel request is not an error */
        goto done;
    }
    if (parse_startup(&st, body, len) != 0) {
        pgw_send_error(&c, "FATAL", "08P01", "malformed startup packet");
        goto done;
    }
    /* Under TLS the server name may carry the project: <project id>.host
     * (options=project%3D<id> wins). */
    char sni[33];
    if (!st.project[0] && px_tls_sni_project(c.io, sni) == 0)
        snprintf(st.project, sizeof(st.project), "%s", sni);
    if (!st.user || !*st.user) {
        pgw_send_error(&c, "FATAL", "28000", "no PostgreSQL user name specified in startup "
                                             "packet");
        goto done;
    }
    char lmsg[256];
    if (s->require_tls && !c.io) {
        pgw_send_error(&c, "FATAL", "28000", "connection without TLS refused: this proxy "
                                             "requires sslmode=require or stronger");
        goto done;
    }
    if (authenticate(s, &c, &st, peer) != 0)
        goto done;
    if (pxl_conn_acquire(s->limits, st.project, st.endpoint[0] ? st.endpoint : st.database,
                         lmsg) != 0) {
        pgw_send_error(&c, "FATAL", "53300", "%s", lmsg);
        goto done;
    }
    limited = true;
    if (s->pool && !st.session_pool) {
        set_rcv_timeout(fd, 0);
        relayed = true;
        run_pooled(s, &c, &st, e);
        goto done;
    }
    if (reach_compute(s, &c, &st, e, &hello, &sfd) != 0)
        goto done;
    /* Greeting: the compute's ParameterStatus..., our BackendKeyData, its
     * ReadyForQuery (always the last 6 bytes). */
    cancel_register(s, e);
    assert(hello.len >= 6 && hello.data[hello.len - 6] == 'Z');
    pgw_buf_put(&c.out, hello.data, hello.len - 6);
    size_t at = pgw_msg_begin(&c.out, 'K');
    pgw_buf_i32(&c.out, e->pid);
    pgw_buf_i32(&c.out, e->key);
    pgw_msg_end(&c.out, at);
    pgw_buf_put(&c.out, hello.data + hello.len - 6, 6);
    /* Anything the client sent early goes first. */
    /* (Over TLS, bytes OpenSSL decrypted but pgw did not read yet are
     * picked up by the relay: px_tls_pending.) */
    if (pgw_conn_flush(&c) == 0 &&
        write_all(sfd, c.in + c.in_start, c.in_end - c.in_start) == 0) {
        set_rcv_timeout(fd, 0);
        relayed = true;
        log_debug("proxy: %s: role %s on %s relayed", peer, st.user, st.database);
        relay(s, fd, c.io, sfd);
    }
    cancel_unregister(s, e);
done:
    if (limited)
        pxl_conn_release(s->limits, st.project, st.endpoint[0] ? st.endpoint : st.database);
    if (!relayed)
        met_counter_inc(s->m_errors);
    pgw_conn_flush(&c);
    px_tls_close(c.io);
    pgw_conn_free(&c);
    pgw_buf_free(&hello);
    az_free(body);
    az_free(e);
    if (sfd >= 0)
        close(sfd);
    close(fd);
    met_gauge_add(s->m_active, -1);
}
