/*
 * powerloss — see powerloss.h.
 */
#define _GNU_SOURCE
#include "powerloss.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "fsutil.h"
#include "log.h"

static pthread_once_t pl_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t pl_mu = PTHREAD_MUTEX_INITIALIZER;
static int pl_fd = -1;
static uint64_t pl_seq;

enum { PL_MAX_FD = 65536 };
static char *pl_paths[PL_MAX_FD]; /* fd -> absolute path, under pl_mu */
static char pl_dirty[PL_MAX_FD];  /* fd written since its last sync */
static long pl_stop_at;           /* ARBOR_POWERLOSS_STOP: 0 = never */
static long pl_dirty_syncs;       /* syncs of dirty fds so far, under pl_mu */
static char pl_arm_path[PATH_MAX]; /* <dir>/arm: counting starts once it exists */
static int pl_armed;

static void pl_init(void)
{
    const char *dir = getenv("ARBOR_POWERLOSS_DIR");
    if (!dir || !*dir)
        return;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%ld.pl", dir, (long)getpid());
    pl_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (pl_fd < 0) {
        fprintf(stderr, "powerloss: cannot open %s: %s\n", path,
                strerror(errno));
        abort();
    }
    const char *stop = getenv("ARBOR_POWERLOSS_STOP");
    if (stop && *stop)
        pl_stop_at = strtol(stop, NULL, 10);
    snprintf(pl_arm_path, sizeof(pl_arm_path), "%s/arm", dir);
    log_warn("power-loss journal %s: unsynced writes will be undone after "
             "a kill (test mode; stop before sync %ld)", path, pl_stop_at);
}

int pl_enabled(void)
{
    pthread_once(&pl_once, pl_init);
    return pl_fd >= 0;
}

/* Appends one record (header + up to two payloads) with one write(2).
 * Aborts on failure: a lost record would make the simulation lie. */
static void pl_emit(const char *hdr, const void *a, size_t alen,
                    const void *b, size_t blen)
{
    size_t hlen = strlen(hdr);
    size_t n = hlen + alen + blen;
    char *buf = az_malloc(n);
    memcpy(buf, hdr, hlen);
    if (alen)
        memcpy(buf + hlen, a, alen);
    if (blen)
        memcpy(buf + hlen + alen, b, blen);
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(pl_fd, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, "powerloss: journal write failed: %s\n",
                    strerror(errno));
            abort();
        }
        done += (size_t)w;
    }
    az_free(buf);
}

static void pl_emit_path(char kind, const char *path)
{
    char hdr[96];
    snprintf(hdr, sizeof(hdr), "%c %llu %zu\n", kind,
             (unsigned long long)++pl_seq, strlen(path));
    pl_emit(hdr, path, strlen(path), NULL, 0);
}

/* Records the bytes [off, off+len) of fd's file (clipped to its size) and
 * its size, before they change. Called with pl_mu held. */
