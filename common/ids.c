/*
 * ids — see ids.h.
 */
#define _GNU_SOURCE
#include "ids.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <sys/random.h>

int id_generate(arbor_id *out)
{
    size_t got = 0;
    while (got < sizeof(out->b)) {
        /* Blocks only until the kernel's pool is first initialised. */
        ssize_t n = getrandom(out->b + got, sizeof(out->b) - got, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        got += (size_t)n;
    }
    return 0;
}

char *id_format(const arbor_id *id, char out[ID_STR_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(id->b); i++) {
        out[2 * i] = hex[id->b[i] >> 4];
        out[2 * i + 1] = hex[id->b[i] & 0xf];
    }
    out[ID_HEX_LEN] = '\0';
    return out;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int id_parse_n(const char *s, size_t len, arbor_id *out)
{
    if (!s || len != ID_HEX_LEN) {
        return -EINVAL;
    }
    arbor_id id;
    for (size_t i = 0; i < sizeof(id.b); i++) {
        int hi = hex_value(s[2 * i]);
        int lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return -EINVAL;
        }
        id.b[i] = (uint8_t)(hi << 4 | lo);
    }
    *out = id; /* untouched on error */
    return 0;
}

int id_parse(const char *s, arbor_id *out)
{
    if (!s) {
        return -EINVAL;
    }
    /* strnlen bound: a longer string is rejected without scanning it all. */
    return id_parse_n(s, strnlen(s, ID_HEX_LEN + 1), out);
}

bool id_equal(const arbor_id *a, const arbor_id *b)
{
    return memcmp(a->b, b->b, sizeof(a->b)) == 0;
}

bool id_is_zero(const arbor_id *id)
{
    static const arbor_id zero;
    return id_equal(id, &zero);
}

int id_compare(const arbor_id *a, const arbor_id *b)
{
    return memcmp(a->b, b->b, sizeof(a->b));
}

bool id_name_ok(const char *s)
{
    size_t n = strnlen(s, ID_NAME_MAX + 1);
    if (n == 0 || n > ID_NAME_MAX || s[0] == '-' || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}
