/*
 * test_metrics_common — see test_metrics_common.h.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_metrics_common.h"

#include "harness.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- processes ----------------------------------------------------------------- */

static tm_cluster *g_cluster;    /* for the exit and watchdog cleanup */
static char g_stop_dir[300];

/* Async-signal-safe enough for the watchdog: fork, exec, waitpid, kill. */
static void stop_everything(void)
{
    tm_cluster *c = g_cluster;
    if (!c)
        return;
    if (c->compute_pid > 0) {
        kill(c->compute_pid, SIGKILL);
        waitpid(c->compute_pid, NULL, 0);
        c->compute_pid = 0;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", 1);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execl(ARBOR_CLI_BIN, "arbor", "--dir", g_stop_dir, "stop", "--timeout", "5",
              (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
    g_cluster = NULL;
}

static void at_exit(void)
{
    stop_everything();
    if (g_stop_dir[0] && !getenv("ARBOR_KEEP_TMP")) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_stop_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", g_stop_dir);
    }
}

static void on_alarm(int sig)
{
    static const char msg[] = "test_metrics: watchdog expired: stopping the cluster\n";
    if (write(2, msg, sizeof(msg) - 1) < 0) {
        /* nothing to do */
    }
    stop_everything();
    _exit(1);
}

int tm_run(char *out, size_t cap, const char *const *argv)
{
    return h_run(120, NULL, out, cap, argv);
}

static int port_of(json_t *comp, const char *key)
{
    return (int)json_integer_value(json_object_get(comp, key));
}

int tm_cluster_start(tm_cluster *c, int watchdog_s)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->dir, sizeof(c->dir), "/tmp/arbor-metrics-XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    snprintf(g_stop_dir, sizeof(g_stop_dir), "%s", c->dir);
    g_cluster = c;
    atexit(at_exit);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)watchdog_s);
    char out[8192];
    int rc = tm_run(out, sizeof(out), (const char *[]){ ARBOR_CLI_BIN, "--dir", c->dir, "start",
                                                       "--base-port", "0", NULL });
    if (rc != 0) {
        fprintf(stderr, "arbor start failed (%d):\n%s\n", rc, out);
        return -1;
    }
    char path[400];
    snprintf(path, sizeof(path), "%s/cluster.json", c->dir);
    json_t *st = json_load_file(path, 0, NULL);
    if (!st)
        return -1;
    snprintf(c->tenant, sizeof(c->tenant), "%s",
             json_string_value(json_object_get(st, "tenant_id")) ?: "");
    json_t *comp;
    size_t i;
    int n_sk = 0;
    json_array_foreach(json_object_get(st, "components"), i, comp) {
        const char *kind = json_string_value(json_object_get(comp, "kind")) ?: "";
        if (strcmp(kind, "safekeeper") == 0 && n_sk < TM_N_SK) {
            c->sk_http[n_sk] = port_of(comp, "http_port");
            c->sk_grpc[n_sk++] = port_of(comp, "grpc_port");
        } else if (strcmp(kind, "pageserver") == 0) {
            c->ps_http = port_of(comp, "http_port");
            c->ps_grpc = port_of(comp, "grpc_port");
        }
    }
    json_decref(st);
    return n_sk == TM_N_SK && c->ps_http && c->tenant[0] ? 0 : -1;
}

int tm_compute_start(tm_cluster *c)
{
    char dir[400], ports[450], log[450], a[6][600];
    snprintf(dir, sizeof(dir), "%s/ep1", c->dir);
    mkdir(dir, 0755);
    snprintf(ports, sizeof(ports), "%s/ports", dir);
    snprintf(log, sizeof(log), "%s/log", dir);
    unlink(ports);
    snprintf(a[0], sizeof(a[0]), "--pageserver=127.0.0.1:%d", c->ps_grpc);
    snprintf(a[1], sizeof(a[1]), "--safekeepers=127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
             c->sk_grpc[0], c->sk_grpc[1], c->sk_grpc[2]);
    snprintf(a[2], sizeof(a[2]), "--tenant=%s", c->tenant);
    snprintf(a[3], sizeof(a[3]), "--port-file=%s", ports);
    snprintf(a[4], sizeof(a[4]), "--log-file=%s", log);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        execl(ARBOR_COMPUTE_BIN, "arbor-compute", "--listen=127.0.0.1:0", "--http-port=0",
              "--branch=main", "--endpoint=ep1", a[0], a[1], a[2], a[3], a[4], (char *)NULL);
        _exit(127);
    }
    c->compute_pid = pid;
    for (int i = 0; i < 600; i++) {
        FILE *f = fopen(ports, "r");
        if (f) {
            int ok = fscanf(f, "%d %d", &c->compute_pg, &c->compute_http) == 2;
            fclose(f);
            if (ok)
                return 0;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            c->compute_pid = 0;
            fprintf(stderr, "arbor-compute exited; see %s\n", log);
            return -1;
        }
        usleep(50 * 1000);
    }
    return -1;
}

