/*
 * lsn — log sequence numbers (prefix lsn_).
 *
 * An LSN is a 64-bit byte position in a timeline's WAL stream. Printed like
 * Postgres/Neon as "X/Y": the high and low 32 bits in upper-case hex without
 * leading zeros ("0/16B3748", "1/0"). 0 means "none".
 */
#ifndef ARBOR_LSN_H
#define ARBOR_LSN_H

#include <stdint.h>
#include <stddef.h>

typedef uint64_t lsn_t;

#define LSN_INVALID ((lsn_t)0)
#define LSN_MAX ((lsn_t)UINT64_MAX)
/* "FFFFFFFF/FFFFFFFF" + NUL */
#define LSN_STRLEN 18

/* Parses "X/Y" (hex, 1..8 digits each side, either case, no spaces, nothing
 * after). 0 on success, -EINVAL otherwise (*out untouched). */
int lsn_parse(const char *s, lsn_t *out);

/* Formats into buf (at least LSN_STRLEN bytes); returns buf. */
char *lsn_format(lsn_t lsn, char buf[LSN_STRLEN]);

#endif
