/*
 * cli_dashboard — the dashboard server. See cli_dashboard.h for the API.
 *
 * Sampler loop (one thread):  read cluster.json -> per component GET
 * /v1/status + /metrics (DASH_HTTP_TIMEOUT_MS each) -> build the /api/cluster
 * document and one history sample (deltas of the cumulative series since the
 * previous round) -> publish both under g->mu -> sleep DASH_SAMPLE_MS.
 *
 * Prometheus text is read leniently here (a sample line is `name{labels}
 * value`); the strict parser lives in the tests.
 */
#define _GNU_SOURCE
#include "alloc.h"
#include "cli_dashboard.h"

#include "cli_api.h"
#include "cli_proc.h"
#include "cli_state.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "http.h"
#include "lsn.h"

#define DASH_SAMPLE_MS 1000
#define DASH_HTTP_TIMEOUT_MS 800
#define DASH_MAX_BODY (8u << 20)
#define DASH_HISTORY 300          /* samples kept: 5 minutes at 1 s */
#define DASH_MAX_BUCKETS 40
#define DASH_MAX_COMPONENTS 64

/* A histogram summed over instances: cumulative counts per upper bound. */
typedef struct hist {
    int n;
    double le[DASH_MAX_BUCKETS];
    double count[DASH_MAX_BUCKETS];
} hist;

/* The cumulative series one round reads, summed over the components. */
typedef struct totals {
    int64_t t_ms;
    hist commit, flush, getpage;
    double commits, flushes, wal_bytes, pages_served, ingest_bytes;
    int n_computes, n_safekeepers_up;
} totals;

typedef struct sample {
    int64_t t_ms;
    double commit_p50_ms, commit_p99_ms, commits_per_s;
    const char *commit_source;
    double wal_bytes_per_s, getpage_p50_ms, getpage_p99_ms, pages_per_s,
        ingest_bytes_per_s;
} sample;

typedef struct dash {
    char dir[4096];
    pthread_mutex_t mu;         /* guards everything below */
    pthread_cond_t cv;
    bool stopping;
    char *cluster_json;         /* latest /api/cluster body */
    json_t *last_branches;      /* last tree seen, shown stale when ps is down */
    sample hist[DASH_HISTORY];
    int hist_n, hist_head;      /* ring: oldest at (head - n) */
    totals prev;
    bool have_prev;
} dash;

/* ---- small helpers ----------------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "X/Y" -> LSN; 0 for anything else. */
static uint64_t lsn_of(json_t *v)
{
    lsn_t lsn = 0;
    const char *s = json_string_value(v);
    if (s && lsn_parse(s, &lsn) != 0)
        lsn = 0;
    return lsn;
}

/* Whether the process started as (pid, start_ticks) still runs (not a
 * zombie): /proc/<pid>/stat field 3 (state) and 22 (start time). */

/* ---- HTTP client ------------------------------------------------------------- */

/*
 * GET http://127.0.0.1:port/path within timeout_ms (cli_http_request).
 * Returns the HTTP status and the body in *body (az_malloc'ed,
 * NUL-terminated; az_free it), or -EIO with *body NULL.
 */
static int http_get(int port, const char *path, int timeout_ms, char **body)
{
    char err[256];
    int status = 0;
    *body = NULL;
    if (cli_http_request(port, "GET", path, NULL, NULL, timeout_ms, &status, body, err) != 0)
        return -EIO;
    if (!*body) {
        *body = az_malloc(1);
        (*body)[0] = 0;
    }
    return status;
}

/* ---- Prometheus text (lenient) ---------------------------------------------- */

/* Calls fn for every sample line: name, raw labels (without braces, "" if
 * none), value. */
typedef void (*prom_fn)(const char *name, const char *labels, double v, void *arg);

static void prom_each(const char *text, prom_fn fn, void *arg)
{
    const char *line = text;
    char name[256], labels[1024];
    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len && line[0] != '#' && len < sizeof(labels)) {
            size_t i = 0;
            while (i < len && line[i] != '{' && line[i] != ' ' && i < sizeof(name) - 1)
                i++;
            memcpy(name, line, i);
            name[i] = 0;
            labels[0] = 0;
            const char *rest = line + i;
            if (*rest == '{') {
                const char *close = memchr(rest, '}', len - i);
                if (close) {
                    memcpy(labels, rest + 1, (size_t)(close - rest - 1));
                    labels[close - rest - 1] = 0;
                    rest = close + 1;
                }
            }
            char *num_end;
            double v = strtod(rest, &num_end);
            if (num_end != rest)
                fn(name, labels, v, arg);
        }
        line = end ? end + 1 : NULL;
    }
}

/* The value of label key in raw labels, into out ("" if absent). */
static const char *label_value(const char *labels, const char *key, char *out, size_t cap)
{
    out[0] = 0;
    size_t klen = strlen(key);
    for (const char *p = labels; p && *p;) {
        if (strncmp(p, key, klen) == 0 && p[klen] == '=' && p[klen + 1] == '"') {
            const char *v = p + klen + 2;
            size_t n = 0;
            while (v[n] && v[n] != '"' && n + 1 < cap) {
                if (v[n] == '\\' && v[n + 1])
                    v++;
                out[n] = v[n];
                n++;
            }
            out[n] = 0;
            return out;
        }
        /* next label: skip the quoted value */
        const char *q = strchr(p, '"');
        if (!q)
            break;
        q++;
        while (*q && *q != '"') {
            if (*q == '\\' && q[1])
                q++;
            q++;
        }
        p = *q ? q + 1 : q;
        if (*p == ',')
            p++;
    }
    return out;
}

