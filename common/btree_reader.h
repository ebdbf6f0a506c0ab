/*
 * btree_reader — a SQLite database read page by page from the pageserver at
 * one LSN (prefix btr_): a page cache, b-tree walks, cells, payloads with
 * their overflow chains, and records. For `arbor branch diff`, which must
 * read only the pages a change touched, so it cannot open the database
 * through SQLite.
 *
 * The file format (https://www.sqlite.org/fileformat2.html), as used here:
 *   page 1: 100-byte database header, then the b-tree page header of the
 *     schema table. Header fields used: page size (16, BE u16, 1 = 65536),
 *     reserved bytes per page (20), freelist trunk (32, BE u32) and count
 *     (36), largest root page (52: non-zero = auto-vacuum, pointer-map
 *     pages), text encoding (56: 1 = UTF-8; others are refused).
 *   b-tree page header (at 0, or 100 on page 1): type (0x02 index interior,
 *     0x05 table interior, 0x0A index leaf, 0x0D table leaf), number of
 *     cells (3, BE u16), right-most child (8, BE u32; interior only); the
 *     cell pointer array follows the 8 (leaf) or 12 (interior) byte header.
 *   cells: table leaf = varint payload size, varint rowid, payload; table
 *     interior = BE u32 child, varint rowid; index leaf = varint payload
 *     size, payload; index interior = BE u32 child, then as a leaf.
 *     A payload P bytes long keeps P bytes in the cell when P <= X, else
 *     K = M + (P - M) % (U - 4) bytes when K <= X, else M bytes, then a BE
 *     u32 first overflow page; U = usable size, X = U - 35 (table leaf) or
 *     (U - 12) * 64 / 255 - 23 (index), M = (U - 12) * 32 / 255 - 23. An
 *     overflow page: BE u32 next page (0 = last), then U - 4 bytes.
 *   records: varint header size, one varint serial type per field, bodies.
 *     Serial types: 0 NULL, 1..6 BE two's complement of 1,2,3,4,6,8 bytes,
 *     7 BE IEEE double, 8/9 the integers 0/1, N >= 12 even: blob of
 *     (N - 12) / 2 bytes, N >= 13 odd: text of (N - 13) / 2 bytes.
 *   Every leaf of a b-tree lies at the same depth.
 *
 * Used by `arbor branch diff` and by the change feed (feed.h: the CLI's
 * `arbor changes`, arbor-control's webhooks).
 *
 * Errors: 0 or BTR_EFAIL (-1) with a message naming the page: this
 * thread's btr_errmsg(), also passed to the hook of btr_set_err_hook (the
 * CLI prints it). A page that does not parse is reported as corrupt, never
 * guessed at.
 * Ownership: pages returned by btr_page stay valid until btr_side_close.
 * Threads: a btr_side is used by one thread at a time; the error message
 * is per thread.
 */
#ifndef ARBOR_BTREE_READER_H
#define ARBOR_BTREE_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "lsn.h"
#include "ps_client.h"

#define BTR_MAX_DEPTH 24
#define BTR_EFAIL (-1)

/* The message of this thread's last BTR_EFAIL ("" before any). */
const char *btr_errmsg(void);
/* Whether that failure was the pageserver call (unreachable, timeout...),
 * not what the pages say: worth retrying. */
bool btr_err_is_io(void);
/* Every error message also goes to hook (NULL: none); set once, before
 * threads start. */
void btr_set_err_hook(void (*hook)(const char *msg));
/* Sets this thread's message (and calls the hook): for callers that report
 * through the same channel. */
void btr_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct btr_side {
    psc *ps;
    arbor_id tenant, timeline;
    lsn_t lsn;
    const char *label;          /* branch name for messages */
    uint32_t page_size, usable, db_pages;
    bool auto_vacuum;
    uint32_t freelist_trunk, freelist_count;
    /* cache: open addressing on pgno (0 = empty) */
    uint32_t *keys;
    uint8_t **pages;
    size_t cap, count;
    uint64_t pages_read;        /* fetched from the pageserver */
    uint64_t requests;          /* GetPages calls */
} btr_side;

/* Reads page 1 and the header. db_pages/page_size from GetDbSize. */
int btr_side_open(btr_side *s, psc *ps, const arbor_id *tenant, const arbor_id *timeline,
                  lsn_t lsn, uint32_t db_pages, uint32_t page_size, const char *label);