static void pl_record(int fd, off_t off, size_t len)
{
    const char *path = (fd >= 0 && fd < PL_MAX_FD) ? pl_paths[fd] : NULL;
    if (!path)
        return;
    pl_dirty[fd] = 1;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return;
    off_t old_size = st.st_size;
    size_t n = 0;
    uint8_t *old = NULL;
    if (off < old_size) {
        n = (size_t)(old_size - off) < len ? (size_t)(old_size - off) : len;
        old = az_malloc(n ? n : 1);
        int rfd = open(path, O_RDONLY | O_CLOEXEC);
        size_t got = 0;
        while (rfd >= 0 && got < n) {
            ssize_t r = pread(rfd, old + got, n - got, off + (off_t)got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        if (rfd >= 0)
            close(rfd);
        if (got < n) {
            fprintf(stderr, "powerloss: cannot read old bytes of %s\n", path);
            abort();
        }
    }
    char hdr[160];
    snprintf(hdr, sizeof(hdr), "W %llu %lld %lld %zu %zu\n",
             (unsigned long long)++pl_seq, (long long)off,
             (long long)old_size, n, strlen(path));
    pl_emit(hdr, path, strlen(path), old, n);
    az_free(old);
}

int pl_open(const char *path, int flags, mode_t mode)
{
    int fd;
    do {
        fd = open(path, flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    if (pl_enabled() && fd < PL_MAX_FD) {
        char link[64], abs[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, abs, sizeof(abs) - 1);
        pthread_mutex_lock(&pl_mu);
        az_free(pl_paths[fd]);
        pl_paths[fd] = NULL;
        if (n > 0) {
            abs[n] = '\0';
            pl_paths[fd] = az_strdup(abs);
        }
        pthread_mutex_unlock(&pl_mu);
    }
    return fd;
}

int pl_close(int fd)
{
    if (pl_enabled() && fd >= 0 && fd < PL_MAX_FD) {
        pthread_mutex_lock(&pl_mu);
        az_free(pl_paths[fd]);
        pl_paths[fd] = NULL;
        pthread_mutex_unlock(&pl_mu);
    }
    return close(fd) < 0 ? -errno : 0;
}

ssize_t pl_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    int on = pl_enabled();
    if (on) {
        pthread_mutex_lock(&pl_mu);
        pl_record(fd, off, len);
    }
    ssize_t n;
    do {
        n = pwrite(fd, buf, len, off);
    } while (n < 0 && errno == EINTR);
    int err = errno;
    if (on)
        pthread_mutex_unlock(&pl_mu);
    return n < 0 ? -err : n;
}

int pl_ftruncate(int fd, off_t len)
{
    int on = pl_enabled();
    if (on) {
        pthread_mutex_lock(&pl_mu);
        struct stat st;
        if (fstat(fd, &st) == 0)
            pl_record(fd, len < st.st_size ? len : st.st_size,
                      len < st.st_size ? (size_t)(st.st_size - len) : 0);
    }
    int rc = ftruncate(fd, len);
    int err = errno;
    if (on)
        pthread_mutex_unlock(&pl_mu);
    return rc < 0 ? -err : 0;
}

int pl_sync(int fd, int datasync)
{
    uint64_t seq = 0;
    char *path = NULL;
    int on = pl_enabled();
    if (on) {
        int stop = 0;
        pthread_mutex_lock(&pl_mu);
        seq = ++pl_seq;
        if (fd >= 0 && fd < PL_MAX_FD && pl_paths[fd])
            path = az_strdup(pl_paths[fd]);
        if (fd >= 0 && fd < PL_MAX_FD && pl_dirty[fd]) {
            pl_dirty[fd] = 0;
            if (pl_stop_at > 0 && !pl_armed)
                pl_armed = access(pl_arm_path, F_OK) == 0;
            if (pl_armed)
                stop = ++pl_dirty_syncs == pl_stop_at;
        }
        pthread_mutex_unlock(&pl_mu);
        if (stop) {
            /* A cut point with writes pending: the test sees the process
             * stopped and cuts the power of the cluster. */
            log_warn("power-loss: stopping before sync %ld (%s)", pl_stop_at,
                     path ? path : "?");
            raise(SIGSTOP);
        }
    }
    int rc;
    do {
        rc = datasync ? fdatasync(fd) : fsync(fd);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        az_free(path);
        return -errno;
    }
    if (path) {
        char hdr[96];
        pthread_mutex_lock(&pl_mu);
        snprintf(hdr, sizeof(hdr), "S %llu %zu\n", (unsigned long long)seq,
                 strlen(path));
        pl_emit(hdr, path, strlen(path), NULL, 0);
        pthread_mutex_unlock(&pl_mu);
    }
    az_free(path);
    return 0;
}

/* An absolute form of path for the journal (the directory resolved; the
 * last component may not exist). */
static void pl_abs(const char *path, char *out, size_t cap)
{
    char dir[PATH_MAX], res[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    const char *base = path;
    if (slash) {
        *slash = '\0';
        base = path + (slash - dir) + 1;
        if (!*dir)
            snprintf(dir, sizeof(dir), "/");
    } else {
        snprintf(dir, sizeof(dir), ".");
    }
    int n;
    if (realpath(dir, res))
        n = snprintf(out, cap, "%s/%s", strcmp(res, "/") == 0 ? "" : res,
                     base);
    else
        n = snprintf(out, cap, "%s", path);
    if (n < 0 || (size_t)n >= cap)
        snprintf(out, cap, "%s", path); /* too long: as given */
}

int pl_rename(const char *from, const char *to)
{
    int on = pl_enabled();
    char af[PATH_MAX], at[PATH_MAX];
    if (on) {
        pl_abs(from, af, sizeof(af));
        pl_abs(to, at, sizeof(at));
        pthread_mutex_lock(&pl_mu);
    }
    int rc = rename(from, to);
    int err = errno;
    if (on) {
        if (rc == 0) {
            /* Open fds follow the file to its new name. */
            for (int fd = 0; fd < PL_MAX_FD; fd++) {
                if (pl_paths[fd] && strcmp(pl_paths[fd], af) == 0) {
                    az_free(pl_paths[fd]);
                    pl_paths[fd] = az_strdup(at);
                }
            }
            char hdr[128];
            snprintf(hdr, sizeof(hdr), "R %llu %zu %zu\n",
                     (unsigned long long)++pl_seq, strlen(af), strlen(at));
            pl_emit(hdr, af, strlen(af), at, strlen(at));
        }
        pthread_mutex_unlock(&pl_mu);
    }
    return rc < 0 ? -err : 0;
}

static int pl_removed(const char *path, int rc)
{
    if (rc == 0 && pl_enabled()) {
        char a[PATH_MAX];
        pl_abs(path, a, sizeof(a));
        pthread_mutex_lock(&pl_mu);
        pl_emit_path('U', a);
        pthread_mutex_unlock(&pl_mu);
    }
    return rc;
}

int pl_unlink(const char *path)
{
    return pl_removed(path, unlink(path) < 0 ? -errno : 0);
}

int pl_remove_tree(const char *path)
{
    return pl_removed(path, fs_remove_tree(path));
}

int pl_write_atomic(const char *path, const void *data, size_t len)
{
    int rc = fs_write_atomic(path, data, len);
    if (rc == 0 && pl_enabled()) {
        /* The new file is durable: nothing pending of the old one
         * matters. An unlink record drops it. */
        char a[PATH_MAX];
        pl_abs(path, a, sizeof(a));
        pthread_mutex_lock(&pl_mu);
        pl_emit_path('U', a);
        pthread_mutex_unlock(&pl_mu);
    }
    return rc;
}