static void hist_add(hist *h, double le, double count)
{
    for (int i = 0; i < h->n; i++) {
        if (h->le[i] == le) {
            h->count[i] += count;
            return;
        }
    }
    if (h->n == DASH_MAX_BUCKETS)
        return;
    int i = h->n++;
    while (i > 0 && h->le[i - 1] > le) {   /* keep sorted by bound */
        h->le[i] = h->le[i - 1];
        h->count[i] = h->count[i - 1];
        i--;
    }
    h->le[i] = le;
    h->count[i] = count;
}

/* Quantile q of the observations between prev and cur (same bounds), with
 * Prometheus' histogram_quantile interpolation; NAN when none. */
static double hist_quantile(const hist *cur, const hist *prev, double q)
{
    double d[DASH_MAX_BUCKETS];
    int n = cur->n;
    for (int i = 0; i < n; i++) {
        double p = 0;
        for (int k = 0; k < prev->n; k++)
            if (prev->le[k] == cur->le[i])
                p = prev->count[k];
        d[i] = cur->count[i] - p;
        if (d[i] < 0)
            d[i] = 0;
        if (i > 0 && d[i] < d[i - 1])
            d[i] = d[i - 1];   /* keep it cumulative despite a reset */
    }
    if (n == 0 || d[n - 1] <= 0)
        return NAN;
    double rank = q * d[n - 1];
    for (int i = 0; i < n; i++) {
        if (d[i] >= rank) {
            if (isinf(cur->le[i]))
                return i > 0 ? cur->le[i - 1] : NAN;
            double lo = i > 0 ? cur->le[i - 1] : 0, below = i > 0 ? d[i - 1] : 0;
            double in = d[i] - below;
            return in > 0 ? lo + (cur->le[i] - lo) * (rank - below) / in : cur->le[i];
        }
    }
    return NAN;
}

/* ---- one round: per component ------------------------------------------------ */

/* What a component's /metrics contributes; filled by metrics_cb. */
typedef struct scrape {
    totals *tot;
    const char *kind;
    json_t *lag_by_timeline;   /* pageserver: timeline_id -> ingest lag */
    json_t *lag_ms_by_timeline; /* pageserver: timeline_id -> ingest lag in ms */
    double queries, rows_read, rows_written, cpu_ms, pages_fetched, hits, misses;
    double replica_lag_bytes, replica_lag_s;   /* compute; NAN when absent */
    json_t *proxy;             /* proxy: arbor_proxy_<x> -> value, named <x> */
} scrape;

static void metrics_cb(const char *name, const char *labels, double v, void *arg)
{
    scrape *s = arg;
    totals *t = s->tot;
    char buf[128];
    if (s->proxy && strncmp(name, "arbor_proxy_", 12) == 0 && !strstr(name, "_bucket")) {
        json_object_set_new(s->proxy, name + 12, json_real(v));   /* unlabelled series */
        return;
    }
    if (strcmp(name, "arbor_compute_commit_seconds_bucket") == 0 ||
        strcmp(name, "arbor_safekeeper_flush_seconds_bucket") == 0 ||
        strcmp(name, "arbor_pageserver_getpage_seconds_bucket") == 0) {
        const char *le = label_value(labels, "le", buf, sizeof(buf));
        double bound = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
        hist *h = name[6] == 'c' ? &t->commit : name[6] == 's' ? &t->flush : &t->getpage;
        hist_add(h, bound, v);
    } else if (strcmp(name, "arbor_compute_commits_total") == 0) {
        t->commits += v;
    } else if (strcmp(name, "arbor_safekeeper_flush_seconds_count") == 0) {
        t->flushes += v;
    } else if (strcmp(name, "arbor_safekeeper_wal_written_bytes_total") == 0) {
        t->wal_bytes = v > t->wal_bytes ? v : t->wal_bytes;  /* each sk writes it all */
    } else if (strcmp(name, "arbor_pageserver_pages_served_total") == 0) {
        t->pages_served += v;
    } else if (strcmp(name, "arbor_pageserver_ingest_bytes_total") == 0) {
        t->ingest_bytes += v;
    } else if (strcmp(name, "arbor_pageserver_ingest_lag_bytes") == 0 && s->lag_by_timeline) {
        json_object_set_new(s->lag_by_timeline,
                            label_value(labels, "timeline_id", buf, sizeof(buf)),
                            json_integer((json_int_t)v));
    } else if (strcmp(name, "arbor_pageserver_ingest_lag_seconds") == 0 &&
               s->lag_ms_by_timeline) {
        json_object_set_new(s->lag_ms_by_timeline,
                            label_value(labels, "timeline_id", buf, sizeof(buf)),
                            json_real(v * 1000));
    } else if (strcmp(name, "arbor_compute_replica_apply_lag_bytes") == 0) {
        s->replica_lag_bytes = v;
    } else if (strcmp(name, "arbor_compute_replica_apply_lag_seconds") == 0) {
        s->replica_lag_s = v;
    } else if (strcmp(name, "arbor_compute_queries_total") == 0) {
        s->queries += v;
    } else if (strcmp(name, "arbor_compute_rows_read_total") == 0) {
        s->rows_read += v;
    } else if (strcmp(name, "arbor_compute_rows_written_total") == 0) {
        s->rows_written += v;
    } else if (strcmp(name, "arbor_compute_cpu_milliseconds_total") == 0) {
        s->cpu_ms += v;
    } else if (strcmp(name, "arbor_compute_pages_fetched_total") == 0) {
        s->pages_fetched += v;
    } else if (strcmp(name, "arbor_compute_cache_hits_total") == 0) {
        s->hits += v;
    } else if (strcmp(name, "arbor_compute_cache_misses_total") == 0) {
        s->misses += v;
    }
}

static const char *errno_word(int rc)
{
    switch (-rc) {
    case ECONNREFUSED: return "connection refused";
    case ETIMEDOUT: return "no answer (timed out)";
    case EPROTO: return "bad HTTP answer";
    default: return strerror(-rc);
    }
}

