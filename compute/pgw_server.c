/*
 * pgw_server — see pgw_server.h.
 *
 * The acceptor thread polls the listening socket and a wake pipe. Every
 * accepted connection gets a pgw_session and a joinable thread; a session
 * thread that ends marks itself finished and pokes the wake pipe, and the
 * acceptor joins and frees it. Only the acceptor (and, after it has been
 * joined, pgw_server_stop) unlinks sessions, so the list is walked under
 * `mu` by cancel/stop without sessions disappearing underneath.
 */
#define _GNU_SOURCE
#include "pgw_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "alloc.h"
#include "log.h"
#include "pgw_session.h"

struct pgw_server {
    pgw_shared sh;
    char *bind_address;
    char *user;
    char *password;
    char *secret;
    char *server_version;
    int max_sessions;
    int listen_fd;
    int port;
    int wake[2];
    pthread_t acceptor;
    bool acceptor_started;
    pthread_mutex_t mu;
    pgw_session *sessions; /* guarded by mu */
    int n_threads;         /* guarded by mu */
    int n_active;          /* guarded by mu */
    int32_t next_pid;      /* acceptor only */
};

int pgw_server_port(const pgw_server *srv)
{
    return srv->port;
}

int pgw_server_sessions(pgw_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    int n = srv->n_active;
    pthread_mutex_unlock(&srv->mu);
    return n;
}

int pgw_server_claim_slot(pgw_server *srv, pgw_session *s)
{
    int rc = -EBUSY;
    pthread_mutex_lock(&srv->mu);
    if (srv->n_active < srv->max_sessions) {
        srv->n_active++;
        s->counted = true;
        rc = 0;
    }
    pthread_mutex_unlock(&srv->mu);
    if (rc == 0 && srv->sh.m_sessions) {
        met_gauge_add(srv->sh.m_sessions, 1);
    }
    return rc;
}

void pgw_server_set_db(pgw_server *srv, pgw_session *s, sqlite3 *db)
{
    pthread_mutex_lock(&srv->mu);
    s->db = db;
    if (db && atomic_load(&srv->sh.stopping)) {
        sqlite3_interrupt(db);
    }
    pthread_mutex_unlock(&srv->mu);
}

void pgw_server_cancel(pgw_server *srv, int32_t pid, int32_t key)
{
    bool found = false;
    pthread_mutex_lock(&srv->mu);
    for (pgw_session *s = srv->sessions; s; s = s->next) {
        if (s->pid == pid && CRYPTO_memcmp(&s->key, &key, sizeof(key)) == 0) {
            if (s->db) {
                sqlite3_interrupt(s->db);
            }
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&srv->mu);
    log_debug("pgw: cancel request for %d: %s", pid, found ? "interrupted" : "no such session");
}

static void wake(pgw_server *srv)
{
    char b = 1;
    ssize_t n = write(srv->wake[1], &b, 1);
    (void)n; /* a full pipe already wakes the acceptor */
}

static void *session_thread(void *arg)
{
    pgw_session *s = arg;
    pgw_server *srv = s->srv;
    pgw_session_run(s);
    pthread_mutex_lock(&srv->mu);
    close(s->fd);
    s->fd = -1;
    s->finished = true;
    if (s->counted) {
        srv->n_active--;
    }
    pthread_mutex_unlock(&srv->mu);
    if (s->counted && srv->sh.m_sessions) {
        met_gauge_add(srv->sh.m_sessions, -1);
    }
    wake(srv);
    return NULL;
}

/* Joins and frees finished sessions (acceptor or stop only). */
static void reap(pgw_server *srv, bool all)
{
    for (;;) {
        pgw_session *done = NULL;
        pthread_mutex_lock(&srv->mu);
        for (pgw_session **pp = &srv->sessions; *pp; pp = &(*pp)->next) {
            if ((*pp)->finished || all) {
                done = *pp;
                *pp = done->next;
                srv->n_threads--;
                break;
            }
        }
        pthread_mutex_unlock(&srv->mu);
        if (!done) {
            return;
        }
        pthread_join(done->thread, NULL);
        az_free(done);
    }
}

static void peer_name(int fd, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?", port[16] = "?";
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV);
    }
    snprintf(out, cap, "%s:%s", host, port);
}

