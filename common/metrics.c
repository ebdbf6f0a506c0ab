/*
 * metrics — see metrics.h.
 *
 * Layout: a registry owns an array of families; a family owns an array of
 * child pointers (children are allocated one by one so their addresses never
 * move while the array grows). The registry mutex guards both arrays and
 * gauge callbacks; metric values themselves are atomics that writers update
 * without it. Doubles (gauges, histogram sums) live in _Atomic uint64_t as
 * their bit patterns and are added with a CAS loop, since C11 has no atomic
 * floating-point add that works everywhere lock-free.
 *
 * Relaxed ordering is enough: a scrape needs each value to be some value the
 * metric had, not a consistent cut across metrics.
 */
#include "metrics.h"
#include "alloc.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double met_latency_buckets_seconds[MET_LATENCY_BUCKETS_COUNT] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10,
};

typedef struct child_hdr {
    met_family *fam;
    char **label_values;  /* fam->n_labels strings */
} child_hdr;

/* The child types all start with child_hdr, so a child_hdr * converts. */
struct met_counter {
    child_hdr h;
    _Atomic uint64_t value;
};

struct met_gauge {
    child_hdr h;
    _Atomic uint64_t bits;  /* double */
    met_gauge_fn fn;        /* under the registry mutex */
    void *fn_arg;
};

struct met_histogram {
    child_hdr h;
    _Atomic uint64_t sum_bits;  /* double */
    _Atomic uint64_t buckets[]; /* fam->n_bounds + 1, not cumulative; last is +Inf */
};

struct met_family {
    met_registry *reg;
    met_kind kind;
    char *name;
    char *help;
    char **label_names;
    size_t n_labels;
    double *bounds;
    size_t n_bounds;
    child_hdr **children;
    size_t n_children, cap_children;
};

struct met_registry {
    pthread_mutex_t lock;
    met_family **families;
    size_t n_families, cap_families;
};

/* The module's one global: the default registry, built once. */
static struct {
    pthread_once_t once;
    met_registry *reg;
} met_default = { PTHREAD_ONCE_INIT, NULL };

static uint64_t dbits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof(b));
    return b;
}

static double bitsd(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof(v));
    return v;
}

static void atomic_add_double(_Atomic uint64_t *bits, double delta)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(bits, &old, dbits(bitsd(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* ---- names ---------------------------------------------------------- */

static bool valid_name(const char *s, bool allow_colon)
{
    if (!s || !*s) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (allow_colon && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok) {
            return false;
        }
    }
    return true;
}

static bool valid_label_name(const char *s, met_kind kind)
{
    return valid_name(s, false) && strncmp(s, "__", 2) != 0 &&
           !(kind == MET_HISTOGRAM && strcmp(s, "le") == 0);
}

/* ---- registry ------------------------------------------------------- */

int met_registry_new(met_registry **out)
{
    met_registry *reg = az_calloc(1, sizeof(*reg));
    int rc = pthread_mutex_init(&reg->lock, NULL);
    if (rc != 0) {
        az_free(reg);
        return -rc;
    }
    *out = reg;
    return 0;
}

static void free_strings(char **v, size_t n)
{
    if (!v) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        az_free(v[i]);
    }
    az_free(v);
}

static void free_child(child_hdr *c)
{
    free_strings(c->label_values, c->fam->n_labels);
    az_free(c);
}

static void free_family(met_family *f)
{
    for (size_t i = 0; i < f->n_children; i++) {
        free_child(f->children[i]);
    }
    az_free(f->children);
    free_strings(f->label_names, f->n_labels);
    az_free(f->bounds);
    az_free(f->name);
    az_free(f->help);
    az_free(f);
}

void met_registry_free(met_registry *reg)
{
    if (!reg) {
        return;
    }
    for (size_t i = 0; i < reg->n_families; i++) {
        free_family(reg->families[i]);
    }
    az_free(reg->families);
    pthread_mutex_destroy(&reg->lock);
    az_free(reg);
}

static void default_init(void)
{
    if (met_registry_new(&met_default.reg) != 0) {
        abort(); /* only pthread_mutex_init can fail, and not on Linux */
    }
}

met_registry *met_default_registry(void)
{
    pthread_once(&met_default.once, default_init);
    return met_default.reg;
}

/* ---- families and children ------------------------------------------ */

static int check_family_args(met_kind kind, const char *name, const char *const *label_names,
                             const double *bounds, size_t n_bounds, size_t *n_labels)
{
    if (!valid_name(name, true)) {
        return -EINVAL;
    }
    size_t n = 0;
    for (; label_names && label_names[n]; n++) {
        if (!valid_label_name(label_names[n], kind)) {
            return -EINVAL;
        }
        for (size_t j = 0; j < n; j++) {
            if (strcmp(label_names[j], label_names[n]) == 0) {
                return -EINVAL; /* duplicate label name */
            }
        }
    }
    if (kind == MET_HISTOGRAM) {
        for (size_t i = 0; i < n_bounds; i++) {
            if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
                return -EINVAL;
            }
        }
    } else if (n_bounds != 0) {
        return -EINVAL;
    }
    *n_labels = n;
    return 0;
}