/* Probes one component (c: its state-file entry) into a new JSON object.
 * *status_out / *metrics_out: its documents (new reference / malloc'ed),
 * NULL when down. */
static json_t *probe(json_t *c, json_t **status_out, char **metrics_out)
{
    long pid = (long)json_integer_value(json_object_get(c, "pid"));
    uint64_t ticks = (uint64_t)json_integer_value(json_object_get(c, "start_ticks"));
    int http_port = (int)json_integer_value(json_object_get(c, "http_port"));
    uint64_t now_ticks;
    bool alive = pid > 0 && (ticks ? cli_proc_alive((pid_t)pid, ticks)
                                   : cli_proc_start_ticks((pid_t)pid, &now_ticks) == 0);
    json_t *o = json_pack("{s:s,s:s,s:I,s:b,s:i,s:i}",
                          "name", json_string_value(json_object_get(c, "name")) ?: "?",
                          "kind", json_string_value(json_object_get(c, "kind")) ?: "?",
                          "pid", (json_int_t)pid, "alive", alive, "http_port", http_port,
                          "grpc_port", (int)json_integer_value(json_object_get(c, "grpc_port")));
    *status_out = NULL;
    *metrics_out = NULL;
    char *body = NULL, detail[160];
    int rc = http_port > 0 ? http_get(http_port, "/v1/status", DASH_HTTP_TIMEOUT_MS, &body)
                           : -ENOENT;
    json_t *st = rc == 200 ? json_loads(body, 0, NULL) : NULL;
    az_free(body);
    if (st) {
        snprintf(detail, sizeof(detail), "pid %ld, HTTP %d", pid, http_port);
        *status_out = st;
        char *m = NULL;
        if (http_get(http_port, "/metrics", DASH_HTTP_TIMEOUT_MS, &m) == 200)
            *metrics_out = m;
        else
            az_free(m);
    } else if (pid <= 0) {
        snprintf(detail, sizeof(detail), "not running (stopped)");
    } else if (!alive) {
        snprintf(detail, sizeof(detail), "process %ld is gone", pid);
    } else {
        snprintf(detail, sizeof(detail), "pid %ld runs but HTTP %d: %s", pid, http_port,
                 rc < 0 ? errno_word(rc) : "error status");
    }
    json_object_set_new(o, "state", json_string(st ? "up" : "down"));
    json_object_set_new(o, "detail", json_string(detail));
    return o;
}

/* Safekeeper specifics from its /v1/status: term and per-timeline LSNs. */
static void add_safekeeper(json_t *o, json_t *st)
{
    json_object_set(o, "node_id", json_object_get(st, "node_id"));
    json_t *tls = json_array(), *t;
    json_int_t term = 0;
    size_t i;
    json_array_foreach(json_object_get(st, "timelines"), i, t) {
        json_int_t tt = json_integer_value(json_object_get(t, "term"));
        term = tt > term ? tt : term;
        json_array_append_new(tls, json_pack("{s:O?,s:O?,s:I,s:O?,s:O?}",
                                             "timeline_id", json_object_get(t, "timeline_id"),
                                             "tenant_id", json_object_get(t, "tenant_id"),
                                             "term", tt,
                                             "flush_lsn", json_object_get(t, "flush_lsn"),
                                             "commit_lsn", json_object_get(t, "commit_lsn")));
    }
    json_object_set_new(o, "term", json_integer(term));
    json_object_set_new(o, "timelines", tls);
}

/* lag_bytes of every up safekeeper's timeline: the best flush LSN of that
 * timeline among the up safekeepers minus its own. */
static void safekeeper_lags(json_t *comps)
{
    json_t *best = json_object(), *c, *t;
    size_t i, k;
    for (int pass = 0; pass < 2; pass++) {
        json_array_foreach(comps, i, c) {
            json_array_foreach(json_object_get(c, "timelines"), k, t) {
                if (strcmp(json_string_value(json_object_get(c, "kind")) ?: "", "safekeeper"))
                    continue;
                const char *id = json_string_value(json_object_get(t, "timeline_id")) ?: "";
                uint64_t flush = lsn_of(json_object_get(t, "flush_lsn"));
                uint64_t b = (uint64_t)json_integer_value(json_object_get(best, id));
                if (pass == 0 && flush > b)
                    json_object_set_new(best, id, json_integer((json_int_t)flush));
                if (pass == 1)
                    json_object_set_new(t, "lag_bytes", json_integer((json_int_t)(b - flush)));
            }
        }
    }
    json_decref(best);
}

/* The compute's identity and usage row. */
static json_t *add_compute(json_t *o, json_t *entry, json_t *st, const scrape *s)
{
    json_t *src = st ? st : entry;
    const char *branch = json_string_value(json_object_get(src, "branch"));
    /* The name the CLI gave it (what `arbor endpoint list` shows), else the
     * compute's own --endpoint (its metric label). */
    const char *ep = json_string_value(json_object_get(o, "name"));
    if (!ep || !strcmp(ep, "?"))
        ep = json_string_value(json_object_get(src, "endpoint"));
    json_object_set_new(o, "branch", json_string(branch ? branch : "?"));
    json_object_set_new(o, "endpoint", json_string(ep ? ep : "?"));
    if (st) {
        json_object_set(o, "role", json_object_get(st, "role"));
        json_object_set(o, "lsn", json_object_get(st, "lsn"));
        json_object_set(o, "sessions", json_object_get(st, "sessions"));
        json_object_set(o, "pg_port", json_object_get(st, "pg_port"));
        const char *role = json_string_value(json_object_get(st, "role"));
        if (role && !strcmp(role, "replica") && !isnan(s->replica_lag_s)) {
            json_object_set_new(o, "replica_lag_bytes",
                                json_integer((json_int_t)s->replica_lag_bytes));
            json_object_set_new(o, "replica_lag_ms",
                                json_real(s->replica_lag_s * 1000));
        }
    }
    json_t *u = json_pack("{s:s,s:s,s:O?}", "branch", branch ? branch : "?", "endpoint",
                          ep ? ep : "?", "state", json_object_get(o, "state"));
    static const char *const keys[] = { "queries", "rows_read", "rows_written", "cpu_ms",
                                        "pages_fetched", "cache_hits", "cache_misses" };
    const double vals[] = { s->queries, s->rows_read, s->rows_written, s->cpu_ms,
                            s->pages_fetched, s->hits, s->misses };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        json_object_set_new(u, keys[i], st ? json_integer((json_int_t)vals[i]) : json_null());
    return u;
}