static void accept_one(pgw_server *srv)
{
    int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
            log_warn("pgw: accept: %s", strerror(errno));
            usleep(10000);
        }
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pgw_session *s = az_calloc(1, sizeof(*s));
    s->srv = srv;
    s->sh = &srv->sh;
    s->fd = fd;
    s->pid = srv->next_pid++;
    if (srv->next_pid <= 0) {
        srv->next_pid = 1;
    }
    if (RAND_bytes((unsigned char *)&s->key, sizeof(s->key)) != 1) {
        s->key = (int32_t)random();
    }
    peer_name(fd, s->peer, sizeof(s->peer));
    pthread_mutex_lock(&srv->mu);
    /* Connections beyond max_sessions still get a thread to be told so (or
     * to cancel), but the number of threads stays bounded. */
    if (srv->n_threads >= 2 * srv->max_sessions + 16) {
        pthread_mutex_unlock(&srv->mu);
        close(fd);
        az_free(s);
        return;
    }
    int rc = pthread_create(&s->thread, NULL, session_thread, s);
    if (rc != 0) {
        pthread_mutex_unlock(&srv->mu);
        log_warn("pgw: cannot start a session thread: %s", strerror(rc));
        close(fd);
        az_free(s);
        return;
    }
    s->next = srv->sessions;
    srv->sessions = s;
    srv->n_threads++;
    pthread_mutex_unlock(&srv->mu);
}

static void *acceptor_thread(void *arg)
{
    pgw_server *srv = arg;
    while (!atomic_load(&srv->sh.stopping)) {
        struct pollfd p[2] = {{srv->listen_fd, POLLIN, 0}, {srv->wake[0], POLLIN, 0}};
        int n = poll(p, 2, 1000);
        if (n < 0 && errno != EINTR) {
            log_error("pgw: poll: %s", strerror(errno));
            break;
        }
        if (p[1].revents) {
            char buf[64];
            while (read(srv->wake[0], buf, sizeof(buf)) > 0) {
            }
        }
        reap(srv, false);
        if (p[0].revents && !atomic_load(&srv->sh.stopping)) {
            accept_one(srv);
        }
    }
    return NULL;
}

static int listen_on(pgw_server *srv, const char *addr, int port)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(addr, portstr, &hints, &res);
    if (rc != 0) {
        log_error("pgw: address %s: %s", addr, gai_strerror(rc));
        return -EINVAL;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        rc = -errno;
        goto done;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        rc = -errno;
        log_error("pgw: listen on %s:%d: %s", addr, port, strerror(errno));
        close(fd);
        goto done;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    srv->listen_fd = fd;
    rc = 0;
done:
    freeaddrinfo(res);
    return rc;
}

static int metrics_init(pgw_server *srv, met_registry *reg)
{
    if (!reg) {
        return 0;
    }
    int rc = met_gauge_new(reg, "arbor_compute_pg_sessions", "PostgreSQL sessions open",
                           &srv->sh.m_sessions);
    if (rc == 0)
        rc = met_counter_new(reg, "arbor_compute_pg_sessions_total",
                             "PostgreSQL sessions started",
                             &srv->sh.m_sessions_total);
    if (rc == 0)
        rc = met_counter_new(reg, "arbor_compute_pg_queries_total", "SQL statements executed",
                             &srv->sh.m_queries);
    if (rc == 0)
        rc = met_counter_new(reg, "arbor_compute_pg_errors_total", "ErrorResponses sent",
                             &srv->sh.m_errors);
    if (rc == 0)
        rc = met_counter_new(reg, "arbor_compute_pg_rows_total", "DataRows sent",
                             &srv->sh.m_rows);
    if (rc == 0)
        rc = met_gauge_new(reg, "arbor_compute_pg_prepared_statements",
                           "Named prepared statements held by the open sessions",
                           &srv->sh.m_stmts);
    return rc;
}

static void server_free(pgw_server *srv)
{
    if (srv->listen_fd >= 0) {
        close(srv->listen_fd);
    }
    for (int i = 0; i < 2; i++) {
        if (srv->wake[i] >= 0) {
            close(srv->wake[i]);
        }
    }
    pthread_mutex_destroy(&srv->mu);
    az_free(srv->bind_address);
    az_free(srv->user);
    if (srv->password) {
        OPENSSL_cleanse(srv->password, strlen(srv->password));
    }
    az_free(srv->password);
    az_free(srv->secret);
    az_free(srv->server_version);
    OPENSSL_cleanse(&srv->sh.auth.scram, sizeof(srv->sh.auth.scram));
    az_free(srv);
}

