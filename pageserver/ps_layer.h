/*
 * ps_layer — immutable layer files: writer, lazily loaded reader (prefix
 * ps_layer_). This module owns the layer file format.
 *
 * A layer file holds page versions of one timeline, each a full page image
 * tagged with its version LSN (the end LSN of the WAL record that wrote it):
 *
 *   DELTA  every version with lsn_start < lsn <= lsn_end, written when an
 *          in-memory layer is frozen; lsn_start = the LSN the in-memory
 *          layer opened at, lsn_end = last_record_lsn when it froze. (In
 *          Neon's half-open notation this is [lsn_start+1, lsn_end+1).)
 *   IMAGE  for one LSN x: the newest version at or below x of every page
 *          that has one anywhere (ancestors included), each keeping its own
 *          version LSN. A page absent from an image has no version <= x, so
 *          the read path stops at an image. lsn_start = lsn_end = x.
 *
 * File names (16 upper-case hex digits per LSN), in the timeline directory:
 *   delta_<lsn_start>-<lsn_end>      image_<x>
 * and "<name>.tmp" while being written (removed at load after a crash).
 *
 * Byte layout, version 1, all integers little-endian:
 *
 *   header, 64 bytes at offset 0
 *   0   4  magic        0x594C5241 ("ARLY" in memory order)
 *   4   2  version      1
 *   6   2  kind         1 = delta, 2 = image
 *   8   4  page_size    power of two 512..65536
 *   12  4  flags        0
 *   16  16 timeline_id
 *   32  8  lsn_start
 *   40  8  lsn_end
 *   48  8  reserved     0
 *   56  8  checksum     XXH3-64 of bytes 0..56
 *
 *   data, from offset 64: the stored page images back to back (each raw,
 *   page_size bytes, or an LZ4 block of 1..page_size-1 bytes).
 *
 *   index at index_offset: n_entries entries of 40 bytes, strictly
 *   increasing by (pgno, lsn) (an image has one entry per pgno):
 *   0   4  pgno         >= 1
 *   4   2  flags        bit 0: LZ4-compressed; other bits 0
 *   6   2  reserved     0
 *   8   4  len          stored bytes (== page_size when raw)
 *   12  4  reserved     0
 *   16  8  lsn          version LSN (delta: lsn_start < lsn <= lsn_end;
 *                       image: 0 < lsn <= x)
 *   24  8  offset       of the stored bytes; 64 <= offset,
 *                       offset + len <= index_offset
 *   32  8  checksum     XXH3-64 of the stored bytes
 *
 *   footer, the last 64 bytes
 *   0   4  magic        0x464C5241 ("ARLF")
 *   4   4  reserved     0
 *   8   8  index_offset
 *   16  8  n_entries    file size = index_offset + 40*n + 64
 *   24  8  index_checksum   XXH3-64 of the index bytes
 *   32  8  header_checksum  the header's checksum again (ties them)
 *   40  16 reserved     0
 *   56  8  checksum     XXH3-64 of footer bytes 0..56
 *
 * A file is valid when header and footer checksums hold, they agree with
 * each other, with the file name (kind, LSNs) and with the file size, the
 * index checksum holds and every entry obeys the rules above. Each read
 * re-checks the entry's data checksum and that an LZ4 block inflates to
 * exactly page_size bytes. Any failure is PS_ECORRUPT: a corrupt layer is
 * never served as data.
 *
 * Durability: the writer writes "<name>.tmp", fsyncs it, renames it to
 * <name> and fsyncs the directory. Publishing it (metadata) is the
 * timeline's job.
 *
 * Residency (remote storage, ps_remote.h): a layer may exist only in the
 * bucket. Its handle (ps_layer_open_remote) then knows the generation that
 * uploaded it and a ps_layer_source; the first lookup downloads the file
 * to its path under load_mu, so concurrent readers of one layer share one
 * download and the rest of the module sees an ordinary file. On disk a
 * non-resident layer is a stub "<name>.remote" holding "<generation hex>
 * <size>\n"; the timeline writes the stub before it deletes an evicted file
 * and the download renames the file into place before it deletes the stub,
 * so a crash leaves the file (which wins), the stub, or both.
 *
 * Threads and ownership: a ps_layer is reference-counted (ps_layer_ref /
 * ps_layer_unref; the last unref closes the fd and frees it). Its index is
 * loaded on first use under a mutex and is immutable afterwards, so lookups
 * and reads may run from any number of threads. A writer belongs to one
 * thread.
 */
#ifndef ARBOR_PS_LAYER_H
#define ARBOR_PS_LAYER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include "ids.h"
#include "lsn.h"
#include "ps_io.h"

#define PS_LAYER_MAGIC 0x594C5241u
#define PS_LAYER_FOOTER_MAGIC 0x464C5241u
#define PS_LAYER_VERSION 1
#define PS_LAYER_HEADER_BYTES 64
#define PS_LAYER_ENTRY_BYTES 40
#define PS_LAYER_FOOTER_BYTES 64
#define PS_LAYER_FLAG_LZ4 0x1u
/* "image_" or "delta_" + 16 + "-" + 16 + ".tmp" + NUL, rounded up. */
#define PS_LAYER_NAME_MAX 48

typedef enum { PS_LAYER_DELTA = 1, PS_LAYER_IMAGE = 2 } ps_layer_kind;

/* One index entry, decoded. */
typedef struct ps_layer_entry {
    uint32_t pgno;
    uint16_t flags;
    uint32_t len;
    lsn_t lsn;
    uint64_t offset;
    uint64_t checksum;
} ps_layer_entry;