/* Appends t and its descendants (DFS, children by name) to out. */
static void tree_visit(json_t *tls, json_t *t, const char *parent, int depth, json_t *out,
                       json_t *lags, json_t *lags_ms, json_t *comps)
{
    const char *id = json_string_value(json_object_get(t, "timeline_id")) ?: "";
    const char *name = json_string_value(json_object_get(t, "branch")) ?: id;
    json_t *eps = json_array(), *c;
    size_t i;
    json_array_foreach(comps, i, c) {
        const char *b = json_string_value(json_object_get(c, "branch"));
        if (json_object_get(c, "endpoint") && b && (!strcmp(b, name) || !strcmp(b, id)))
            json_array_append_new(eps, json_pack("{s:O?,s:O?}", "name",
                                                 json_object_get(c, "endpoint"),
                                                 "state", json_object_get(c, "state")));
    }
    json_t *lag = json_object_get(lags, id), *lag_ms = json_object_get(lags_ms, id);
    json_array_append_new(out, json_pack(
        "{s:s,s:s,s:s?,s:i,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:o,s:o,s:o}",
        "branch", name,
        "timeline_id", id, "parent", parent, "depth", depth,
        "ancestor_lsn", json_object_get(t, "ancestor_lsn"),
        "last_record_lsn", json_object_get(t, "last_record_lsn"),
        "disk_consistent_lsn", json_object_get(t, "disk_consistent_lsn"),
        "logical_size_bytes", json_object_get(t, "logical_size_bytes"),
        "physical_size_bytes", json_object_get(t, "physical_size_bytes"),
        "branch_only_size_bytes", json_object_get(t, "branch_only_size_bytes"),
        "local_size_bytes", json_object_get(t, "local_size_bytes"),
        "remote_size_bytes", json_object_get(t, "remote_size_bytes"),
        "billed_size_bytes", json_object_get(t, "billed_size_bytes"),
        "last_commit_timestamp_us", json_object_get(t, "last_commit_timestamp_us"),
        "ingest_lag_bytes", lag ? json_incref(lag) : json_null(),
        "ingest_lag_ms", lag_ms ? json_incref(lag_ms) : json_null(), "endpoints", eps));
    /* children, by name */
    for (;;) {
        json_t *next = NULL, *k;
        const char *next_name = NULL;
        json_array_foreach(tls, i, k) {
            const char *anc = json_string_value(json_object_get(k, "ancestor_timeline_id"));
            const char *kn = json_string_value(json_object_get(k, "branch")) ?: "";
            if (anc && !strcmp(anc, id) && !json_object_get(k, "_seen") &&
                (!next_name || strcmp(kn, next_name) < 0)) {
                next = k;
                next_name = kn;
            }
        }
        if (!next || depth > 64)
            break;
        json_object_set_new(next, "_seen", json_true());
        tree_visit(tls, next, name, depth + 1, out, lags, lags_ms, comps);
    }
}

/* The branch tree in tree order from the pageserver's timelines. */
static json_t *branch_tree(json_t *ps_status, json_t *lags, json_t *lags_ms, json_t *comps)
{
    json_t *tls = json_deep_copy(json_object_get(ps_status, "timelines"));
    json_t *out = json_array(), *t, *k;
    size_t i, j;
    /* roots: no ancestor, or an ancestor the pageserver does not list */
    for (int round = 0; round < 2; round++) {
        json_array_foreach(tls, i, t) {
            if (json_object_get(t, "_seen"))
                continue;
            const char *anc = json_string_value(json_object_get(t, "ancestor_timeline_id"));
            bool known = false;
            json_array_foreach(tls, j, k) {
                const char *kid = json_string_value(json_object_get(k, "timeline_id"));
                known = known || (anc && kid && !strcmp(anc, kid));
            }
            if (round == 1 || !known) {
                json_object_set_new(t, "_seen", json_true());
                tree_visit(tls, t, NULL, 0, out, lags, lags_ms, comps);
            }
        }
    }
    json_decref(tls);
    return out;
}

/* Adds the state file's components and "endpoints" entries to out. */
static void state_entries(json_t *state, json_t *out)
{
    json_t *e;
    size_t i;
    json_array_foreach(json_object_get(state, "components"), i, e)
        json_array_append(out, e);
    json_array_foreach(json_object_get(state, "endpoints"), i, e) {
        if (!json_is_object(e))
            continue;
        json_t *c = json_deep_copy(e);
        if (!json_object_get(c, "kind"))
            json_object_set_new(c, "kind", json_string("compute"));
        json_array_append_new(out, c);
    }
}

static bool kind_is(const char *kind, json_t *st, const char *want)
{
    const char *k = st ? json_string_value(json_object_get(st, "component")) : NULL;
    return !strcmp(k ? k : kind, want) ||
           (!k && !strcmp(want, "compute") && !strcmp(kind, "endpoint"));
}

/* One round: the /api/cluster document and the cumulative totals. Only the
 * sampler thread calls it (it owns g->last_branches). */
