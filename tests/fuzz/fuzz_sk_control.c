/*
 * fuzz_sk_control — libFuzzer target for the safekeeper control file
 * decoder (safekeeper/sk_control.h), which reads <timeline_dir>/control
 * from disk at start-up.
 *
 * Properties, abort() on a violation: decode never crashes or reads out of
 * bounds; a file it accepts re-encodes to the identical bytes (the format
 * has one encoding) and decodes again to the same value. Each input is
 * tried a second time with total_len and the trailing XXH3 repaired, so
 * the fuzzer gets past the checksum to the field checks (history rules,
 * voted_for_term <= term).
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "fuzz_common.h"
#include "sk_control.h"

static void one(const uint8_t *buf, size_t len)
{
    static sk_control c, again;
    static uint8_t enc2[SK_CONTROL_MAX_BYTES];
    size_t enc2_len = 0;
    static uint8_t enc[SK_CONTROL_MAX_BYTES];
    size_t enc_len = 0;

    if (sk_control_decode(buf, len, &c) != 0)
        return;
    CHECK(sk_control_encode(&c, enc, &enc_len) == 0);
    CHECK(enc_len == len && memcmp(enc, buf, len) == 0);
    CHECK(sk_control_decode(enc, enc_len, &again) == 0);
    CHECK(sk_control_encode(&again, enc2, &enc2_len) == 0);
    CHECK(enc2_len == len && memcmp(enc2, buf, len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Larger than any valid file, so oversized histories get repaired
     * and tried too (scripts/fuzz.sh lets inputs grow to 8192 bytes). */
    static uint8_t fixed[2 * SK_CONTROL_MAX_BYTES];

    one(data, size);
    if (size < SK_CONTROL_HEADER_BYTES + SK_CONTROL_CHECKSUM_BYTES || size > sizeof fixed)
        return 0;
    memcpy(fixed, data, size);
    uint32_t total = (uint32_t)size, n = (uint32_t)((size - 104) / 16);
    memcpy(fixed + 8, &total, 4);
    if ((size - 104) % 16 == 0)
        memcpy(fixed + 12, &n, 4);
    fz_put64(fixed + size - 8, XXH3_64bits(fixed, size - 8));
    one(fixed, size);
    return 0;
}