static met_family *find_family(met_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->n_families; i++) {
        if (strcmp(reg->families[i]->name, name) == 0) {
            return reg->families[i];
        }
    }
    return NULL;
}

int met_family_new(met_registry *reg, met_kind kind, const char *name, const char *help,
                   const char *const *label_names, const double *bounds, size_t n_bounds,
                   met_family **out)
{
    size_t n_labels;
    int rc = check_family_args(kind, name, label_names, bounds, n_bounds, &n_labels);
    if (rc != 0) {
        return rc;
    }
    met_family *f = az_calloc(1, sizeof(*f));
    f->reg = reg;
    f->kind = kind;
    f->name = az_strdup(name);
    f->help = az_strdup(help ? help : "");
    f->n_labels = n_labels;
    if (n_labels > 0) {
        f->label_names = az_calloc(n_labels, sizeof(char *));
        for (size_t i = 0; i < n_labels; i++) {
            f->label_names[i] = az_strdup(label_names[i]);
        }
    }
    f->n_bounds = n_bounds;
    if (n_bounds > 0) {
        f->bounds = az_malloc(n_bounds * sizeof(double));
        memcpy(f->bounds, bounds, n_bounds * sizeof(double));
    }
    pthread_mutex_lock(&reg->lock);
    if (find_family(reg, name)) {
        pthread_mutex_unlock(&reg->lock);
        free_family(f);
        return -EEXIST;
    }
    if (reg->n_families == reg->cap_families) {
        reg->cap_families = reg->cap_families ? reg->cap_families * 2 : 16;
        reg->families = az_realloc(reg->families, reg->cap_families * sizeof(met_family *));
    }
    reg->families[reg->n_families++] = f;
    pthread_mutex_unlock(&reg->lock);
    *out = f;
    return 0;
}

/* Index of the child with these values, or n_children. Lock held. */
static size_t find_child(const met_family *f, const char *const *values)
{
    for (size_t i = 0; i < f->n_children; i++) {
        size_t j = 0;
        while (j < f->n_labels && strcmp(f->children[i]->label_values[j], values[j]) == 0) {
            j++;
        }
        if (j == f->n_labels) {
            return i;
        }
    }
    return f->n_children;
}

static size_t child_size(const met_family *f)
{
    switch (f->kind) {
    case MET_COUNTER: return sizeof(met_counter);
    case MET_GAUGE: return sizeof(met_gauge);
    case MET_HISTOGRAM: return sizeof(met_histogram) + (f->n_bounds + 1) * sizeof(_Atomic uint64_t);
    }
    return 0;
}

static int get_child(met_family *f, met_kind kind, const char *const *values, child_hdr **out)
{
    if (f->kind != kind) {
        return -EINVAL;
    }
    for (size_t i = 0; i < f->n_labels; i++) {
        if (!values || !values[i]) {
            return -EINVAL;
        }
    }
    pthread_mutex_lock(&f->reg->lock);
    size_t i = find_child(f, values);
    if (i == f->n_children) {
        /* calloc: all-zero bits are 0 for the integer atomics and 0.0 for
         * the doubles, and atomic_init of zero is what we want. */
        child_hdr *c = az_calloc(1, child_size(f));
        c->fam = f;
        if (f->n_labels > 0) {
            c->label_values = az_calloc(f->n_labels, sizeof(char *));
            for (size_t j = 0; j < f->n_labels; j++) {
                c->label_values[j] = az_strdup(values[j]);
            }
        }
        if (f->n_children == f->cap_children) {
            f->cap_children = f->cap_children ? f->cap_children * 2 : 4;
            f->children = az_realloc(f->children, f->cap_children * sizeof(child_hdr *));
        }
        f->children[f->n_children++] = c;
    }
    *out = f->children[i];
    pthread_mutex_unlock(&f->reg->lock);
    return 0;
}

