/*
 * sk_history — term histories. See sk_history.h for what they mean.
 */
#include "sk_history.h"

#include <errno.h>

int skh_validate(const skh_entry *e, uint32_t n)
{
    if (n > SKH_WIRE_MAX_ENTRIES)
        return -EINVAL;
    for (uint32_t i = 1; i < n; i++) {
        if (e[i].term <= e[i - 1].term || e[i].lsn < e[i - 1].lsn)
            return -EINVAL;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (e[i].term == 0)
            return -EINVAL;
    }
    return 0;
}

uint64_t skh_last_log_term(const skh_history *h, lsn_t flush_lsn)
{
    uint64_t term = 0;
    for (uint32_t i = 0; i < h->n && h->e[i].lsn <= flush_lsn; i++)
        term = h->e[i].term;
    return term;
}

uint64_t skh_term_at(const skh_history *h, lsn_t lsn)
{
    /* An entry starting exactly at lsn owns the record starting there; an
     * empty epoch (two entries at one lsn) yields the later term, which is
     * right: the earlier one wrote nothing. */
    return skh_last_log_term(h, lsn);
}

/* Index of term in e[0..n) (terms strictly increase), -1 if absent. */
static int64_t find_term(const skh_entry *e, uint32_t n, uint64_t term)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (e[mid].term < term)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && e[lo].term == term ? (int64_t)lo : -1;
}

int skh_common_point(const skh_history *acc, lsn_t acc_flush_lsn,
                     const skh_entry *prop, uint32_t n_prop, lsn_t *point)
{
    /* Highest common term: walk the acceptor's history from the top. */
    for (int64_t i = (int64_t)acc->n - 1; i >= 0; i--) {
        int64_t j = find_term(prop, n_prop, acc->e[i].term);
        /* One proposer per term: the same term always starts at the same
         * LSN; if not, these logs diverged before it. */
        if (j < 0 || prop[j].lsn != acc->e[i].lsn)
            continue;
        lsn_t prop_end = j + 1 < (int64_t)n_prop ? prop[j + 1].lsn : LSN_MAX;
        lsn_t acc_end = i + 1 < (int64_t)acc->n ? acc->e[i + 1].lsn : acc_flush_lsn;
        if (acc_end > acc_flush_lsn)
            acc_end = acc_flush_lsn;
        *point = prop_end < acc_end ? prop_end : acc_end;
        return 1;
    }
    return 0;
}

uint32_t skh_up_to(const skh_history *h, lsn_t flush_lsn, skh_entry *out)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < h->n && h->e[i].lsn <= flush_lsn; i++)
        out[n++] = h->e[i];
    return n;
}

int skh_compact(skh_entry *e, uint32_t *n, lsn_t floor_lsn, uint32_t target)
{
    /* Only when needed: a full history also tells a proposer which term
     * wrote old records it copies to a far-behind acceptor. Oldest entries
     * wholly below the floor first, keeping the one covering it. */
    uint32_t first = 0;
    while (*n - first > target && first + 1 < *n && e[first + 1].lsn <= floor_lsn)
        first++;
    uint32_t m = 0;
    for (uint32_t i = first; i < *n; i++)
        e[m++] = e[i];
    /* Empty epochs, oldest first, never the last entry. */
    for (uint32_t i = 0; m > target && i + 1 < m;) {
        if (e[i].lsn == e[i + 1].lsn) {
            for (uint32_t k = i; k + 1 < m; k++)
                e[k] = e[k + 1];
            m--;
        } else {
            i++;
        }
    }
    *n = m;
    return m > target ? -ENOSPC : 0;
}
