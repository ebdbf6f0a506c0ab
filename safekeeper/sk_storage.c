/*
 * sk_storage — error names. See sk_storage.h.
 */
#include "sk_storage.h"

#include <stdio.h>
#include <string.h>

#include "wal_record.h"

const char *sk_storage_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case SK_ECTL_MAGIC: return "not a safekeeper control file (bad magic)";
    case SK_ECTL_VERSION: return "control file has an unknown format version";
    case SK_ECTL_SIZE: return "control file size does not match its contents";
    case SK_ECTL_CHECKSUM: return "control file checksum mismatch";
    case SK_ECTL_FIELD: return "control file field out of range";
    case SK_ESEG_LAYOUT:
        return "WAL segment files overlap, leave a gap or lie below the "
               "timeline start";
    case SK_ELSN: return "LSN is not where the WAL continues";
    case SK_EPREV: return "record prev_lsn does not chain to the previous record";
    case SK_ETERM: return "record term differs from the term history at its LSN";
    case SK_EBOUNDARY: return "LSN is not a record boundary";
    case SK_EREMOVED: return "WAL at this LSN was removed";
    case SK_ERANGE: return "LSN is beyond the end of the WAL";
    case SK_ECORRUPT: return "durable WAL fails verification (corruption)";
    case SK_EBROKEN:
        return "WAL storage is in an unknown state after an earlier error; "
               "reopen it";
    default: break;
    }
    if (err <= -2001 && err >= -2099)
        return wal_strerror(err);
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

