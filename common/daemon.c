/*
 * daemon — start-up and shutdown pieces shared by the daemons. See daemon.h.
 */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"

/* The option named name in the table, NULL if there is none. */
static const cfg_option *find_option(const cfg_option *opts, const char *name)
{
    for (const cfg_option *o = opts; o->name; o++)
        if (strcmp(o->name, name) == 0)
            return o;
    return NULL;
}

int dmn_setup(const char *component, const cfg_option *opts, void *conf,
              int argc, char **argv, sigset_t *sigs)
{
    cfg_error err;
    int rc = cfg_load(opts, conf, argc, argv, &err);
    if (rc == CFG_HELP_SHOWN)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "arbor-%s: %s\n", component, err.msg);
        return 2;
    }
    const cfg_option *level = find_option(opts, "log-level");
    const cfg_option *file = find_option(opts, "log-file");
    log_init(component, level && level->type == CFG_LOG_LEVEL
                            ? *(const log_level *)((const char *)conf + level->offset)
                            : LOG_INFO);
    const char *path = file && file->type == CFG_STRING
                           ? *(char *const *)((const char *)conf + file->offset)
                           : NULL;
    if (path && log_open(path) != 0)
        fprintf(stderr, "arbor-%s: cannot open log file %s\n", component, path);
    /* Taken by dmn_signals_wait; every thread started later inherits it. */
    dmn_signals_block(sigs);
    return DMN_RUN;
}

void dmn_signals_block(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int dmn_signals_wait(const sigset_t *set)
{
    int sig = 0;
    while (sigwait(set, &sig) != 0)
        ;
    return sig;
}

/* The refresh hook and the registry, for the /metrics route. */
typedef struct metrics_route {
    met_registry *metrics;
    dmn_refresh_fn refresh;
    void *arg;
} metrics_route;

static int h_metrics(const http_request *req, http_response *resp, void *arg)
{
    metrics_route *m = arg;
    if (m->refresh)
        m->refresh(m->arg);
    char *text;
    size_t len;
    int rc = met_render(m->metrics, &text, &len);
    if (rc != 0)
        return rc;
    http_respond(resp, 200, MET_CONTENT_TYPE, text, len);
    free(text);
    return 0;
}

int dmn_http_start(const dmn_http_options *opt, http_server **out)
{
    /* One per process and daemon: lives as long as the server, which the
     * daemon keeps until exit. */
    static metrics_route route;
    route = (metrics_route){ opt->metrics, opt->refresh, opt->refresh_arg };
    http_server *srv;
    int rc = http_server_start(opt->addr, (uint16_t)opt->port, &srv);
    if (rc != 0) {
        log_error("HTTP on %s:%d: %s", opt->addr, opt->port, strerror(-rc));
        return rc;
    }
    if (opt->metrics)
        rc = http_route(srv, "GET", "/metrics", HTTP_MATCH_EXACT, h_metrics, &route);
    if (rc == 0 && opt->status)
        rc = http_route_json(srv, "GET", "/v1/status", HTTP_MATCH_EXACT,
                             opt->status, opt->status_arg);
    if (rc != 0) {
        log_error("HTTP routes: %s", strerror(-rc));
        http_server_stop(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

int dmn_write_port_file(const char *path, int grpc_port, int http_port)
{
    if (!path || !*path)
        return 0;
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%d %d\n", grpc_port, http_port);
    int rc = fs_write_atomic(path, buf, (size_t)n);
    if (rc != 0)
        log_error("port file %s: %s", path, strerror(-rc));
    return rc;
}

json_t *dmn_lsn_json(lsn_t lsn)
{
    char buf[LSN_STRLEN];
    return json_string(lsn_format(lsn, buf));
}

/* ---- processes ---------------------------------------------------------------- */

int dmn_proc_start_ticks(pid_t pid, uint64_t *out)
{
    if (pid <= 0) {
        return -ESRCH;
    }
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -ESRCH;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return -ESRCH;
    }
    buf[n] = 0;
    /* "pid (comm) S ppid ..." — comm may hold spaces and parentheses. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ') {
        return -ESRCH;
    }
    p += 2;
    if (*p == 'Z' || *p == 'X') {
        return -ESRCH;
    }
    /* p is at field 3 (state); starttime is field 22. */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p) {
            return -ESRCH;
        }
        p++;
    }
    *out = strtoull(p, NULL, 10);
    return 0;
}

bool dmn_proc_alive(pid_t pid, uint64_t start_ticks)
{
    uint64_t t;
    return dmn_proc_start_ticks(pid, &t) == 0 && t == start_ticks;
}

int dmn_proc_file_write(const char *path, pid_t pid, uint64_t ticks, const char *word)
{
    char line[256];
    int len = snprintf(line, sizeof(line), "%d %llu%s%s\n", (int)pid, (unsigned long long)ticks,
                       word ? " " : "", word ? word : "");
    if (len < 0 || (size_t)len >= sizeof(line))
        return -EINVAL;
    return fs_write_atomic(path, line, (size_t)len);
}

int dmn_proc_file_read(const char *path, pid_t *pid, uint64_t *ticks, char *word,
                       size_t word_cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -ENOENT;
    char line[256], w[200] = "";
    int p = 0;
    unsigned long long t = 0;
    bool ok = fgets(line, sizeof(line), f) && sscanf(line, "%d %llu %199s", &p, &t, w) >= 2 &&
              p > 0;
    fclose(f);
    if (!ok)
        return -EINVAL;
    *pid = p;
    *ticks = t;
    if (word)
        snprintf(word, word_cap, "%s", w);
    return dmn_proc_alive(p, t) ? 0 : -ESRCH;
}
