/*
 * sk_history — term histories. See sk_history.h for what they mean.
 */
#include "sk_history.h"

#include <errno.h>

int skh_validate(const skh_entry *e, uint32_t n)
{
    if (n > SKH_MAX_ENTRIES)
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

int skh_common_point(const skh_history *acc, lsn_t acc_flush_lsn,
                     const skh_entry *prop, uint32_t n_prop, lsn_t *point)
{
    uint32_t n = acc->n < n_prop ? acc->n : n_prop;
    int64_t last = -1;
    for (uint32_t i = 0; i < n; i++) {
        /* The same term always starts at the same LSN (one proposer per
         * term); a mismatch means the logs diverge from here. */
        if (acc->e[i].term != prop[i].term || acc->e[i].lsn != prop[i].lsn)
            break;
        last = i;
    }
    if (last < 0)
        return 0;
    uint32_t i = (uint32_t)last;
    lsn_t prop_end = i + 1 < n_prop ? prop[i + 1].lsn : LSN_MAX;
    lsn_t acc_end = i + 1 < acc->n ? acc->e[i + 1].lsn : acc_flush_lsn;
    if (acc_end > acc_flush_lsn)
        acc_end = acc_flush_lsn;
    *point = prop_end < acc_end ? prop_end : acc_end;
    return 1;
}

uint32_t skh_up_to(const skh_history *h, lsn_t flush_lsn, skh_entry *out)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < h->n && h->e[i].lsn <= flush_lsn; i++)
        out[n++] = h->e[i];
    return n;
}
