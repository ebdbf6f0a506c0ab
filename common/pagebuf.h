/*
 * pagebuf — a set of page images keyed by page number that keeps at most a
 * memory budget in RAM and spills the rest to a private temporary file
 * (prefix pb_).
 *
 * Used wherever a transaction's pages must be held whatever its size: the
 * compute's overlay of uncommitted writes, and the readers of the WAL (the
 * pageserver's ingest, a replica) holding a multi-record transaction back
 * until its commit record (common/wal_record.h, TRANSACTIONS).
 *
 * Pages that arrive while the budget has room stay in memory; later ones go
 * to the file (created on the first spill in spill_dir, unlinked at once, so
 * nothing is left behind whatever happens to the process). A page keeps its
 * place when it is written again. Freed file slots are reused. pb_clear()
 * drops everything (and truncates the file) for the next transaction.
 *
 * Errors: 0 or a negative errno. A failed spill write (disk full, ...)
 * returns it and leaves pb_error() saying what failed and where, e.g.
 * "disk full: compute overlay spill file in /tmp: No space left on device";
 * the buffer then still holds what it held before the call.
 *
 * THREADS: none inside; the owner serializes calls. Pointers from
 * pb_peek() stay valid until the page is written again, deleted or cleared.
 */
#ifndef ARBOR_PAGEBUF_H
#define ARBOR_PAGEBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pb_buf pb_buf;

/* spill_dir NULL or "": $TMPDIR, else /tmp. what names the owner in errors
 * ("compute overlay"). mem_budget_bytes 0: every page spills. */
int pb_create(size_t mem_budget_bytes, const char *spill_dir, const char *what,
              pb_buf **out);
void pb_destroy(pb_buf *b);

/* Stores a copy of img (page_size bytes). Every page of one buffer has the
 * same size until pb_clear (-EINVAL otherwise). */
int pb_put(pb_buf *b, uint32_t pgno, const uint8_t *img, uint32_t page_size);
/* 1 and dst filled (page size bytes) if pgno is held, 0 if not, -errno. */
int pb_get(pb_buf *b, uint32_t pgno, uint8_t *dst);
/* The in-memory image of pgno, NULL if absent or spilled. */
const uint8_t *pb_peek(const pb_buf *b, uint32_t pgno);
bool pb_has(const pb_buf *b, uint32_t pgno);
void pb_del(pb_buf *b, uint32_t pgno);
/* Every held pgno, ascending, in *out (az_malloc'ed, az_free it; NULL
 * when n is 0). */
void pb_pgnos(const pb_buf *b, uint32_t **out, uint32_t *n);
void pb_clear(pb_buf *b);

uint32_t pb_count(const pb_buf *b);
uint32_t pb_page_size(const pb_buf *b);   /* 0 while empty */
size_t pb_mem_bytes(const pb_buf *b);     /* images held in RAM */
uint64_t pb_spilled_bytes(const pb_buf *b);/* images held in the file */
const char *pb_error(const pb_buf *b);    /* the last failure, "" if none */

#endif
