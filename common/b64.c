/* b64 — see b64.h. */
#include "b64.h"

#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "alloc.h"

void b64_encode(const uint8_t *in, size_t n, char *out)
{
    out[0] = 0;
    /* EVP_EncodeBlock takes an int: encode in pieces of a multiple of 3. */
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = n - i < 3u << 20 ? n - i : 3u << 20;
        o += (size_t)EVP_EncodeBlock((unsigned char *)out + o, in + i, (int)k);
        i += k;
    }
    out[o] = 0;
}

char *b64_encode_alloc(const uint8_t *in, size_t n)
{
    char *out = az_malloc(B64_ENCODED_SIZE(n));
    b64_encode(in, n, out);
    return out;
}

static int in_alphabet(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

int b64_decode(const char *in, size_t n, int unpadded_ok, uint8_t *out, size_t outcap,
               size_t *outlen)
{
    size_t pad = 0;
    while (pad < 2 && pad < n && in[n - 1 - pad] == '=')
        pad++;
    size_t body = n - pad;
    for (size_t i = 0; i < body; i++)
        if (!in_alphabet(in[i]))
            return -EINVAL;
    if (pad ? n % 4 != 0 : (body % 4 != 0 && (!unpadded_ok || body % 4 == 1)))
        return -EINVAL;
    size_t total = body / 4 * 3 + (body % 4 ? body % 4 - 1 : 0);
    if (total > outcap)
        return -EINVAL;
    /* Whole groups of 4 (EVP_DecodeBlock wants them), then the tail padded. */
    size_t o = 0, i = 0;
    unsigned char tmp[3];
    while (i + 4 <= body) {
        size_t k = body - i < 4u << 20 ? (body - i) / 4 * 4 : 4u << 20;
        if (EVP_DecodeBlock(out + o, (const unsigned char *)in + i, (int)k) != (int)(k / 4 * 3))
            return -EINVAL;
        o += k / 4 * 3;
        i += k;
    }
    if (i < body) {
        char last[4] = { '=', '=', '=', '=' };
        memcpy(last, in + i, body - i);
        if (EVP_DecodeBlock(tmp, (const unsigned char *)last, 4) != 3)
            return -EINVAL;
        memcpy(out + o, tmp, body - i - 1);
        o += body - i - 1;
    }
    *outlen = o;
    return 0;
}
