/*
 * sk_control — a timeline's safekeeper control file (prefix sk_control_).
 *
 * The control file holds the acceptor's durable Paxos state and the LSNs
 * that outlive the WAL itself. It lives at <timeline_dir>/control and is
 * only ever replaced whole, with write-temp + fsync + rename + fsync-dir
 * (io->write_atomic, fs_write_atomic by default): a crash leaves the old or
 * the new contents, never a mix. Its byte layout is documented at the top of
 * sk_control.c.
 *
 * Loading never "repairs": a file with a bad magic, version, size or
 * checksum is an error (SK_ECTL_*), so a safekeeper cannot silently forget
 * a vote it gave. A missing file is -ENOENT (a new timeline).
 *
 * Ownership: sk_control is a plain value (about 4 KiB with the history);
 * the functions keep no pointer to it. Thread-safety: none of the functions
 * has shared state; concurrent sk_control_store() calls on one directory
 * must be serialized by the caller (the acceptor's timeline mutex), since
 * the last rename wins.
 */
#ifndef ARBOR_SK_CONTROL_H
#define ARBOR_SK_CONTROL_H

#include <stddef.h>
#include <stdint.h>
#include "lsn.h"
#include "sk_history.h"
#include "sk_storage.h"

#define SK_CONTROL_MAGIC 0x434B5341u  /* "ASKC" in memory order */
#define SK_CONTROL_VERSION 1u
#define SK_CONTROL_HEADER_BYTES 96
#define SK_CONTROL_ENTRY_BYTES 16
#define SK_CONTROL_CHECKSUM_BYTES 8
#define SK_CONTROL_BYTES(n_history) \
    (SK_CONTROL_HEADER_BYTES + SK_CONTROL_ENTRY_BYTES * (size_t)(n_history) + \
     SK_CONTROL_CHECKSUM_BYTES)
#define SK_CONTROL_MAX_BYTES SK_CONTROL_BYTES(SKH_MAX_ENTRIES)

typedef struct sk_control {
    uint8_t tenant_id[16];
    uint8_t timeline_id[16];
    uint64_t term;              /* highest term seen/promised; persisted
                                   before a vote is answered */
    uint64_t voted_for_term;    /* term of the last vote given; <= term */
    lsn_t start_lsn;            /* the timeline's first LSN */
    lsn_t commit_lsn;           /* highest LSN known flushed on a quorum */
    lsn_t persisted_lsn;        /* pageserver reported durable below this */
    lsn_t removed_below_lsn;    /* WAL below this may be gone */
    skh_history history;        /* which term wrote which LSN range */
} sk_control;

/* Serializes c into buf (at least SK_CONTROL_MAX_BYTES). 0 and *len, or
 * -EINVAL when c breaks a rule the loader would reject (history not valid
 * per skh_validate, voted_for_term > term). */
int sk_control_encode(const sk_control *c, uint8_t *buf, size_t *len);

/* Parses exactly len bytes. 0, or SK_ECTL_SIZE / SK_ECTL_MAGIC /
 * SK_ECTL_VERSION / SK_ECTL_CHECKSUM / SK_ECTL_FIELD (checked in that
 * order; *out is unspecified on error). */
int sk_control_decode(const uint8_t *buf, size_t len, sk_control *out);

/* Reads <timeline_dir>/control. 0, -ENOENT if there is none, another
 * -errno on I/O failure, or a decode error above. Logs the reason of a
 * decode error with the path. */
int sk_control_load(const disk_io *io, const char *timeline_dir,
                    sk_control *out);

/* Replaces <timeline_dir>/control durably. 0, -EINVAL (see encode), or the
 * -errno of the write; on failure the old file is still in place. */
int sk_control_store(const disk_io *io, const char *timeline_dir,
                     const sk_control *c);

#endif