int met_counter_get(met_family *fam, const char *const *label_values, met_counter **out)
{
    return get_child(fam, MET_COUNTER, label_values, (child_hdr **)out);
}

int met_gauge_get(met_family *fam, const char *const *label_values, met_gauge **out)
{
    return get_child(fam, MET_GAUGE, label_values, (child_hdr **)out);
}

int met_histogram_get(met_family *fam, const char *const *label_values, met_histogram **out)
{
    return get_child(fam, MET_HISTOGRAM, label_values, (child_hdr **)out);
}

int met_family_remove(met_family *fam, const char *const *label_values)
{
    for (size_t i = 0; i < fam->n_labels; i++) {
        if (!label_values || !label_values[i]) {
            return -EINVAL;
        }
    }
    pthread_mutex_lock(&fam->reg->lock);
    size_t i = find_child(fam, label_values);
    if (i == fam->n_children) {
        pthread_mutex_unlock(&fam->reg->lock);
        return -ENOENT;
    }
    child_hdr *c = fam->children[i];
    /* Keep creation order for the rest: render output stays stable. */
    memmove(&fam->children[i], &fam->children[i + 1],
            (fam->n_children - i - 1) * sizeof(child_hdr *));
    fam->n_children--;
    pthread_mutex_unlock(&fam->reg->lock);
    free_child(c);
    return 0;
}

int met_counter_new(met_registry *reg, const char *name, const char *help, met_counter **out)
{
    met_family *f;
    int rc = met_family_new(reg, MET_COUNTER, name, help, NULL, NULL, 0, &f);
    return rc ? rc : met_counter_get(f, NULL, out);
}

int met_gauge_new(met_registry *reg, const char *name, const char *help, met_gauge **out)
{
    met_family *f;
    int rc = met_family_new(reg, MET_GAUGE, name, help, NULL, NULL, 0, &f);
    return rc ? rc : met_gauge_get(f, NULL, out);
}

int met_histogram_new(met_registry *reg, const char *name, const char *help,
                      const double *bounds, size_t n_bounds, met_histogram **out)
{
    met_family *f;
    int rc = met_family_new(reg, MET_HISTOGRAM, name, help, NULL, bounds, n_bounds, &f);
    return rc ? rc : met_histogram_get(f, NULL, out);
}

int met_gauge_callback_new(met_registry *reg, const char *name, const char *help,
                           met_gauge_fn fn, void *arg)
{
    met_gauge *g;
    int rc = met_gauge_new(reg, name, help, &g);
    if (rc == 0) {
        met_gauge_set_callback(g, fn, arg);
    }
    return rc;
}

/* ---- hot path ------------------------------------------------------- */

void met_counter_inc(met_counter *c)
{
    atomic_fetch_add_explicit(&c->value, 1, memory_order_relaxed);
}

