/*
 * fuzz_common.h — shared by the libFuzzer targets in tests/fuzz (header
 * only): CHECK (abort on a broken property, even with NDEBUG), a
 * per-process scratch directory, and little-endian helpers.
 */
#ifndef ARBOR_FUZZ_COMMON_H
#define ARBOR_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            abort();                                                         \
        }                                                                    \
    } while (0)

static inline void fz_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint64_t fz_get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t fz_get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t fz_get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* A directory of this process, made on first use and removed at exit
 * (only the files the targets put there: callers unlink their own). */
static char fz_dir_path[256];
static void fz_dir_cleanup(void) { rmdir(fz_dir_path); }
static inline const char *fz_dir(void)
{
    if (fz_dir_path[0] == '\0') {
        const char *tmp = getenv("TMPDIR");
        snprintf(fz_dir_path, sizeof fz_dir_path, "%s/arbor-fuzz.XXXXXX",
                 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
        CHECK(mkdtemp(fz_dir_path) != NULL);
        atexit(fz_dir_cleanup);
    }
    return fz_dir_path;
}

/* Writes data to path whole (replacing it). */
static inline void fz_write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);
}

#endif
