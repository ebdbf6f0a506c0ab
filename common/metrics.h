/*
 * metrics — Prometheus-style counters, gauges and histograms (prefix met_).
 *
 * A registry (met_registry) holds metric families. A family has a name, a
 * help line, a kind and a fixed list of label names (possibly none); its
 * children are the label-value combinations, created on first use:
 *
 *   met_family *f;
 *   met_family_new(reg, MET_HISTOGRAM, "arbor_pageserver_getpage_seconds",
 *                  "GetPage latency", (const char *[]){"timeline", NULL},
 *                  met_latency_buckets_seconds, MET_LATENCY_BUCKETS_COUNT, &f);
 *   met_histogram *h;
 *   met_histogram_get(f, (const char *[]){timeline_hex}, &h);   // cache h
 *   met_histogram_observe(h, 0.0012);                           // hot path
 *
 * Unlabelled metrics have a one-call form (met_counter_new & co.).
 *
 * Threading and cost: updates (inc/add/set/observe) are lock-free C11 atomics
 * and may be called from any thread. Creating families and children and
 * rendering take the registry mutex: look a child up once and keep the
 * pointer. Child pointers stay valid until met_family_remove of that child
 * or met_registry_free.
 *
 * Names: metric names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* and may not start with "__" ("le" is also refused
 * for histograms); violations return -EINVAL. A second family with the same
 * name returns -EEXIST.
 *
 * met_render produces the text exposition format 0.0.4: families in
 * registration order, children in creation order, each family preceded by
 * # HELP and # TYPE; label values and help text escaped; histograms as
 * cumulative _bucket{le="..."} lines ending with le="+Inf", then _sum and
 * _count (_count is the +Inf bucket, so the two always agree).
 */
#ifndef ARBOR_METRICS_H
#define ARBOR_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct met_registry met_registry;
typedef struct met_family met_family;
typedef struct met_counter met_counter;
typedef struct met_gauge met_gauge;
typedef struct met_histogram met_histogram;

typedef enum { MET_COUNTER, MET_GAUGE, MET_HISTOGRAM } met_kind;

/* A gauge whose value is computed at scrape time. Called with the registry
 * mutex held (from the scraping thread): it must not touch the registry. */
typedef double (*met_gauge_fn)(void *arg);

/* Latency buckets in seconds, 100µs .. 10s; a sensible default. */
#define MET_LATENCY_BUCKETS_COUNT 16
extern const double met_latency_buckets_seconds[MET_LATENCY_BUCKETS_COUNT];

/* Registries. met_registry_free releases every family and child; nothing may
 * use them (or render) concurrently. */
int met_registry_new(met_registry **out);
void met_registry_free(met_registry *reg);
/* The process-wide registry daemons export on /metrics; created on first
 * call (thread-safe), never freed. */
met_registry *met_default_registry(void);

/*
 * Registers a family. label_names: NULL-terminated array, or NULL for none
 * (copied). bounds/n_bounds: histogram bucket upper bounds, finite and
 * strictly increasing (copied; +Inf is implicit); must be NULL/0 for other
 * kinds. *out is owned by the registry.
 */
int met_family_new(met_registry *reg, met_kind kind, const char *name, const char *help,
                   const char *const *label_names, const double *bounds, size_t n_bounds,
                   met_family **out);

/*
 * The child for label_values (exactly as many as the family has label
 * names; any strings, copied), created on first use. -EINVAL if the family
 * is of another kind. Owned by the registry.
 */
int met_counter_get(met_family *fam, const char *const *label_values, met_counter **out);
int met_gauge_get(met_family *fam, const char *const *label_values, met_gauge **out);
int met_histogram_get(met_family *fam, const char *const *label_values, met_histogram **out);
/* Drops a child (e.g. for a deleted timeline). The caller guarantees no
 * thread still uses its pointer. -ENOENT if there is none. */
int met_family_remove(met_family *fam, const char *const *label_values);

/* Unlabelled shorthands: family + its single child. */
int met_counter_new(met_registry *reg, const char *name, const char *help, met_counter **out);
int met_gauge_new(met_registry *reg, const char *name, const char *help, met_gauge **out);
int met_histogram_new(met_registry *reg, const char *name, const char *help,
                      const double *bounds, size_t n_bounds, met_histogram **out);
/* An unlabelled gauge computed by fn(arg) at every scrape. */
int met_gauge_callback_new(met_registry *reg, const char *name, const char *help,
                           met_gauge_fn fn, void *arg);

/* Hot path: lock-free, any thread. Counters are integers and only go up. */
void met_counter_inc(met_counter *c);
void met_counter_add(met_counter *c, uint64_t n);
uint64_t met_counter_value(const met_counter *c);

void met_gauge_set(met_gauge *g, double v);
void met_gauge_add(met_gauge *g, double delta);
double met_gauge_value(const met_gauge *g);
/* Turns this child into a callback gauge (fn NULL turns it back). Not for
 * the hot path: takes the registry mutex. */
void met_gauge_set_callback(met_gauge *g, met_gauge_fn fn, void *arg);

void met_histogram_observe(met_histogram *h, double v);
/* Total observations so far. */
uint64_t met_histogram_count(const met_histogram *h);

/* The registry as Prometheus text (format 0.0.4), malloc'ed and
 * NUL-terminated (free() it); *len excludes the NUL. 0 or -errno. */
int met_render(met_registry *reg, char **out, size_t *len);

/* Content-Type for met_render's output. */
#define MET_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
