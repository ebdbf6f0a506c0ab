/*
 * wp_logic — see wp_logic.h. No locks, no I/O, no time.
 */
#include "wp_logic.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

int wp_quorum(int n_safekeepers)
{
    return n_safekeepers / 2 + 1;
}

static int cmp_lsn_desc(const void *a, const void *b)
{
    lsn_t x = *(const lsn_t *)a, y = *(const lsn_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

lsn_t wp_quorum_lsn(const lsn_t *flush, int n, int quorum)
{
    lsn_t sorted[64];
    assert(n <= 64 && quorum >= 1);
    if (n < quorum) {
        return LSN_INVALID;
    }
    memcpy(sorted, flush, (size_t)n * sizeof(*flush));
    qsort(sorted, (size_t)n, sizeof(*sorted), cmp_lsn_desc);
    return sorted[quorum - 1];
}

uint64_t wp_last_log_term(const wp_term_switch *h, size_t n)
{
    return n ? h[n - 1].term : 0;
}

int wp_choose_donor(const wp_vote *votes, int n)
{
    assert(n >= 1);
    int best = 0;
    for (int i = 1; i < n; i++) {
        uint64_t ti = wp_last_log_term(votes[i].history, votes[i].n_history);
        uint64_t tb = wp_last_log_term(votes[best].history, votes[best].n_history);
        if (ti > tb || (ti == tb && votes[i].flush_lsn > votes[best].flush_lsn)) {
            best = i;
        }
    }
    return best;
}

uint64_t wp_rival_term(const wp_vote *votes, int n, uint64_t our_term)
{
    uint64_t rival = 0;
    for (int i = 0; i < n; i++) {
        uint64_t t = wp_last_log_term(votes[i].history, votes[i].n_history);
        if (votes[i].elected_term > t) {
            t = votes[i].elected_term;
        }
        if (t > our_term && t > rival) {
            rival = t;
        }
    }
    return rival;
}

int wp_build_history(const wp_term_switch *base, size_t n_base, uint64_t term,
                     lsn_t epoch_start_lsn, wp_term_switch **out,
                     size_t *n_out)
{
    for (size_t i = 0; i < n_base; i++) {
        if (i > 0 && (base[i].term <= base[i - 1].term ||
                      base[i].lsn < base[i - 1].lsn)) {
            return -EINVAL;
        }
    }
    if (n_base > 0 && (term <= base[n_base - 1].term ||
                       epoch_start_lsn < base[n_base - 1].lsn)) {
        return -EINVAL;
    }
    wp_term_switch *h = az_malloc((n_base + 1) * sizeof(*h));
    if (n_base) {
        memcpy(h, base, n_base * sizeof(*h));
    }
    h[n_base].term = term;
    h[n_base].lsn = epoch_start_lsn;
    *out = h;
    *n_out = n_base + 1;
    return 0;
}

uint64_t wp_history_term_at(const wp_term_switch *h, size_t n, lsn_t lsn)
{
    uint64_t term = 0;
    for (size_t i = 0; i < n && h[i].lsn <= lsn; i++) {
        term = h[i].term;
    }
    return term;
}

bool wp_common_point(const wp_term_switch *p, size_t np,
                     const wp_term_switch *a, size_t na, lsn_t a_flush,
                     lsn_t *point)
{
    /* Histories agree entry by entry up to the last index with equal terms
     * (a term has one proposer, so equal terms mean equal starts). */
    size_t i = 0;
    while (i < np && i < na && p[i].term == a[i].term) {
        i++;
    }
    if (i == 0) {
        return false;
    }
    i--;
    lsn_t p_end = i + 1 < np ? p[i + 1].lsn : LSN_MAX;
    lsn_t a_end = i + 1 < na ? a[i + 1].lsn : a_flush;
    *point = p_end < a_end ? p_end : a_end;
    return true;
}

/* ---- record buffer ---------------------------------------------------- */

void wp_buf_init(wp_buf *b, lsn_t lsn)
{
    memset(b, 0, sizeof(*b));
    b->start_lsn = b->end_lsn = lsn;
}

void wp_buf_free(wp_buf *b)
{
    az_free(b->data);
    az_free(b->rec);
    memset(b, 0, sizeof(*b));
}

void wp_buf_reset(wp_buf *b, lsn_t lsn)
{
    b->head = 0;
    b->rhead = b->nrec = 0;
    b->start_lsn = b->end_lsn = lsn;
}

/* Makes room for `more` bytes and one record entry; compacts the dead front
 * first so a steady stream of append+trim does not grow memory. */
static void buf_reserve(wp_buf *b, size_t more)
{
    size_t used = wp_buf_bytes(b);
    if (b->head > 0 && b->head + used + more > b->cap) {
        memmove(b->data, b->data + b->head, used);
        b->head = 0;
    }
    if (used + more > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 1024;
        while (cap < used + more) {
            cap *= 2;
        }
        b->data = az_realloc(b->data, cap);
        b->cap = cap;
    }
    if (b->rhead > 0 && b->rhead + b->nrec + 1 > b->rcap) {
        memmove(b->rec, b->rec + b->rhead, b->nrec * sizeof(*b->rec));
        b->rhead = 0;
    }
    if (b->nrec + 1 > b->rcap) {
        b->rcap = b->rcap ? b->rcap * 2 : 1024;
        b->rec = az_realloc(b->rec, b->rcap * sizeof(*b->rec));
    }
}

void wp_buf_append(wp_buf *b, const uint8_t *rec, size_t len)
{
    assert(len > 0);
    buf_reserve(b, len);
    memcpy(b->data + b->head + wp_buf_bytes(b), rec, len);
    b->rec[b->rhead + b->nrec++] = b->end_lsn;
    b->end_lsn += len;
}

/* Index (relative to rhead) of the last record starting at or below lsn;
 * -1 if none. Record starts are ascending: binary search. */
static long buf_find_le(const wp_buf *b, lsn_t lsn)
{
    long lo = 0, hi = (long)b->nrec - 1, ans = -1;
    const lsn_t *r = b->rec + b->rhead;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        if (r[mid] <= lsn) {
            ans = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return ans;
}

lsn_t wp_buf_trim(wp_buf *b, lsn_t lsn)
{
    lsn_t to;
    size_t drop_recs;
    if (lsn >= b->end_lsn) {
        to = b->end_lsn;
        drop_recs = b->nrec;
    } else {
        long k = buf_find_le(b, lsn);
        if (k <= 0) {
            return b->start_lsn;
        }
        to = b->rec[b->rhead + (size_t)k];
        drop_recs = (size_t)k;
    }
    b->head += (size_t)(to - b->start_lsn);
    b->rhead += drop_recs;
    b->nrec -= drop_recs;
    b->start_lsn = to;
    if (b->nrec == 0) {
        b->head = b->rhead = 0;
    }
    return to;
}

int wp_buf_truncate(wp_buf *b, lsn_t lsn)
{
    if (lsn == b->end_lsn) {
        return 0;
    }
    long k = buf_find_le(b, lsn);
    if (k < 0 || b->rec[b->rhead + (size_t)k] != lsn) {
        return -EINVAL;
    }
    b->nrec = (size_t)k;
    b->end_lsn = lsn;
    return 0;
}

int wp_buf_record_before(const wp_buf *b, lsn_t end_lsn, lsn_t *rec_lsn)
{
    if (end_lsn <= b->start_lsn || end_lsn > b->end_lsn) {
        return -ENOENT;
    }
    long k = buf_find_le(b, end_lsn - 1);
    if (k < 0) {
        return -ENOENT;
    }
    size_t next = (size_t)k + 1;
    lsn_t rec_end = next < b->nrec ? b->rec[b->rhead + next] : b->end_lsn;
    if (rec_end != end_lsn) {
        return -ENOENT; /* end_lsn is inside a record, not at its end */
    }
    *rec_lsn = b->rec[b->rhead + (size_t)k];
    return 0;
}

int wp_buf_slice(const wp_buf *b, lsn_t from, size_t max_bytes,
                 const uint8_t **data, size_t *len)
{
    long k = buf_find_le(b, from);
    if (k < 0 || from >= b->end_lsn || b->rec[b->rhead + (size_t)k] != from) {
        return -EINVAL;
    }
    /* Take records while they fit; the first one always goes, whatever its
     * size, or a record larger than max_bytes could never be sent. */
    lsn_t end = b->end_lsn;
    for (size_t i = (size_t)k + 1; i < b->nrec; i++) {
        lsn_t next = b->rec[b->rhead + i];
        if (next - from > max_bytes) {
            end = next;
            break;
        }
    }
    if (end - from > max_bytes) {
        /* The loop stopped at the first record that does not fit; step back
         * one record unless that would leave nothing. */
        long j = buf_find_le(b, end - 1);
        lsn_t cut = b->rec[b->rhead + (size_t)j];
        if (cut > from) {
            end = cut;
        }
    }
    *data = b->data + b->head + (size_t)(from - b->start_lsn);
    *len = (size_t)(end - from);
    return 0;
}