static json_t *collect(dash *g, totals *tot)
{
    memset(tot, 0, sizeof(*tot));
    tot->t_ms = wall_ms();
    json_t *doc = json_pack("{s:s,s:I}", "dir", g->dir, "sampled_at_ms", (json_int_t)tot->t_ms);
    json_t *comps = json_array(), *usage = json_array(), *entries = json_array();
    json_t *lags = json_object(), *lags_ms = json_object(), *ps_status = NULL;
    cli_state cs;
    json_t *state = NULL;
    if (cli_state_load(g->dir, &cs) == 0) {
        state = cli_state_to_json(&cs);
        cli_state_free(&cs);
    }
    if (!state)
        json_object_set_new(doc, "error", json_sprintf("no cluster state in %s "
                                                       "(arbor start --dir %s)", g->dir, g->dir));
    json_object_set(doc, "tenant_id", state ? json_object_get(state, "tenant_id") : NULL);
    if (!json_object_get(doc, "tenant_id"))
        json_object_set_new(doc, "tenant_id", json_null());
    state_entries(state, entries);
    json_t *e;
    size_t i;
    json_array_foreach(entries, i, e) {
        if (json_array_size(comps) >= DASH_MAX_COMPONENTS)
            break;
        json_t *st;
        char *m;
        json_t *o = probe(e, &st, &m);
        const char *kind = json_string_value(json_object_get(o, "kind"));
        bool is_ps = kind_is(kind, st, "pageserver");
        bool is_px = kind_is(kind, st, "proxy");
        scrape s = { .tot = tot, .kind = kind, .lag_by_timeline = is_ps ? lags : NULL,
                     .lag_ms_by_timeline = is_ps ? lags_ms : NULL,
                     .replica_lag_bytes = NAN, .replica_lag_s = NAN,
                     .proxy = is_px && m ? json_object() : NULL };
        if (m)
            prom_each(m, metrics_cb, &s);
        if (s.proxy)      /* arbor-proxy's counters, both doors (the proxy section) */
            json_object_set_new(doc, "proxy", s.proxy);
        if (kind_is(kind, st, "safekeeper")) {
            if (st)
                add_safekeeper(o, st);
            tot->n_safekeepers_up += st != NULL;
        } else if (is_ps && st && !ps_status) {
            ps_status = json_incref(st);
        } else if (kind_is(kind, st, "compute")) {
            json_array_append_new(usage, add_compute(o, e, st, &s));
            tot->n_computes += st != NULL;
        }
        json_array_append_new(comps, o);
        json_decref(st);
        az_free(m);
    }
    /* The control plane's view (its API): serverless endpoints and usage. */
    json_t *ctl = cli_api_dashboard(g->dir, DASH_HTTP_TIMEOUT_MS);
    json_object_set_new(doc, "control", ctl ? ctl : json_null());
    safekeeper_lags(comps);
    json_array_foreach(comps, i, e) {   /* the pageserver's per-timeline view */
        if (!ps_status || strcmp(json_string_value(json_object_get(e, "kind")) ?: "",
                                 "pageserver") || strcmp(json_string_value(
                                 json_object_get(e, "state")) ?: "", "up"))
            continue;
        json_t *tls = json_array(), *t;
        size_t k;
        json_array_foreach(json_object_get(ps_status, "timelines"), k, t) {
            const char *id = json_string_value(json_object_get(t, "timeline_id")) ?: "";
            json_t *lag = json_object_get(lags, id), *lag_ms = json_object_get(lags_ms, id);
            json_array_append_new(tls, json_pack("{s:s,s:O?,s:O?,s:O?,s:o,s:o}", "timeline_id", id,
                                                 "branch", json_object_get(t, "branch"),
                                                 "last_record_lsn",
                                                 json_object_get(t, "last_record_lsn"),
                                                 "wal_source", json_object_get(t, "wal_source"),
                                                 "ingest_lag_bytes",
                                                 lag ? json_incref(lag) : json_null(),
                                                 "ingest_lag_ms",
                                                 lag_ms ? json_incref(lag_ms) : json_null()));
        }
        json_object_set_new(e, "timelines", tls);
        break;
    }
    if (ps_status) {
        json_decref(g->last_branches);
        g->last_branches = branch_tree(ps_status, lags, lags_ms, comps);
    }
    json_object_set_new(doc, "components", comps);
    json_object_set_new(doc, "branches",
                        g->last_branches ? json_incref(g->last_branches) : json_array());
    json_object_set_new(doc, "branches_stale", json_boolean(!ps_status && g->last_branches));
    json_object_set_new(doc, "usage", usage);
    json_decref(lags);
    json_decref(lags_ms);
    json_decref(ps_status);
    json_decref(entries);
    json_decref(state);
    return doc;
}

/* ---- history ----------------------------------------------------------------- */

static double rate(double cur, double prev, double dt_s)
{
    return cur > prev ? (cur - prev) / dt_s : 0;
}

/* Appends the sample between g->prev and cur. Under g->mu. */
static void add_sample(dash *g, const totals *cur)
{
    const totals *p = &g->prev;
    if (g->have_prev && cur->t_ms > p->t_ms) {
        double dt = (double)(cur->t_ms - p->t_ms) / 1000.0;
        bool compute = cur->n_computes > 0;
        const hist *hc = compute ? &cur->commit : &cur->flush;
        const hist *hp = compute ? &p->commit : &p->flush;
        sample s = {
            .t_ms = cur->t_ms,
            .commit_p50_ms = hist_quantile(hc, hp, 0.5) * 1000,
            .commit_p99_ms = hist_quantile(hc, hp, 0.99) * 1000,
            .commits_per_s = compute ? rate(cur->commits, p->commits, dt)
                                     : rate(cur->flushes, p->flushes, dt) /
                                           (cur->n_safekeepers_up ? cur->n_safekeepers_up : 1),
            .commit_source = compute ? "compute" : "safekeeper",
            .wal_bytes_per_s = rate(cur->wal_bytes, p->wal_bytes, dt),
            .getpage_p50_ms = hist_quantile(&cur->getpage, &p->getpage, 0.5) * 1000,
            .getpage_p99_ms = hist_quantile(&cur->getpage, &p->getpage, 0.99) * 1000,
            .pages_per_s = rate(cur->pages_served, p->pages_served, dt),
            .ingest_bytes_per_s = rate(cur->ingest_bytes, p->ingest_bytes, dt),
        };
        g->hist[g->hist_head] = s;
        g->hist_head = (g->hist_head + 1) % DASH_HISTORY;
        if (g->hist_n < DASH_HISTORY)
            g->hist_n++;
    }
    g->prev = *cur;
    g->have_prev = true;
}

