/*
 * ids — 128-bit identifiers for tenants and timelines (prefix id_).
 *
 * An id is 16 opaque bytes, printed as 32 lower-case hex characters (byte 0
 * first), the form used in paths, URLs, logs and metrics labels. The all-zero
 * id means "none". Values are plain structs: copy them freely. All functions
 * are thread-safe.
 */
#ifndef ARBOR_IDS_H
#define ARBOR_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct { uint8_t b[16]; } arbor_id;

#define ID_HEX_LEN 32             /* characters in the text form */
#define ID_STR_SIZE (ID_HEX_LEN + 1) /* buffer size including the NUL */

/* Fills *out with 128 random bits from getrandom(2). 0 or -errno. */
int id_generate(arbor_id *out);
/* Writes the 32 hex characters and a NUL into out (ID_STR_SIZE bytes).
 * Returns out, so it can be used inside a printf argument list. */
char *id_format(const arbor_id *id, char out[ID_STR_SIZE]);
/* Parses exactly 32 hex characters (either case) and nothing else:
 * 0, or -EINVAL for a wrong length or a non-hex character. */
int id_parse(const char *s, arbor_id *out);
/* Same for a string that is not NUL-terminated (e.g. a URL path segment):
 * len must be exactly 32. */
int id_parse_n(const char *s, size_t len, arbor_id *out);
bool id_equal(const arbor_id *a, const arbor_id *b);
bool id_is_zero(const arbor_id *id);
/* memcmp order: <0, 0, >0. For sorting and ordered maps. */
int id_compare(const arbor_id *a, const arbor_id *b);

/* The names users give branches, endpoints and roles, wherever they are
 * made (the CLI, the API): 1-63 characters of [A-Za-z0-9._-], not
 * starting with '-' or '.'. Such a name is a URL path segment, a
 * PostgreSQL database name and a file name as it is. (The pageserver
 * keeps accepting any printable name: branches made before this rule.) */
#define ID_NAME_MAX 63
#define ID_NAME_RULE "1-63 characters of A-Z a-z 0-9 . _ -, not starting with - or ."
bool id_name_ok(const char *s);

#endif