/* Where a layer that is not on local disk comes from (ps_remote). */
typedef struct ps_layer_source {
    /* Downloads the object of layer `name` of the timeline that generation
     * `generation` uploaded into dest, durably: a crash leaves no partial
     * file under dest, and once it returns 0 the file and its directory
     * entry are on disk (the caller then deletes the stub). 0 or -errno. */
    int (*download)(void *ctx, const arbor_id *tenant_id, const arbor_id *timeline_id,
                    const char *name, uint32_t generation, const char *dest);
    void *ctx;
} ps_layer_source;

/* Suffix of a non-resident layer's stub file. */
#define PS_LAYER_STUB_SUFFIX ".remote"

typedef struct ps_layer {
    atomic_int refs;
    ps_layer_kind kind;
    lsn_t lsn_start;          /* image: == lsn_end */
    lsn_t lsn_end;
    uint32_t page_size;
    uint64_t file_bytes;
    char *path;
    const disk_io *io;
    arbor_id timeline_id;
    /* Lazily loaded (state: 0 not yet, 1 loaded, PS_ECORRUPT forever). */
    pthread_mutex_t load_mu;
    atomic_int state;
    int fd;
    ps_layer_entry *index;
    uint64_t n_entries;
    /* Residency: resident is false until a non-resident layer's download
     * (under load_mu) put the file in place. */
    atomic_bool resident;
    const ps_layer_source *src;   /* NULL: local only */
    arbor_id tenant_id;
    uint32_t remote_generation;   /* the bucket's copy; 0: unknown */
    _Atomic int64_t last_access_ms;   /* monotonic, coarse: for LRU */
} ps_layer;

/* Formats a file name ("delta_...-..." / "image_..."), no ".tmp". */
void ps_layer_name(ps_layer_kind kind, lsn_t lsn_start, lsn_t lsn_end,
                   char out[PS_LAYER_NAME_MAX]);
/* Parses a final file name. 0, or -EINVAL if name is not one. */
int ps_layer_parse_name(const char *name, ps_layer_kind *kind,
                        lsn_t *lsn_start, lsn_t *lsn_end);

/* A handle on an existing file; nothing is read until the first lookup.
 * The caller has checked the name. *out has one reference. */
void ps_layer_open(const disk_io *io, const char *path, ps_layer_kind kind,
                   lsn_t lsn_start, lsn_t lsn_end, uint32_t page_size,
                   uint64_t file_bytes, const arbor_id *timeline_id,
                   ps_layer **out);
/* A handle on a layer held only in the bucket (see Residency): nothing is
 * downloaded until the first lookup. file_bytes: the object's size. src
 * may be NULL (remote storage not configured): loads then fail with
 * -ENOTSUP. */
void ps_layer_open_remote(const disk_io *io, const char *path, ps_layer_kind kind,
                          lsn_t lsn_start, lsn_t lsn_end, uint32_t page_size,
                          uint64_t file_bytes, const arbor_id *tenant_id,
                          const arbor_id *timeline_id, const ps_layer_source *src,
                          uint32_t generation, ps_layer **out);
/* Stub file contents for generation and size; parses them (0 or -EINVAL). */
int ps_layer_stub_format(uint32_t generation, uint64_t size, char *out, size_t cap);
int ps_layer_stub_parse(const char *text, size_t n, uint32_t *generation, uint64_t *size);
void ps_layer_ref(ps_layer *l);
void ps_layer_unref(ps_layer *l);

/* Loads (once) and returns the index, downloading a non-resident layer
 * first. 0, PS_ECORRUPT or -errno. */
int ps_layer_load(ps_layer *l);

/* The newest entry for pgno with lsn <= max_lsn. 0 and *idx; PS_ENOTFOUND
 * if there is none; PS_ECORRUPT / -errno if the index cannot be loaded. */
int ps_layer_find(ps_layer *l, uint32_t pgno, lsn_t max_lsn, uint64_t *idx);

/* Reads entry idx into page (page_size bytes), verified. 0, PS_ECORRUPT or
 * -errno. */
int ps_layer_read(ps_layer *l, uint64_t idx, uint8_t *page);
/* The second half of ps_layer_read for callers that read the stored bytes
 * themselves (io_uring): verifies raw (entry.len bytes) and inflates it
 * into page. 0 or PS_ECORRUPT. */
int ps_layer_decode(const ps_layer *l, uint64_t idx, const uint8_t *raw,
                    uint8_t *page);

/* ---- writer ---------------------------------------------------------- */

typedef struct ps_layer_writer ps_layer_writer;

/* Starts <dir>/<name>.tmp. compress: store an LZ4 block when smaller. */
int ps_layer_writer_begin(const disk_io *io, const char *dir,
                          ps_layer_kind kind, const arbor_id *timeline_id,
                          lsn_t lsn_start, lsn_t lsn_end, uint32_t page_size,
                          int compress, ps_layer_writer **out);
/* Adds one version; calls must come in strictly increasing (pgno, lsn)
 * order (asserted). 0 or -errno. */
int ps_layer_writer_add(ps_layer_writer *w, uint32_t pgno, lsn_t lsn,
                        const uint8_t *page);
/* Writes index + footer, fsyncs, renames to the final name, fsyncs the
 * directory, frees w and returns the loaded layer (one reference). On
 * failure the temp file is removed (best effort) and w is freed. */
int ps_layer_writer_finish(ps_layer_writer *w, ps_layer **out);
/* Drops a writer and its temp file. */
void ps_layer_writer_abort(ps_layer_writer *w);

#endif
