/*
 * replay_main — runs files through a libFuzzer entry point without libFuzzer,
 * so the seed corpus (and any crasher saved into it) is a regular ctest.
 *
 * Usage: <binary> PATH...  Each PATH is a file or a directory whose regular
 * files are replayed in name order. Exits 1 if nothing was replayed (a
 * wrong path must not pass silently) or a file cannot be read; a failing
 * input aborts inside the target.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the whole file into *buf, malloc'ed to exactly its size (as
 * libFuzzer does) so ASan catches reads past the end. 0 or -1. */
static int read_file(const char *path, uint8_t **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long n;
    int rc = -1;

    *buf = NULL;
    if (f == NULL)
        return -1;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto done;
    /* malloc(0) may return NULL, so an empty file gets one byte. */
    if ((*buf = malloc(n > 0 ? (size_t)n : 1)) == NULL ||
        fread(*buf, 1, (size_t)n, f) != (size_t)n)
        goto done;
    *len = (size_t)n;
    rc = 0;
done:
    fclose(f);
    if (rc != 0) {
        free(*buf);
        *buf = NULL;
    }
    return rc;
}

static int replay_file(const char *path)
{
    uint8_t *buf;
    size_t len = 0;

    if (read_file(path, &buf, &len) != 0) {
        perror(path);
        return -1;
    }
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

static int is_regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Replays the regular files of dir; adds them to *count. 0 or -1. */
static int replay_dir(const char *dir, int *count)
{
    struct dirent **names = NULL;
    char path[4096];
    int n = scandir(dir, &names, NULL, alphasort), rc = 0;

    if (n < 0) {
        perror(dir);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        if (rc == 0 && is_regular_file(path)) {
            rc = replay_file(path);
            *count += rc == 0;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    struct stat st;
    int count = 0;

    for (int i = 1; i < argc; i++) {
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        if (S_ISDIR(st.st_mode)) {
            if (replay_dir(argv[i], &count) != 0)
                return 1;
        } else {
            if (replay_file(argv[i]) != 0)
                return 1;
            count++;
        }
    }
    printf("replayed %d inputs\n", count);
    return count > 0 ? 0 : 1;
}
