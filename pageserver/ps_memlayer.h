/*
 * ps_memlayer — the in-memory layer (prefix ps_memlayer_).
 *
 * Holds the page versions ingested since start_lsn: a hash map pgno ->
 * versions sorted by LSN, page images in an append-only arena of large
 * chunks (images never move once written, so a reader may keep a pointer to
 * one while it holds a reference on the layer).
 *
 * States:
 *   OPEN    end_lsn == LSN_MAX; the timeline's ingest thread adds records
 *           (ps_memlayer_add_record); readers look up concurrently.
 *   FROZEN  ps_memlayer_freeze(end) set end_lsn; no more writes; waiting to
 *           be written as a delta layer file (ps_memlayer_write), after
 *           which the timeline drops it.
 * Versions in the layer have start_lsn < lsn <= end_lsn.
 *
 * Threads: one writer (the caller serializes add_record and freeze), any
 * number of readers. A pthread rwlock protects the hash map; images are
 * decompressed into the arena before the write lock is taken, so readers
 * wait only for the index insertions. Reference-counted like ps_layer.
 */
#ifndef ARBOR_PS_MEMLAYER_H
#define ARBOR_PS_MEMLAYER_H

#include <stddef.h>
#include <stdint.h>

#include "lsn.h"
#include "ps_layer.h"
#include "wal_record.h"

typedef struct ps_memlayer ps_memlayer;

/* A new OPEN layer with one reference. */
void ps_memlayer_new(lsn_t start_lsn, uint32_t page_size, ps_memlayer **out);
void ps_memlayer_ref(ps_memlayer *ml);
void ps_memlayer_unref(ps_memlayer *ml);

lsn_t ps_memlayer_start_lsn(const ps_memlayer *ml);
uint32_t ps_memlayer_page_size(const ps_memlayer *ml);
/* LSN_MAX while open. */
lsn_t ps_memlayer_end_lsn(const ps_memlayer *ml);
/* Bytes held (images + index), for the freeze threshold. */
size_t ps_memlayer_bytes(const ps_memlayer *ml);
uint64_t ps_memlayer_versions(const ps_memlayer *ml);

/* Adds every page of a decoded, verified record as a version at lsn (the
 * record's end LSN, > every LSN already in the layer). 0 or a WAL_E* code
 * if a page does not decompress (then nothing is visible). */
int ps_memlayer_add_record(ps_memlayer *ml, const wal_record *rec, lsn_t lsn);

/* Adds one page image (page_size bytes, copied) as a version at lsn, with
 * the same rules as ps_memlayer_add_record: the commit of a multi-record
 * transaction adds its held-back pages this way. */
void ps_memlayer_add_page(ps_memlayer *ml, uint32_t pgno, lsn_t lsn,
                          const uint8_t *img);

/* The newest version of pgno with lsn <= max_lsn: 0 with *data (page_size
 * bytes, valid while the caller holds a reference) and *lsn, or
 * PS_ENOTFOUND. */
int ps_memlayer_get(ps_memlayer *ml, uint32_t pgno, lsn_t max_lsn,
                    const uint8_t **data, lsn_t *lsn);

/* OPEN -> FROZEN. end_lsn >= every version's LSN. */
void ps_memlayer_freeze(ps_memlayer *ml, lsn_t end_lsn);

/* Writes every version, sorted by (pgno, lsn), into w. FROZEN only. */
int ps_memlayer_write(ps_memlayer *ml, ps_layer_writer *w);

/* Appends to *pgnos (az_realloc'ed array of *n / *cap) every pgno that has
 * a version <= max_lsn. Unsorted, no duplicates within this layer. */
void ps_memlayer_pgnos(ps_memlayer *ml, lsn_t max_lsn, uint32_t **pgnos,
                       size_t *n, size_t *cap);

/* Appends to *pgnos every pgno with a version in (lo, hi] (branch diff:
 * pages written in an LSN range). Unsorted, no duplicates within this
 * layer. */
void ps_memlayer_changed_pgnos(ps_memlayer *ml, lsn_t lo, lsn_t hi, uint32_t **pgnos,
                               size_t *n, size_t *cap);

#endif