static json_t *num(double v)
{
    if (isnan(v) || isinf(v) || v > 1e15 || v < -1e15)
        return json_null();
    /* three decimals are plenty (and keep the JSON short); no libm */
    return json_real((double)(int64_t)(v * 1000 + (v < 0 ? -0.5 : 0.5)) / 1000);
}

static json_t *history_json(dash *g)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < g->hist_n; i++) {
        const sample *s = &g->hist[(g->hist_head - g->hist_n + i + DASH_HISTORY) % DASH_HISTORY];
        json_array_append_new(arr, json_pack(
            "{s:I,s:o,s:o,s:o,s:s,s:o,s:o,s:o,s:o,s:o}", "t_ms", (json_int_t)s->t_ms,
            "commit_p50_ms", num(s->commit_p50_ms), "commit_p99_ms", num(s->commit_p99_ms),
            "commits_per_s", num(s->commits_per_s), "commit_source", s->commit_source,
            "wal_bytes_per_s", num(s->wal_bytes_per_s),
            "getpage_p50_ms", num(s->getpage_p50_ms), "getpage_p99_ms", num(s->getpage_p99_ms),
            "pages_per_s", num(s->pages_per_s), "ingest_bytes_per_s", num(s->ingest_bytes_per_s)));
    }
    pthread_mutex_unlock(&g->mu);
    return json_pack("{s:i,s:o}", "interval_ms", DASH_SAMPLE_MS, "samples", arr);
}

/* ---- sampler ----------------------------------------------------------------- */

static void sample_once(dash *g)
{
    totals t;
    json_t *doc = collect(g, &t);
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    pthread_mutex_lock(&g->mu);
    free(g->cluster_json);
    g->cluster_json = s;
    add_sample(g, &t);
    pthread_mutex_unlock(&g->mu);
}