int pgw_server_start(const pgw_options *opts, pgw_server **out)
{
    if (!opts->open_db || !opts->close_db || opts->port < 0 || opts->port > 65535 ||
        opts->max_sessions < 0 || (opts->auth != PGW_AUTH_TRUST && !opts->password)) {
        return -EINVAL;
    }
    pgw_server *srv = az_calloc(1, sizeof(*srv));
    srv->listen_fd = srv->wake[0] = srv->wake[1] = -1;
    pthread_mutex_init(&srv->mu, NULL);
    srv->bind_address = az_strdup(opts->bind_address ? opts->bind_address : "127.0.0.1");
    srv->user = opts->user ? az_strdup(opts->user) : NULL;
    srv->password = opts->password ? az_strdup(opts->password) : NULL;
    srv->secret = opts->secret && *opts->secret ? az_strdup(opts->secret) : NULL;
    srv->sh.secret = srv->secret;
    srv->server_version = az_strdup(opts->server_version ? opts->server_version
                                                         : "15.0 (Arbor)");
    srv->max_sessions = opts->max_sessions ? opts->max_sessions : 100;
    srv->next_pid = 1000 + (int32_t)(getpid() % 1000) * 1000;
    srv->sh.auth.method = opts->auth;
    srv->sh.auth.user = srv->user;
    srv->sh.auth.password = srv->password;
    srv->sh.open_db = opts->open_db;
    srv->sh.close_db = opts->close_db;
    srv->sh.db_lsn = opts->db_lsn;
    srv->sh.wait_lsn = opts->wait_lsn;
    srv->sh.arg = opts->arg;
    srv->sh.server_version = srv->server_version;
    atomic_init(&srv->sh.stopping, false);
    int rc = 0;
    if (opts->auth == PGW_AUTH_SCRAM) {
        rc = pgw_scram_secret_make(srv->password, &srv->sh.auth.scram);
    }
    if (rc == 0)
        rc = metrics_init(srv, opts->metrics);
    if (rc == 0 && pipe2(srv->wake, O_CLOEXEC | O_NONBLOCK) != 0)
        rc = -errno;
    if (rc == 0)
        rc = listen_on(srv, srv->bind_address, opts->port);
    if (rc == 0) {
        rc = -pthread_create(&srv->acceptor, NULL, acceptor_thread, srv);
        srv->acceptor_started = rc == 0;
    }
    if (rc != 0) {
        server_free(srv);
        return rc;
    }
    log_info("pgw: listening on %s:%d (auth %s)", srv->bind_address, srv->port,
             opts->auth == PGW_AUTH_TRUST ? "trust" : opts->auth == PGW_AUTH_MD5 ? "md5"
                                                                                  : "scram");
    *out = srv;
    return 0;
}

void pgw_server_stop(pgw_server *srv)
{
    if (!srv) {
        return;
    }
    atomic_store(&srv->sh.stopping, true);
    wake(srv);
    if (srv->acceptor_started) {
        pthread_join(srv->acceptor, NULL);
    }
    close(srv->listen_fd);
    srv->listen_fd = -1;
    pthread_mutex_lock(&srv->mu);
    for (pgw_session *s = srv->sessions; s; s = s->next) {
        if (s->db) {
            sqlite3_interrupt(s->db);
        }
        if (s->fd >= 0) {
            shutdown(s->fd, SHUT_RD); /* wakes a session waiting for input */
        }
    }
    pthread_mutex_unlock(&srv->mu);
    /* A session blocked sending to a client that does not read is only
     * woken by shutting down the write side too: give the others 2 s to
     * say goodbye (FATAL 57P01) first. */
    for (int waited_ms = 0; waited_ms < 2000; waited_ms += 10) {
        bool all_done = true;
        pthread_mutex_lock(&srv->mu);
        for (pgw_session *s = srv->sessions; s; s = s->next) {
            all_done &= s->finished;
        }
        pthread_mutex_unlock(&srv->mu);
        if (all_done) {
            break;
        }
        usleep(10000);
    }
    pthread_mutex_lock(&srv->mu);
    for (pgw_session *s = srv->sessions; s; s = s->next) {
        if (s->fd >= 0) {
            shutdown(s->fd, SHUT_RDWR);
        }
    }
    pthread_mutex_unlock(&srv->mu);
    reap(srv, true);
    server_free(srv);
}
