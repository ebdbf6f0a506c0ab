/*
 * b64 — standard base64 (RFC 4648 §4, "+/" and "=" padding) on OpenSSL's
 * EVP_EncodeBlock / EVP_DecodeBlock, the one implementation every module
 * uses (SCRAM messages, blobs in SQL over HTTP, Hrana, the CLI's JSON).
 */
#ifndef ARBOR_B64_H
#define ARBOR_B64_H

#include <stddef.h>
#include <stdint.h>

/* Bytes b64_encode writes for n input bytes, with the NUL. */
#define B64_ENCODED_SIZE(n) (4 * (((size_t)(n) + 2) / 3) + 1)

/* Encodes n bytes into out (B64_ENCODED_SIZE(n) bytes, NUL-terminated). */
void b64_encode(const uint8_t *in, size_t n, char *out);
/* The same into a new buffer (az_free). */
char *b64_encode_alloc(const uint8_t *in, size_t n);
/* Decodes n characters, padded, or unpadded when unpadded_ok; strict: only
 * the alphabet, '=' only at the end. Into out (outcap bytes). 0 and
 * *outlen, or -EINVAL (malformed or too long for outcap). */
int b64_decode(const char *in, size_t n, int unpadded_ok, uint8_t *out, size_t outcap,
               size_t *outlen);
/* The most bytes n characters can decode to. */
#define B64_DECODED_MAX(n) (3 * (((size_t)(n) + 3) / 4))

#endif