static void *sampler_main(void *arg)
{
    dash *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stopping) {
        struct timespec ts = clock_after_ms(CLOCK_MONOTONIC, DASH_SAMPLE_MS);
        while (!g->stopping && pthread_cond_timedwait(&g->cv, &g->mu, &ts) != ETIMEDOUT)
            ;
        if (g->stopping)
            break;
        pthread_mutex_unlock(&g->mu);
        sample_once(g);
        pthread_mutex_lock(&g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* ---- HTTP handlers ------------------------------------------------------------- */

static int h_cluster(const http_request *req, http_response *resp, void *arg)
{
    dash *g = arg;
    pthread_mutex_lock(&g->mu);
    char *copy = strdup(g->cluster_json ? g->cluster_json : "{}");
    pthread_mutex_unlock(&g->mu);
    http_respond_take(resp, 200, "application/json", copy, strlen(copy));
    http_response_header(resp, "Cache-Control", "no-store");
    return 0;
}

static int h_history(const http_request *req, http_response *resp, void *arg)
{
    json_t *j = history_json(arg);
    char *body = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(j);
    if (!body)
        return -ENOMEM;
    http_respond_take(resp, 200, "application/json", body, strlen(body));
    http_response_header(resp, "Cache-Control", "no-store");
    return 0;
}

/* GET /api/changes?branch=B[&from=LSN|&at=TIME]: the change feed up to
 * the head as NDJSON, one object per changed row (as `arbor changes
 * --json`, cli_changes.h). 400 with the reason on a bad request. */
static cli_dashboard_changes_fn g_changes_fn;

void cli_dashboard_set_changes(cli_dashboard_changes_fn fn)
{
    g_changes_fn = fn;
}

/* ---- the change feed as Server-Sent Events ------------------------------------ */

/* One client's feed: a thread runs the feed into a pipe; the connection's
 * thread reads it (sse_read) and frames each NDJSON line as an event. The
 * event id is the commit LSN *before* the row's commit: a client resuming
 * with Last-Event-ID gets the whole commit again (at least once), never a
 * part of it. */
typedef struct sse_feed {
    dash *g;
    char *branch, *from, *at;
    int rfd;
    FILE *out, *err;
    char *errs;
    size_t elen;
    atomic_bool cancel;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started, finished;
    int rc;
    char *line;              /* a partial line read so far */
    size_t line_len;
    char *pend;              /* framed bytes not yet handed to the server */
    size_t pend_len, pend_off;
    char cur_lsn[32], prev_lsn[32];
    bool ended;
    int idle_ms;
} sse_feed;

#define SSE_KEEPALIVE_MS 15000

static void sse_started(void *arg, uint64_t start)
{
    sse_feed *f = arg;
    pthread_mutex_lock(&f->mu);
    /* the first commit's events carry the start: resuming from it gets
     * that commit again */
    char l[LSN_STRLEN];
    snprintf(f->prev_lsn, sizeof(f->prev_lsn), "%s", lsn_format(start, l));
    f->started = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void *sse_main(void *arg)
{
    sse_feed *f = arg;
    cli_dashboard_feed df = { .branch = f->branch, .from = f->from, .at = f->at,
                              .follow = true, .cancel = &f->cancel, .started = sse_started,
                              .started_arg = f, .out = f->out, .err = f->err };
    int rc = g_changes_fn(f->g->dir, &df);
    fclose(f->out);   /* the reader sees the end */
    f->out = NULL;
    fflush(f->err);
    pthread_mutex_lock(&f->mu);
    f->rc = rc;
    f->finished = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

static void sse_free(sse_feed *f)
{
    if (f->rfd >= 0)
        close(f->rfd);
    if (f->err)
        fclose(f->err);
    free(f->errs);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    az_free(f->branch);
    az_free(f->from);
    az_free(f->at);
    az_free(f->line);
    az_free(f->pend);
    az_free(f);
}

static void sse_done(void *arg)
{
    sse_feed *f = arg;
    atomic_store(&f->cancel, true);
    close(f->rfd);   /* a writer blocked on a full pipe gets EPIPE */
    f->rfd = -1;
    pthread_join(f->th, NULL);
    sse_free(f);
}

static void pend_add(sse_feed *f, const char *s, size_t n)
{
    f->pend = az_realloc(f->pend, f->pend_len + n + 1);
    memcpy(f->pend + f->pend_len, s, n);
    f->pend_len += n;
}

/* One NDJSON line into an event. */
static void sse_frame(sse_feed *f, const char *line, size_t n)
{
    json_t *o = json_loadb(line, n, 0, NULL);
    const char *lsn = o ? json_string_value(json_object_get(o, "lsn")) : NULL;
    if (lsn && strcmp(lsn, f->cur_lsn) != 0) {
        if (f->cur_lsn[0])   /* else prev is the feed's start (sse_started) */
            snprintf(f->prev_lsn, sizeof(f->prev_lsn), "%s", f->cur_lsn);
        snprintf(f->cur_lsn, sizeof(f->cur_lsn), "%s", lsn);
    }
    json_decref(o);
    if (f->prev_lsn[0]) {
        char id[48];
        int k = snprintf(id, sizeof(id), "id: %s\n", f->prev_lsn);
        pend_add(f, id, (size_t)k);
    }
    pend_add(f, "data: ", 6);
    pend_add(f, line, n);
    pend_add(f, "\n\n", 2);
}

static void sse_take_lines(sse_feed *f)
{
    size_t start = 0;
    for (size_t i = 0; i < f->line_len; i++) {
        if (f->line[i] == '\n') {
            if (i > start)
                sse_frame(f, f->line + start, i - start);
            start = i + 1;
        }
    }
    memmove(f->line, f->line + start, f->line_len - start);
    f->line_len -= start;
}

static void sse_error_event(sse_feed *f)
{
    fflush(f->err);
    json_t *j = json_pack("{s:s}", "error", f->errs && *f->errs ? f->errs : "the feed ended");
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    pend_add(f, "event: error\ndata: ", 19);
    pend_add(f, s, strlen(s));
    pend_add(f, "\n\n", 2);
    free(s);
}

static ssize_t sse_read(void *arg, char *buf, size_t max)
{
    sse_feed *f = arg;
    while (f->pend_off == f->pend_len) {
        f->pend_off = f->pend_len = 0;
        if (f->ended)
            return 0;
        struct pollfd p = { .fd = f->rfd, .events = POLLIN };
        int pr = poll(&p, 1, 1000);
        if (pr == 0) {
            pthread_mutex_lock(&f->g->mu);
            bool stopping = f->g->stopping;
            pthread_mutex_unlock(&f->g->mu);
            if (stopping)
                return 0;   /* the server stops: end the stream */
            f->idle_ms += 1000;
            if (f->idle_ms >= SSE_KEEPALIVE_MS) {
                f->idle_ms = 0;
                pend_add(f, ": keep-alive\n\n", 14);   /* also notices a client that left */
                break;
            }
            continue;
        }
        f->idle_ms = 0;
        if (pr < 0 && errno == EINTR)
            continue;
        char tmp[16384];
        ssize_t n = pr < 0 ? -1 : read(f->rfd, tmp, sizeof(tmp));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* the feed ended: an error (or the end of the WAL) */
            pthread_mutex_lock(&f->mu);
            while (!f->finished)
                pthread_cond_wait(&f->cv, &f->mu);
            int rc = f->rc;
            pthread_mutex_unlock(&f->mu);
            if (rc != 0)
                sse_error_event(f);
            f->ended = true;
            continue;
        }
        f->line = az_realloc(f->line, f->line_len + (size_t)n + 1);
        memcpy(f->line + f->line_len, tmp, (size_t)n);
        f->line_len += (size_t)n;
        sse_take_lines(f);
    }
    size_t k = f->pend_len - f->pend_off < max ? f->pend_len - f->pend_off : max;
    memcpy(buf, f->pend + f->pend_off, k);
    f->pend_off += k;
    return (ssize_t)k;
}

static bool wants_sse(const http_request *req)
{
    const char *fl = http_request_query(req, "follow");
    const char *acc = http_request_header(req, "Accept");
    return (fl && (strcmp(fl, "1") == 0 || strcmp(fl, "true") == 0)) ||
           (acc && strstr(acc, "text/event-stream"));
}

static void respond_feed_error(http_response *resp, int rc, const char *errs)
{
    json_t *j = json_pack("{s:s}", "error", errs && *errs ? errs : "failed");
    char *jb = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    http_respond_take(resp, rc == -EINVAL ? 400 : 502, "application/json", jb, strlen(jb));
}

/* Starts the feed thread; answers with the stream once it streams, or with
 * the error it ended with. */
static int h_changes_sse(dash *g, const http_request *req, http_response *resp)
{
    const char *branch = http_request_query(req, "branch");
    const char *from = http_request_query(req, "from");
    const char *resume = http_request_header(req, "Last-Event-ID");
    sse_feed *f = az_calloc(1, sizeof(*f));
    f->g = g;
    f->branch = az_strdup(branch ? branch : "main");
    f->from = resume && *resume ? az_strdup(resume) : from ? az_strdup(from) : NULL;
    f->at = f->from ? NULL : http_request_query(req, "at")
                                 ? az_strdup(http_request_query(req, "at")) : NULL;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    atomic_init(&f->cancel, false);
    int fds[2];
    f->rfd = -1;
    f->err = open_memstream(&f->errs, &f->elen);
    if (!f->err || pipe2(fds, O_CLOEXEC) != 0) {
        sse_free(f);
        return -ENOMEM;
    }
    f->rfd = fds[0];
    f->out = fdopen(fds[1], "w");
    if (!f->out) {
        close(fds[1]);
        sse_free(f);
        return -ENOMEM;
    }
    if (pthread_create(&f->th, NULL, sse_main, f) != 0) {
        fclose(f->out);
        sse_free(f);
        return -ENOMEM;
    }
    pthread_mutex_lock(&f->mu);
    while (!f->started && !f->finished)
        pthread_cond_wait(&f->cv, &f->mu);
    bool failed = f->finished && f->rc != 0;
    int rc = f->rc;
    pthread_mutex_unlock(&f->mu);
    if (failed) {
        pthread_join(f->th, NULL);
        fflush(f->err);
        respond_feed_error(resp, rc, f->errs);
        sse_free(f);
        return 0;
    }
    http_respond_stream(resp, 200, "text/event-stream", sse_read, sse_done, f);
    http_response_header(resp, "Cache-Control", "no-store");
    http_response_header(resp, "X-Accel-Buffering", "no");
    return 0;
}

static int h_changes(const http_request *req, http_response *resp, void *arg)
{
    dash *g = arg;
    if (!g_changes_fn) {
        http_respond_printf(resp, 404, NULL, "no change feed in this server\n");
        return 0;
    }
    if (wants_sse(req))
        return h_changes_sse(g, req, resp);
    const char *branch = http_request_query(req, "branch");
    char *body = NULL, *errs = NULL;
    size_t len = 0, elen = 0;
    FILE *out = open_memstream(&body, &len);
    /* the messages cli_err prints: kept for the reply */
    FILE *err = open_memstream(&errs, &elen);
    if (!out || !err) {
        if (out)
            fclose(out);
        if (err)
            fclose(err);
        free(body);
        free(errs);
        return -ENOMEM;
    }
    cli_dashboard_feed df = { .branch = branch ? branch : "main",
                              .from = http_request_query(req, "from"),
                              .at = http_request_query(req, "at"), .out = out, .err = err };
    int rc = g_changes_fn(g->dir, &df);
    fclose(out);
    fclose(err);
    if (rc == 0) {
        http_respond_take(resp, 200, "application/x-ndjson", body, len);
        http_response_header(resp, "Cache-Control", "no-store");
        free(errs);
        return 0;
    }
    free(body);
    respond_feed_error(resp, rc, errs);
    free(errs);
    return 0;
}

static int h_asset(const http_request *req, http_response *resp, void *arg)
{
    const char *path = http_request_path(req);
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    for (const cli_dashboard_asset *a = cli_dashboard_assets; a->path; a++) {
        if (strcmp(a->path, path) == 0) {
            http_respond(resp, 200, a->content_type, a->data, a->len);
            http_response_header(resp, "Cache-Control", "no-cache");
            return 0;
        }
    }
    http_respond_printf(resp, 404, NULL, "not found: %s\n", path);
    return 0;
}

/* ---- run ----------------------------------------------------------------------- */

static void dash_free(dash *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->cluster_json);
    json_decref(g->last_branches);
    free(g);
}

int cli_dashboard_run(const char *data_dir, int port, int *bound_port_out)
{
    if (port < 0 || port > 65535) {
        fprintf(stderr, "arbor: error: bad port %d\n", port);
        return -EINVAL;
    }
    sigset_t sigs;
    dmn_signals_block(&sigs);
    dash *g = calloc(1, sizeof(*g));
    snprintf(g->dir, sizeof(g->dir), "%s", data_dir);
    pthread_mutex_init(&g->mu, NULL);
    clock_cond_init_mono(&g->cv);
    sample_once(g);   /* the first document exists before anyone can ask */
    http_server *srv = NULL;
    int rc = http_server_start("127.0.0.1", (uint16_t)port, &srv);
    if (rc != 0) {
        fprintf(stderr, "arbor: error: cannot listen on 127.0.0.1:%d: %s\n", port,
                strerror(-rc));
        dash_free(g);
        return rc;
    }
    rc = http_route(srv, "GET", "/api/cluster", HTTP_MATCH_EXACT, h_cluster, g);
    if (rc == 0)
        rc = http_route(srv, "GET", "/api/metrics/history", HTTP_MATCH_EXACT, h_history, g);
    if (rc == 0)
        rc = http_route(srv, "GET", "/api/changes", HTTP_MATCH_EXACT, h_changes, g);
    if (rc == 0)
        rc = http_route(srv, "GET", "/", HTTP_MATCH_PREFIX, h_asset, g);
    pthread_t sampler;
    if (rc == 0)
        rc = -pthread_create(&sampler, NULL, sampler_main, g);
    if (rc != 0) {
        fprintf(stderr, "arbor: error: cannot start the dashboard: %s\n", strerror(-rc));
        http_server_stop(srv);
        dash_free(g);
        return rc;
    }
    unsigned bound = http_server_port(srv);
    if (bound_port_out)
        *bound_port_out = (int)bound;
    printf("arbor: dashboard on http://127.0.0.1:%u/ (cluster in %s; Ctrl-C stops it)\n",
           bound, data_dir);
    fflush(stdout);
    dmn_signals_wait(&sigs);
    pthread_mutex_lock(&g->mu);
    g->stopping = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(sampler, NULL);
    http_server_stop(srv);
    dash_free(g);
    return 0;
}
