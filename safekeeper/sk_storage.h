/*
 * sk_storage — what the safekeeper's durable storage shares (prefix sk_):
 * its error codes. The storage itself is
 * two modules:
 *
 *   sk_control.h  the per-timeline control file (term, vote, term history,
 *                 commit/persisted/removed LSNs), replaced atomically.
 *   sk_wal.h      the WAL segments: append, flush (io_uring write +
 *                 fdatasync), torn-tail recovery, truncate, read, remove.
 *
 * Layout of one timeline directory (the caller creates it and passes it):
 *
 *   <timeline_dir>/control               control file (sk_control.c)
 *   <timeline_dir>/control.tmp           only during a replace (fsutil)
 *   <timeline_dir>/0000000001A2B3C0.seg  WAL segment starting at that LSN
 *                                        (16 upper-case hex digits)
 *   <timeline_dir>/<...>.seg.tmp         a segment being created; removed
 *                                        by sk_wal_open after a crash
 *
 * Every I/O call the storage makes goes through a disk_io table
 * (disk_io.h), so tests can inject errors (EIO, ENOSPC on the Nth write)
 * and simulate a crash that loses writes not yet fdatasync'ed (see
 * tests/unit/test_sk_storage.c). With use_uring, sk_wal_flush() submits
 * its writes and fdatasyncs as one linked chain on the sk_wal's io_uring
 * (DESIGN.md: "liburing for WAL writes + fdatasync"), each result passing
 * through uring_result; all other I/O (segment creation, reads, zeroing,
 * control file) always uses the table.
 */
#ifndef ARBOR_SK_STORAGE_H
#define ARBOR_SK_STORAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "disk_io.h"

/* Storage errors (negative, -3101..-3199; the acceptor's SK_TL_E* codes are
 * -3201..-3299). Functions also return negative errnos (-EIO, -ENOSPC,
 * -ENOENT, -EINVAL) and, for bad record bytes, the codec's WAL_E* codes.
 * sk_storage_strerror() names all three kinds. */
enum {
    SK_ECTL_MAGIC = -3101,    /* control file: not one (bad magic) */
    SK_ECTL_VERSION = -3102,  /* control file: unknown format version */
    SK_ECTL_SIZE = -3103,     /* control file: size does not match contents */
    SK_ECTL_CHECKSUM = -3104, /* control file: checksum mismatch */
    SK_ECTL_FIELD = -3105,    /* control file: a field out of range */
    SK_ESEG_LAYOUT = -3106,   /* segment files overlap, leave a gap, or lie
                                 below the timeline start */
    SK_ELSN = -3107,          /* an LSN is not where it must be (append not
                                 at write_lsn, record lsn not contiguous) */
    SK_EPREV = -3108,         /* record's prev_lsn breaks the chain */
    SK_ETERM = -3109,         /* record's term is not the history's term at
                                 its LSN */
    SK_EBOUNDARY = -3110,     /* LSN is not the start of a record */
    SK_EREMOVED = -3111,      /* LSN below the WAL that is still kept */
    SK_ERANGE = -3112,        /* LSN beyond the end of the WAL */
    SK_ECORRUPT = -3113,      /* WAL below flush_lsn fails verification */
    SK_EBROKEN = -3114,       /* an earlier failure left this sk_wal in an
                                 unknown state: close it and reopen */
};

/* Names any code the storage returns (SK_E*, WAL_E*, -errno). Static
 * strings; thread-safe. */
const char *sk_storage_strerror(int err);

#endif