void met_counter_add(met_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

uint64_t met_counter_value(const met_counter *c)
{
    return atomic_load_explicit(&((met_counter *)c)->value, memory_order_relaxed);
}

void met_gauge_set(met_gauge *g, double v)
{
    atomic_store_explicit(&g->bits, dbits(v), memory_order_relaxed);
}

void met_gauge_add(met_gauge *g, double delta)
{
    atomic_add_double(&g->bits, delta);
}

double met_gauge_value(const met_gauge *g)
{
    return bitsd(atomic_load_explicit(&((met_gauge *)g)->bits, memory_order_relaxed));
}

void met_gauge_set_callback(met_gauge *g, met_gauge_fn fn, void *arg)
{
    pthread_mutex_lock(&g->h.fam->reg->lock);
    g->fn = fn;
    g->fn_arg = arg;
    pthread_mutex_unlock(&g->h.fam->reg->lock);
}

void met_histogram_observe(met_histogram *h, double v)
{
    const met_family *f = h->h.fam;
    /* Binary search for the first bound >= v ("le" is inclusive); NaN and
     * values above every bound land in +Inf. */
    size_t lo = 0, hi = f->n_bounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= f->bounds[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if (isnan(v)) {
        lo = f->n_bounds;
    }
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    atomic_add_double(&h->sum_bits, v);
}

uint64_t met_histogram_count(const met_histogram *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= h->h.fam->n_bounds; i++) {
        n += atomic_load_explicit(&((met_histogram *)h)->buckets[i], memory_order_relaxed);
    }
    return n;
}

/* ---- rendering ------------------------------------------------------ */

typedef struct strbuf {
    char *p;
    size_t len, cap;
} strbuf;

static void sb_reserve(strbuf *sb, size_t extra)
{
    if (sb->len + extra + 1 > sb->cap) {
        while (sb->len + extra + 1 > sb->cap) {
            sb->cap = sb->cap ? sb->cap * 2 : 4096;
        }
        sb->p = az_realloc(sb->p, sb->cap);
    }
}

static void sb_put(strbuf *sb, const char *s, size_t n)
{
    sb_reserve(sb, n);
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
}

static void sb_puts(strbuf *sb, const char *s)
{
    sb_put(sb, s, strlen(s));
}

static void sb_printf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) {
        return;
    }
    sb_reserve(sb, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(sb->p + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

/* Escapes '\\' and '\n', plus '"' when quoted (label values). */
static void sb_escaped(strbuf *sb, const char *s, bool quoted)
{
    for (; *s; s++) {
        if (*s == '\\') {
            sb_put(sb, "\\\\", 2);
        } else if (*s == '\n') {
            sb_put(sb, "\\n", 2);
        } else if (quoted && *s == '"') {
            sb_put(sb, "\\\"", 2);
        } else {
            sb_put(sb, s, 1);
        }
    }
}

/* Shortest text that reads back as the same double, as Go's client does:
 * 0.1 prints as "0.1", not 0.10000000000000001. */
static void format_double(char buf[40], double v)
{
    if (isnan(v)) {
        strcpy(buf, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(buf, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, 40, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) {
            return;
        }
    }
}

/* name{l1="v1",...[,le="x"]} */
static void sb_series(strbuf *sb, const met_family *f, const char *suffix, const child_hdr *c,
                      const char *le)
{
    sb_puts(sb, f->name);
    sb_puts(sb, suffix);
    if (f->n_labels == 0 && !le) {
        sb_put(sb, " ", 1);
        return;
    }
    sb_put(sb, "{", 1);
    for (size_t i = 0; i < f->n_labels; i++) {
        sb_printf(sb, "%s%s=\"", i ? "," : "", f->label_names[i]);
        sb_escaped(sb, c->label_values[i], true);
        sb_put(sb, "\"", 1);
    }
    if (le) {
        sb_printf(sb, "%sle=\"%s\"", f->n_labels ? "," : "", le);
    }
    sb_put(sb, "} ", 2);
}

static void render_child(strbuf *sb, const met_family *f, const child_hdr *c)
{
    char num[40];
    switch (f->kind) {
    case MET_COUNTER:
        sb_series(sb, f, "", c, NULL);
        sb_printf(sb, "%" PRIu64 "\n", met_counter_value((const met_counter *)c));
        break;
    case MET_GAUGE: {
        const met_gauge *g = (const met_gauge *)c;
        format_double(num, g->fn ? g->fn(g->fn_arg) : met_gauge_value(g));
        sb_series(sb, f, "", c, NULL);
        sb_printf(sb, "%s\n", num);
        break;
    }
    case MET_HISTOGRAM: {
        met_histogram *h = (met_histogram *)c;
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= f->n_bounds; i++) {
            cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
            if (i < f->n_bounds) {
                format_double(num, f->bounds[i]);
            } else {
                strcpy(num, "+Inf");
            }
            sb_series(sb, f, "_bucket", c, num);
            sb_printf(sb, "%" PRIu64 "\n", cumulative);
        }
        format_double(num, bitsd(atomic_load_explicit(&h->sum_bits, memory_order_relaxed)));
        sb_series(sb, f, "_sum", c, NULL);
        sb_printf(sb, "%s\n", num);
        sb_series(sb, f, "_count", c, NULL);
        sb_printf(sb, "%" PRIu64 "\n", cumulative);
        break;
    }
    }
}

int met_render(met_registry *reg, char **out, size_t *len)
{
    static const char *const kind_names[] = { "counter", "gauge", "histogram" };
    strbuf sb = { NULL, 0, 0 };
    sb_reserve(&sb, 0);
    sb.p[0] = '\0';
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->n_families; i++) {
        const met_family *f = reg->families[i];
        if (f->n_children == 0) {
            continue; /* a labelled family nobody used yet: nothing to say */
        }
        sb_printf(&sb, "# HELP %s ", f->name);
        sb_escaped(&sb, f->help, false);
        sb_printf(&sb, "\n# TYPE %s %s\n", f->name, kind_names[f->kind]);
        for (size_t j = 0; j < f->n_children; j++) {
            render_child(&sb, f, f->children[j]);
        }
    }
    pthread_mutex_unlock(&reg->lock);
    *out = sb.p;
    *len = sb.len;
    return 0;
}