int tm_compute_stop(tm_cluster *c)
{
    if (c->compute_pid <= 0)
        return 0;
    kill(c->compute_pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 200; i++) {
        if (waitpid(c->compute_pid, &st, WNOHANG) == c->compute_pid) {
            c->compute_pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        usleep(50 * 1000);
    }
    kill(c->compute_pid, SIGKILL);
    waitpid(c->compute_pid, NULL, 0);
    c->compute_pid = 0;
    return -1;
}

/* ---- HTTP ------------------------------------------------------------------------- */

int tm_http(int port, const char *method, const char *path, const char *body, char **out)
{
    return h_http(port, method, path, body, out);
}

/* ---- Prometheus text format (strict) -------------------------------------------- */

typedef struct parser {
    tm_prom *p;
    int line_no;
    int cur;           /* current family, -1 before the first */
    bool cur_has_samples;
    char *err;
    size_t errlen;
} parser;

static int fail_at(parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail_at(parser *ps, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->errlen, "line %d: %s", ps->line_no, msg);
    return -1;
}

static bool is_name_start(int c, bool colon)
{
    return isalpha(c) || c == '_' || (colon && c == ':');
}

static bool is_name_char(int c, bool colon)
{
    return isalnum(c) || c == '_' || (colon && c == ':');
}

/* A metric (colon) or label name at *s; advances. Length, 0 if none. */
static size_t take_name(const char **s, bool colon)
{
    const char *p = *s;
    if (!is_name_start((unsigned char)*p, colon))
        return 0;
    while (is_name_char((unsigned char)*p, colon))
        p++;
    size_t n = (size_t)(p - *s);
    *s = p;
    return n;
}

/* Go's ParseFloat as the format allows it, plus +Inf/-Inf/NaN. */
static bool parse_float(const char *s, size_t n, double *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    if (!strcmp(buf, "+Inf") || !strcmp(buf, "Inf")) {
        *out = INFINITY;
        return true;
    }
    if (!strcmp(buf, "-Inf")) {
        *out = -INFINITY;
        return true;
    }
    if (!strcmp(buf, "NaN")) {
        *out = NAN;
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        if (!strchr("0123456789+-.eE", buf[i]))
            return false;
    }
    char *end;
    errno = 0;
    *out = strtod(buf, &end);
    return *end == 0 && errno == 0;
}

static int find_family(const tm_prom *p, const char *name, size_t n)
{
    for (size_t i = 0; i < p->n_fam; i++) {
        if (strlen(p->fam[i].name) == n && strncmp(p->fam[i].name, name, n) == 0)
            return (int)i;
    }
    return -1;
}

static int new_family(parser *ps, const char *name, size_t n)
{
    tm_prom *p = ps->p;
    p->fam = realloc(p->fam, (p->n_fam + 1) * sizeof(*p->fam));
    p->fam[p->n_fam] = (tm_family){ .name = strndup(name, n), .type = TM_UNTYPED };
    ps->cur = (int)p->n_fam++;
    ps->cur_has_samples = false;
    return ps->cur;
}

static int parse_comment(parser *ps, const char *line)
{
    bool help = strncmp(line, "# HELP ", 7) == 0, type = strncmp(line, "# TYPE ", 7) == 0;
    if (!help && !type)
        return 0;   /* any other comment */
    const char *s = line + 7;
    const char *name = s;
    size_t n = take_name(&s, true);
    if (n == 0 || (*s != ' ' && *s != 0))
        return fail_at(ps, "bad metric name in %s", help ? "HELP" : "TYPE");
    int f = find_family(ps->p, name, n);
    if (f >= 0 && (f != ps->cur || ps->cur_has_samples))
        return fail_at(ps, "%.*s: HELP/TYPE after its samples or a second time", (int)n, name);
    if (f < 0)
        f = new_family(ps, name, n);
    tm_family *fam = &ps->p->fam[f];
    if (help) {
        if (fam->has_help)
            return fail_at(ps, "second HELP for %s", fam->name);
        fam->has_help = true;
        for (const char *q = s; *q; q++) {   /* escapes: \\ and \n only */
            if (*q == '\\' && q[1] != '\\' && q[1] != 'n')
                return fail_at(ps, "bad escape in HELP of %s", fam->name);
            if (*q == '\\')
                q++;
        }
        return 0;
    }
    if (*s++ != ' ')
        return fail_at(ps, "TYPE without a type");
    static const char *const types[] = { "counter", "gauge", "histogram", "summary", "untyped" };
    for (int t = 0; t < 5; t++) {
        if (strcmp(s, types[t]) == 0) {
            if (fam->type != TM_UNTYPED)
                return fail_at(ps, "second TYPE for %s", fam->name);
            fam->type = (tm_type)t;
            if (fam->type == TM_UNTYPED)
                fam->type = TM_UNTYPED;
            return 0;
        }
    }
    return fail_at(ps, "unknown type '%s'", s);
}

typedef struct label {
    char name[128];
    char value[512];   /* as written, escapes kept */
} label;

static int cmp_label(const void *a, const void *b)
{
    return strcmp(((const label *)a)->name, ((const label *)b)->name);
}

/* {name="value",...} at *s; advances past '}'. */
static int parse_labels(parser *ps, const char **s, label *lab, int *n_lab)
{
    const char *p = *s + 1;
    *n_lab = 0;
    while (*p != '}') {
        const char *ln = p;
        size_t n = take_name(&p, false);
        if (n == 0 || n >= sizeof(lab->name) || p[0] != '=' || p[1] != '"')
            return fail_at(ps, "bad label at '%.20s'", ln);
        if (*n_lab == 32)
            return fail_at(ps, "too many labels");
        label *l = &lab[(*n_lab)++];
        memcpy(l->name, ln, n);
        l->name[n] = 0;
        if (strncmp(l->name, "__", 2) == 0)
            return fail_at(ps, "reserved label name %s", l->name);
        p += 2;
        size_t vn = 0;
        while (*p != '"') {
            if (*p == 0 || *p == '\n')
                return fail_at(ps, "unterminated label value");
            if (*p == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                    return fail_at(ps, "bad escape in label value");
                if (vn + 1 < sizeof(l->value))
                    l->value[vn++] = *p;
                p++;
            }
            if (vn + 1 < sizeof(l->value))
                l->value[vn++] = *p;
            p++;
        }
        l->value[vn] = 0;
        p++;
        if (*p == ',')
            p++;
        else if (*p != '}')
            return fail_at(ps, "expected ',' or '}' after a label");
    }
    *s = p + 1;
    qsort(lab, (size_t)*n_lab, sizeof(*lab), cmp_label);
    for (int i = 1; i < *n_lab; i++) {
        if (strcmp(lab[i].name, lab[i - 1].name) == 0)
            return fail_at(ps, "label %s twice", lab[i].name);
    }
    return 0;
}

/* Which family a sample name belongs to, given the current one. */
static int sample_family(parser *ps, const char *name)
{
    if (ps->cur < 0)
        return fail_at(ps, "sample %s before any TYPE", name);
    const tm_family *f = &ps->p->fam[ps->cur];
    size_t fl = strlen(f->name);
    if (f->type == TM_HISTOGRAM) {
        if (strncmp(name, f->name, fl) == 0 &&
            (!strcmp(name + fl, "_bucket") || !strcmp(name + fl, "_sum") ||
             !strcmp(name + fl, "_count")))
            return ps->cur;
    } else if (f->type == TM_SUMMARY) {
        if (strncmp(name, f->name, fl) == 0 &&
            (!name[fl] || !strcmp(name + fl, "_sum") || !strcmp(name + fl, "_count")))
            return ps->cur;
    } else if (strcmp(name, f->name) == 0) {
        return ps->cur;
    }
    return fail_at(ps, "sample %s is not of the current family %s (%s)", name, f->name,
                   f->type == TM_UNTYPED ? "no TYPE" : "samples not contiguous");
}

static int parse_sample(parser *ps, const char *line)
{
    const char *s = line;
    size_t n = take_name(&s, true);
    if (n == 0)
        return fail_at(ps, "bad metric name at '%.30s'", line);
    char name[256];
    if (n >= sizeof(name))
        return fail_at(ps, "metric name too long");
    memcpy(name, line, n);
    name[n] = 0;
    label lab[32];
    int n_lab = 0;
    if (*s == '{' && parse_labels(ps, &s, lab, &n_lab) != 0)
        return -1;
    if (*s != ' ')
        return fail_at(ps, "expected a space before the value of %s", name);
    while (*s == ' ')
        s++;
    const char *v = s;
    while (*s && *s != ' ')
        s++;
    double value;
    if (!parse_float(v, (size_t)(s - v), &value))
        return fail_at(ps, "bad value '%.*s' of %s", (int)(s - v), v, name);
    if (*s == ' ') {   /* timestamp: an integer (ms) */
        s++;
        if (*s == '-')
            s++;
        if (!isdigit((unsigned char)*s))
            return fail_at(ps, "bad timestamp");
        while (isdigit((unsigned char)*s))
            s++;
    }
    if (*s)
        return fail_at(ps, "trailing characters after the value of %s", name);
    int f = sample_family(ps, name);
    if (f < 0)
        return -1;
    const tm_family *fam = &ps->p->fam[f];
    bool bucket = fam->type == TM_HISTOGRAM && strstr(name + strlen(fam->name), "_bucket");
    bool has_le = false;
    char canon[4096] = "";
    size_t cl = 0;
    for (int i = 0; i < n_lab; i++) {
        has_le = has_le || !strcmp(lab[i].name, "le");
        cl += (size_t)snprintf(canon + cl, sizeof(canon) - cl, "%s%s=\"%s\"", i ? "," : "",
                               lab[i].name, lab[i].value);
        if (cl >= sizeof(canon))
            return fail_at(ps, "labels too long");
    }
    if (bucket != has_le)
        return fail_at(ps, "%s: le label %s", name, bucket ? "missing" : "where none belongs");
    if (fam->type == TM_COUNTER) {
        size_t nl = strlen(name);
        if (nl < 6 || strcmp(name + nl - 6, "_total") != 0)
            return fail_at(ps, "counter %s not named *_total", name);
        if (!(value >= 0))
            return fail_at(ps, "counter %s = %g", name, value);
    }
    tm_prom *p = ps->p;
    for (size_t i = 0; i < p->n_s; i++) {
        if (!strcmp(p->s[i].name, name) && !strcmp(p->s[i].labels, canon))
            return fail_at(ps, "duplicate series %s{%s}", name, canon);
    }
    p->s = realloc(p->s, (p->n_s + 1) * sizeof(*p->s));
    p->s[p->n_s++] = (tm_sample){ strdup(name), strdup(canon), value, f };
    ps->cur_has_samples = true;
    return 0;
}

/* Canonical labels without le="..." into out. Pairs are name="value" with
 * \\ and \" escapes kept, joined by commas. */
static void strip_le(const char *labels, char *out, size_t cap)
{
    out[0] = 0;
    size_t ol = 0;
    const char *p = labels;
    while (*p) {
        const char *q = strchr(p, '"');   /* opening quote */
        if (!q)
            break;
        for (q++; *q && *q != '"'; q++) {
            if (*q == '\\' && q[1])
                q++;
        }
        const char *end = *q ? q + 1 : q;   /* past the closing quote */
        if (strncmp(p, "le=\"", 4) != 0 && ol < cap)
            ol += (size_t)snprintf(out + ol, cap - ol, "%s%.*s", ol ? "," : "",
                                   (int)(end - p), p);
        p = *end == ',' ? end + 1 : end;
    }
}

static int check_histograms(parser *ps)
{
    tm_prom *p = ps->p;
    ps->line_no = 0;
    for (size_t f = 0; f < p->n_fam; f++) {
        if (p->fam[f].type != TM_HISTOGRAM)
            continue;
        const char *fn = p->fam[f].name;
        size_t fl = strlen(fn);
        /* every series of this family, keyed by its labels without le */
        for (size_t i = 0; i < p->n_s; i++) {
            tm_sample *a = &p->s[i];
            if ((size_t)a->family != f || strcmp(a->name + fl, "_count") != 0)
                continue;
            char key[4096], k2[4096];
            strip_le(a->labels, key, sizeof(key));
            double prev_le = -INFINITY, prev_count = 0, inf_count = NAN;
            bool sum = false;
            int buckets = 0;
            for (size_t j = 0; j < p->n_s; j++) {
                tm_sample *b = &p->s[j];
                if ((size_t)b->family != f)
                    continue;
                strip_le(b->labels, k2, sizeof(k2));
                if (strcmp(key, k2) != 0)
                    continue;
                if (!strcmp(b->name + fl, "_sum")) {
                    sum = true;
                } else if (!strcmp(b->name + fl, "_bucket")) {
                    const char *le = strstr(b->labels, "le=\"") + 4;
                    double bound;
                    if (!parse_float(le, strcspn(le, "\""), &bound))
                        return fail_at(ps, "%s{%s}: bad le", fn, b->labels);
                    if (!(bound > prev_le))
                        return fail_at(ps, "%s{%s}: le not increasing", fn, b->labels);
                    if (b->value < prev_count)
                        return fail_at(ps, "%s{%s}: bucket counts decrease", fn, b->labels);
                    prev_le = bound;
                    prev_count = b->value;
                    buckets++;
                    if (isinf(bound))
                        inf_count = b->value;
                }
            }
            if (!buckets || !isinf(prev_le))
                return fail_at(ps, "%s{%s}: buckets do not end at +Inf", fn, key);
            if (inf_count != a->value)
                return fail_at(ps, "%s{%s}: _count %g != +Inf bucket %g", fn, key, a->value,
                               inf_count);
            if (!sum)
                return fail_at(ps, "%s{%s}: no _sum", fn, key);
        }
        /* and every bucket series has its _count */
        for (size_t i = 0; i < p->n_s; i++) {
            if ((size_t)p->s[i].family != f || strcmp(p->s[i].name + fl, "_bucket") != 0)
                continue;
            char key[4096], k2[4096];
            strip_le(p->s[i].labels, key, sizeof(key));
            bool found = false;
            for (size_t j = 0; j < p->n_s && !found; j++) {
                if ((size_t)p->s[j].family == f && !strcmp(p->s[j].name + fl, "_count")) {
                    strip_le(p->s[j].labels, k2, sizeof(k2));
                    found = !strcmp(key, k2);
                }
            }
            if (!found)
                return fail_at(ps, "%s{%s}: buckets without _count", fn, key);
        }
    }
    return 0;
}

int tm_prom_parse(const char *text, tm_prom *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    parser ps = { .p = out, .cur = -1, .err = err, .errlen = errlen };
    err[0] = 0;
    const char *line = text;
    char buf[8192];
    while (*line) {
        const char *end = strchr(line, '\n');
        if (!end) {
            ps.line_no++;
            return fail_at(&ps, "last line does not end with a newline");
        }
        size_t n = (size_t)(end - line);
        ps.line_no++;
        if (n >= sizeof(buf))
            return fail_at(&ps, "line too long");
        memcpy(buf, line, n);
        buf[n] = 0;
        int rc = 0;
        if (n == 0)
            rc = 0;   /* empty lines are ignored */
        else if (buf[0] == '#')
            rc = parse_comment(&ps, buf);
        else
            rc = parse_sample(&ps, buf);
        if (rc != 0)
            return -1;
        line = end + 1;
    }
    return check_histograms(&ps);
}

void tm_prom_free(tm_prom *p)
{
    for (size_t i = 0; i < p->n_fam; i++)
        free(p->fam[i].name);
    for (size_t i = 0; i < p->n_s; i++) {
        free(p->s[i].name);
        free(p->s[i].labels);
    }
    free(p->fam);
    free(p->s);
    memset(p, 0, sizeof(*p));
}

static bool labels_match(const char *labels, const char *filter)
{
    if (!filter || !*filter)
        return true;
    char f[1024];
    snprintf(f, sizeof(f), "%s", filter);
    for (char *save = NULL, *tok = strtok_r(f, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!strstr(labels, tok))
            return false;
    }
    return true;
}

double tm_prom_sum(const tm_prom *p, const char *name, const char *filter)
{
    double sum = 0;
    bool any = false;
    for (size_t i = 0; i < p->n_s; i++) {
        if (!strcmp(p->s[i].name, name) && labels_match(p->s[i].labels, filter)) {
            sum += p->s[i].value;
            any = true;
        }
    }
    return any ? sum : NAN;
}

const tm_family *tm_prom_family(const tm_prom *p, const char *name)
{
    int f = find_family(p, name, strlen(name));
    return f >= 0 ? &p->fam[f] : NULL;
}

void tm_scrape(int port, tm_prom *out)
{
    char *text = NULL;
    int status = tm_http(port, "GET", "/metrics", NULL, &text);
    if (status != 200)
        fail_msg("GET :%d/metrics: %d", port, status);
    char err[512];
    if (tm_prom_parse(text, out, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", text);
        free(text);
        fail_msg("/metrics of port %d does not parse: %s", port, err);
    }
    free(text);
}