void btr_side_close(btr_side *s);

/* Fetches the pages of pgnos not cached yet (one GetPages stream). */
int btr_load(btr_side *s, const uint32_t *pgnos, size_t n);
/* A cached page, or NULL. */
const uint8_t *btr_page(const btr_side *s, uint32_t pgno);
/* btr_page after loading it alone if needed. */
int btr_get(btr_side *s, uint32_t pgno, const uint8_t **out);

/* Page type byte (0x02, 0x05, 0x0A, 0x0D) of a cached page. */
uint8_t btr_type(const uint8_t *page, uint32_t pgno);
static inline bool btr_is_leaf(uint8_t t) { return t == 0x0A || t == 0x0D; }
static inline bool btr_is_index(uint8_t t) { return t == 0x02 || t == 0x0A; }
uint32_t btr_ncells(const uint8_t *page, uint32_t pgno);

/* A b-tree's shape: every interior page (read) and every leaf (named by
 * their parents; read only when the root is one). Arrays sorted. */
typedef struct btr_tree {
    uint32_t root;
    bool index;
    uint32_t *interior;
    size_t n_interior;
    uint32_t *leaves;
    size_t n_leaves;
} btr_tree;

/* Walks from root reading interior pages level by level; the level under
 * the last interior one is the leaves (one of them is read to tell). */
int btr_walk(btr_side *s, uint32_t root, btr_tree *out);
/* The same for n trees at once, level by level: one batch of page reads per
 * level for all of them (a schema of many tables costs its depth in round
 * trips, not one per tree and level). out: n trees. */
int btr_walk_many(btr_side *s, const uint32_t *roots, size_t n, btr_tree *out);
void btr_tree_free(btr_tree *t);
bool btr_sorted_has(const uint32_t *v, size_t n, uint32_t x);

typedef struct btr_cell {
    int64_t rowid;              /* table cells */
    uint32_t child;             /* interior cells */
    const uint8_t *local;       /* payload kept in the cell */
    uint32_t local_len;
    uint64_t payload_len;       /* 0 for table interior cells */
    uint32_t overflow;          /* first overflow page, 0 = none */
} btr_cell;

int btr_cell_at(const btr_side *s, const uint8_t *page, uint32_t pgno, uint32_t i,
                btr_cell *out);
/* Reads ahead the overflow chains of every cell of the cached pages pgnos,
 * one batch per link of the chains (a chain of k pages costs k rounds for
 * all chains together, not k per cell), so btr_payload finds them cached. */
int btr_prefetch_overflow(btr_side *s, const uint32_t *pgnos, size_t n);
/* The whole payload (malloc'ed, *out; free()), following the overflow
 * chain; each overflow page is passed to mark (may be NULL). */
int btr_payload(btr_side *s, const btr_cell *c, uint8_t **out,
                void (*mark)(void *arg, uint32_t pgno), void *arg);

typedef enum { BTR_NULL = 0, BTR_INT, BTR_REAL, BTR_TEXT, BTR_BLOB } btr_vtype;

typedef struct btr_val {
    btr_vtype t;
    int64_t i;
    double r;
    const uint8_t *p;           /* text/blob bytes (points into the record) */
    uint32_t n;
} btr_val;

/* Decodes a record into at most max values; *n = fields in the record
 * (may exceed max: the rest are ignored). */
int btr_record(const uint8_t *rec, uint64_t len, btr_val *vals, int max, int *n);

/* The rows of sqlite_schema (tree st, walked from page 1): its leaves
 * read, then row(arg, v, n) for each, its record decoded into v[0..4]
 * (type, name, tbl_name, rootpage, sql; n = fields in the record).
 * Overflow pages go to mark (may be NULL). Stops at the first error or
 * non-zero return of row; 0 or that code. */
int btr_schema_rows(btr_side *s, const btr_tree *st, void (*mark)(void *arg, uint32_t pgno),
                    void *mark_arg, int (*row)(void *arg, const btr_val *v, int n),
                    void *arg);

/* Values equal as SQLite's IS compares them with BINARY collation (an
 * integer and a real of the same value are equal). */
bool btr_val_equal(const btr_val *a, const btr_val *b);

#endif
