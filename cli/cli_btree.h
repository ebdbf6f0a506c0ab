/*
 * cli_btree — a SQLite database read page by page from the pageserver at
 * one LSN (prefix cbt_): a page cache, b-tree walks, cells, payloads with
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
 * Errors: 0 or CLI_EFAIL with a message printed (cli_err) naming the page.
 * A page that does not parse is reported as corrupt, never guessed at.
 * Ownership: pages returned by cbt_page stay valid until cbt_side_close.
 * Single-threaded.
 */
#ifndef ARBOR_CLI_BTREE_H
#define ARBOR_CLI_BTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "lsn.h"
#include "ps_client.h"

#define CBT_MAX_DEPTH 24

typedef struct cbt_side {
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
} cbt_side;

/* Reads page 1 and the header. db_pages/page_size from GetDbSize. */
int cbt_side_open(cbt_side *s, psc *ps, const arbor_id *tenant, const arbor_id *timeline,
                  lsn_t lsn, uint32_t db_pages, uint32_t page_size, const char *label);
void cbt_side_close(cbt_side *s);

/* Fetches the pages of pgnos not cached yet (one GetPages stream). */
int cbt_load(cbt_side *s, const uint32_t *pgnos, size_t n);
/* A cached page, or NULL. */
const uint8_t *cbt_page(const cbt_side *s, uint32_t pgno);
/* cbt_page after loading it alone if needed. */
int cbt_get(cbt_side *s, uint32_t pgno, const uint8_t **out);

/* Page type byte (0x02, 0x05, 0x0A, 0x0D) of a cached page. */
uint8_t cbt_type(const uint8_t *page, uint32_t pgno);
static inline bool cbt_is_leaf(uint8_t t) { return t == 0x0A || t == 0x0D; }
static inline bool cbt_is_index(uint8_t t) { return t == 0x02 || t == 0x0A; }
uint32_t cbt_ncells(const uint8_t *page, uint32_t pgno);

/* A b-tree's shape: every interior page (read) and every leaf (named by
 * their parents; read only when the root is one). Arrays sorted. */
typedef struct cbt_tree {
    uint32_t root;
    bool index;
    uint32_t *interior;
    size_t n_interior;
    uint32_t *leaves;
    size_t n_leaves;
} cbt_tree;

/* Walks from root reading interior pages level by level; the level under
 * the last interior one is the leaves (one of them is read to tell). */
int cbt_walk(cbt_side *s, uint32_t root, cbt_tree *out);
/* The same for n trees at once, level by level: one batch of page reads per
 * level for all of them (a schema of many tables costs its depth in round
 * trips, not one per tree and level). out: n trees. */
int cbt_walk_many(cbt_side *s, const uint32_t *roots, size_t n, cbt_tree *out);
void cbt_tree_free(cbt_tree *t);
bool cbt_sorted_has(const uint32_t *v, size_t n, uint32_t x);

typedef struct cbt_cell {
    int64_t rowid;              /* table cells */
    uint32_t child;             /* interior cells */
    const uint8_t *local;       /* payload kept in the cell */
    uint32_t local_len;
    uint64_t payload_len;       /* 0 for table interior cells */
    uint32_t overflow;          /* first overflow page, 0 = none */
} cbt_cell;

int cbt_cell_at(const cbt_side *s, const uint8_t *page, uint32_t pgno, uint32_t i,
                cbt_cell *out);
/* Reads ahead the overflow chains of every cell of the cached pages pgnos,
 * one batch per link of the chains (a chain of k pages costs k rounds for
 * all chains together, not k per cell), so cbt_payload finds them cached. */
int cbt_prefetch_overflow(cbt_side *s, const uint32_t *pgnos, size_t n);
/* The whole payload (malloc'ed, *out; free()), following the overflow
 * chain; each overflow page is passed to mark (may be NULL). */
int cbt_payload(cbt_side *s, const cbt_cell *c, uint8_t **out,
                void (*mark)(void *arg, uint32_t pgno), void *arg);

typedef enum { CBT_NULL = 0, CBT_INT, CBT_REAL, CBT_TEXT, CBT_BLOB } cbt_vtype;

typedef struct cbt_val {
    cbt_vtype t;
    int64_t i;
    double r;
    const uint8_t *p;           /* text/blob bytes (points into the record) */
    uint32_t n;
} cbt_val;

/* Decodes a record into at most max values; *n = fields in the record
 * (may exceed max: the rest are ignored). */
int cbt_record(const uint8_t *rec, uint64_t len, cbt_val *vals, int max, int *n);

/* Values equal as SQLite's IS compares them with BINARY collation (an
 * integer and a real of the same value are equal). */
bool cbt_val_equal(const cbt_val *a, const cbt_val *b);

#endif
