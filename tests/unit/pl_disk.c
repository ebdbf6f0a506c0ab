/*
 * pl_disk — a disk that loses power (see pl_disk.h).
 *
 * Beside the real tree, a table of nodes: one per file or directory the
 * disk has seen, found from an inode number through `inos` (the current
 * mapping; a create or mkdir gives the inode a new node, so a reused inode
 * number never inherits an old file's durable state). A file node holds its
 * durable contents and the writes pending since; a directory node holds its
 * durable entries (name -> node). A power cut writes the tree reachable from
 * the root's durable entries into "<root>.plcut", replaces root with it and
 * takes a new snapshot.
 */
#define _GNU_SOURCE
#include "pl_disk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"

typedef struct pl_op {       /* a pending change of a file */
    off_t off;
    size_t len;
    uint8_t *data;           /* NULL: ftruncate to off */
} pl_op;

typedef struct pl_ent {
    char *name;
    size_t node;
} pl_ent;

typedef struct pl_node {
    bool is_dir;
    uint8_t *data;           /* durable contents (files) */
    size_t len;
    pl_ent *ents;            /* durable entries (directories) */
    size_t n_ents;
    pl_op *ops;              /* pending since the last sync (files) */
    size_t n_ops, cap_ops;
} pl_node;

typedef struct pl_ino {
    ino_t ino;
    size_t node;
} pl_ino;

struct pl_disk {
    disk_io io;
    pthread_mutex_t mu;
    char *root;
    uint64_t rng;
    pl_node *nodes;
    size_t n_nodes, cap_nodes;
    pl_ino *inos;
    size_t n_inos, cap_inos;
    size_t root_node;
    long countdown;          /* mutating calls until the stop; 0: disarmed */
    bool stopped;
    pl_disk_stats st;
};

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        abort();
    }
    return q;
}

static uint64_t rng_next(pl_disk *d)
{
    uint64_t z = (d->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- nodes ---------------------------------------------------------------- */

static size_t node_new(pl_disk *d, bool is_dir)
{
    if (d->n_nodes == d->cap_nodes) {
        d->cap_nodes = d->cap_nodes ? d->cap_nodes * 2 : 64;
        d->nodes = xrealloc(d->nodes, d->cap_nodes * sizeof(*d->nodes));
    }
    d->nodes[d->n_nodes] = (pl_node){ .is_dir = is_dir };
    return d->n_nodes++;
}

static void ents_free(pl_node *n)
{
    for (size_t i = 0; i < n->n_ents; i++) {
        free(n->ents[i].name);
    }
    free(n->ents);
    n->ents = NULL;
    n->n_ents = 0;
}

static void ops_clear(pl_node *n)
{
    for (size_t i = 0; i < n->n_ops; i++) {
        free(n->ops[i].data);
    }
    n->n_ops = 0;
}

static void nodes_free(pl_disk *d)
{
    for (size_t i = 0; i < d->n_nodes; i++) {
        pl_node *n = &d->nodes[i];
        free(n->data);
        ents_free(n);
        ops_clear(n);
        free(n->ops);
    }
    free(d->nodes);
    free(d->inos);
    d->nodes = NULL;
    d->inos = NULL;
    d->n_nodes = d->cap_nodes = d->n_inos = d->cap_inos = 0;
}

static pl_ino *ino_find(pl_disk *d, ino_t ino)
{
    for (size_t i = 0; i < d->n_inos; i++) {
        if (d->inos[i].ino == ino) {
            return &d->inos[i];
        }
    }
    return NULL;
}

/* The inode now belongs to node. */
static void ino_bind(pl_disk *d, ino_t ino, size_t node)
{
    pl_ino *p = ino_find(d, ino);
    if (p) {
        p->node = node;
        return;
    }
    if (d->n_inos == d->cap_inos) {
        d->cap_inos = d->cap_inos ? d->cap_inos * 2 : 64;
        d->inos = xrealloc(d->inos, d->cap_inos * sizeof(*d->inos));
    }
    d->inos[d->n_inos++] = (pl_ino){ ino, node };
}

/* The node of an inode; one the disk has not seen (made outside the table)
 * gets a node with nothing durable. */
static size_t node_of(pl_disk *d, const struct stat *st)
{
    pl_ino *p = ino_find(d, st->st_ino);
    if (p) {
        return p->node;
    }
    size_t n = node_new(d, S_ISDIR(st->st_mode));
    ino_bind(d, st->st_ino, n);
    return n;
}

/* Records the entries of directory path as they are now into node n. */
static int capture_dir(pl_disk *d, const char *path, size_t n)
{
    DIR *dir = opendir(path);
    if (!dir) {
        return -errno;
    }
    pl_ent *ents = NULL;
    size_t cnt = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        char p[4096];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
        if (lstat(p, &st) != 0 || !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode))) {
            continue;
        }
        ents = xrealloc(ents, (cnt + 1) * sizeof(*ents));
        ents[cnt].name = strdup(de->d_name);
        ents[cnt].node = node_of(d, &st); /* may move d->nodes */
        cnt++;
    }
    closedir(dir);
    ents_free(&d->nodes[n]);
    d->nodes[n].ents = ents;
    d->nodes[n].n_ents = cnt;
    return 0;
}

/* Makes the file's current contents its durable contents. fd may be
 * write-only: the file is read through a descriptor of its own. */
static int capture_file(pl_disk *d, int fd, size_t n)
{
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
    int rfd = open(self, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (rfd < 0 || fstat(rfd, &st) != 0) {
        int rc = -errno;
        if (rfd >= 0) {
            close(rfd);
        }
        return rc;
    }
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(rfd, buf + got, (size_t)st.st_size - got, (off_t)got);
        if (r <= 0) {
            int rc = r < 0 ? -errno : -EIO;
            free(buf);
            close(rfd);
            return rc;
        }
        got += (size_t)r;
    }
    close(rfd);
    pl_node *node = &d->nodes[n];
    free(node->data);
    node->data = buf;
    node->len = got;
    ops_clear(node);
    return 0;
}

/* Everything under path (a directory) is durable as it is. */
static int snapshot(pl_disk *d, const char *path, size_t n)
{
    int rc = capture_dir(d, path, n);
    for (size_t i = 0; rc == 0 && i < d->nodes[n].n_ents; i++) {
        pl_ent e = d->nodes[n].ents[i];
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", path, e.name);
        if (d->nodes[e.node].is_dir) {
            rc = snapshot(d, p, e.node);
        } else {
            int fd = open(p, O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                return -errno;
            }
            rc = capture_file(d, fd, e.node);
            close(fd);
        }
    }
    return rc;
}

static int snapshot_root(pl_disk *d)
{
    nodes_free(d);
    struct stat st;
    if (stat(d->root, &st) != 0) {
        return -errno;
    }
    d->root_node = node_of(d, &st);
    return snapshot(d, d->root, d->root_node);
}

/* ---- the table ------------------------------------------------------------ */

/* Counts a mutating call; false when the machine has stopped. */
static bool go_on(pl_disk *d)
{
    d->st.ops++;
    if (d->stopped) {
        return false;
    }
    if (d->countdown > 0 && --d->countdown == 0) {
        d->stopped = true;
        d->st.stops++;
        return false;
    }
    return true;
}

/* Records a pending write (data != NULL) or truncation of fd's file. */
static int add_op(pl_disk *d, int fd, const void *data, size_t len, off_t off)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return -errno;
    }
    size_t n = node_of(d, &st);
    pl_node *node = &d->nodes[n];
    if (node->n_ops == node->cap_ops) {
        node->cap_ops = node->cap_ops ? node->cap_ops * 2 : 8;
        node->ops = xrealloc(node->ops, node->cap_ops * sizeof(*node->ops));
    }
    pl_op op = { .off = off, .len = len };
    if (data) {
        op.data = malloc(len ? len : 1);
        memcpy(op.data, data, len);
    }
    node->ops[node->n_ops++] = op;
    return 0;
}

static int t_open_locked(pl_disk *d, const char *path, int flags, mode_t mode)
{
    bool writes = (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) != 0;
    if (writes && !go_on(d)) {
        return -EIO;
    }
    struct stat before;
    bool existed = lstat(path, &before) == 0;
    int fd = open(path, flags | O_CLOEXEC, mode);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    if (!existed) {
        ino_bind(d, st.st_ino, node_new(d, false)); /* nothing durable yet */
    } else if ((flags & O_TRUNC) && S_ISREG(st.st_mode)) {
        int rc = add_op(d, fd, NULL, 0, 0);   /* a pending truncation to 0 */
        if (rc != 0) {
            close(fd);
            return rc;
        }
    }
    return fd;
}

static int t_open(void *ctx, const char *path, int flags, mode_t mode)
{
    pl_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    int rc = t_open_locked(d, path, flags, mode);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static int t_close(void *ctx, int fd)
{
    (void)ctx;
    return close(fd) == 0 ? 0 : -errno;
}

static ssize_t t_pread(void *ctx, int fd, void *buf, size_t len, off_t off)
{
    (void)ctx;
    ssize_t n = pread(fd, buf, len, off);
    return n < 0 ? -errno : n;
}

static ssize_t t_pwrite_locked(pl_disk *d, int fd, const void *buf, size_t len, off_t off)
{
    if (!go_on(d)) {
        return -EIO;
    }
    ssize_t n = pwrite(fd, buf, len, off);
    if (n < 0) {
        return -errno;
    }
    int rc = add_op(d, fd, buf, (size_t)n, off);
    return rc < 0 ? rc : n;
}

static ssize_t t_pwrite(void *ctx, int fd, const void *buf, size_t len, off_t off)
{
    pl_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    ssize_t rc = t_pwrite_locked(d, fd, buf, len, off);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static int t_ftruncate(void *ctx, int fd, off_t len)
{
    pl_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    int rc = -EIO;
    if (go_on(d)) {
        rc = ftruncate(fd, len) == 0 ? add_op(d, fd, NULL, 0, len) : -errno;
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static int t_sync_locked(pl_disk *d, int fd)
{
    if (!go_on(d)) {
        return -EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return -errno;
    }
    size_t n = node_of(d, &st);
    if (!S_ISDIR(st.st_mode)) {
        return capture_file(d, fd, n);
    }
    char link[64], path[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t l = readlink(link, path, sizeof(path) - 1);
    if (l < 0) {
        return -errno;
    }
    path[l] = '\0';
    return capture_dir(d, path, n);
}

static int t_sync(void *ctx, int fd)
{
    pl_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    int rc = t_sync_locked(d, fd);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static int t_fsync_dir_locked(pl_disk *d, const char *dir)
{
    if (!go_on(d)) {
        return -EIO;
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        return -errno;
    }
    if (!S_ISDIR(st.st_mode)) {
        return -ENOTDIR;
    }
    return capture_dir(d, dir, node_of(d, &st));
}

static int t_fsync_dir(void *ctx, const char *dir)
{
    pl_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    int rc = t_fsync_dir_locked(d, dir);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static int t_rename_locked(pl_disk *d, const char *from, const char *to)
{
    if (!go_on(d)) {
        return -EIO;
    }
    return rename(from, to) == 0 ? 0 : -errno;
}

static int t_rename(void *ctx, const char *from, const char *to)
{
    pl_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    int rc = t_rename_locked(d, from, to);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static int t_unlink(void *ctx, const char *path)
{
    pl_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    int rc = !go_on(d) ? -EIO : unlink(path) == 0 ? 0 : -errno;
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static int t_mkdir(void *ctx, const char *path)
{
    pl_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    int rc = -EIO;
    if (go_on(d)) {
        struct stat st;
        rc = mkdir(path, 0755) == 0 ? 0 : -errno;
        if (rc == 0 && stat(path, &st) == 0) {
            ino_bind(d, st.st_ino, node_new(d, true));
        }
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static int t_remove_tree(void *ctx, const char *path)
{
    pl_disk *d = ctx;
    pthread_mutex_lock(&d->mu);
    int rc = !go_on(d) ? -EIO : fs_remove_tree(path);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

/* fs_write_atomic's steps, each one a mutating call of this disk. */
static int t_write_atomic(void *ctx, const char *path, const void *data, size_t len)
{
    pl_disk *d = ctx;
    char tmp[4200], dir[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
    } else {
        strcpy(dir, ".");
    }
    pthread_mutex_lock(&d->mu);
    int rc = 0;
    int fd = t_open_locked(d, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rc = fd;
        goto done;
    }
    for (size_t off = 0; rc == 0 && off < len;) {
        ssize_t n = t_pwrite_locked(d, fd, (const uint8_t *)data + off, len - off, (off_t)off);
        rc = n < 0 ? (int)n : n == 0 ? -EIO : 0;
        off += n > 0 ? (size_t)n : 0;
    }
    rc = rc ? rc : t_sync_locked(d, fd);
    close(fd);
    rc = rc ? rc : t_rename_locked(d, tmp, path);
    if (rc != 0 && !d->stopped) {
        unlink(tmp);
    }
    rc = rc ? rc : t_fsync_dir_locked(d, dir);
done:
    pthread_mutex_unlock(&d->mu);
    return rc;
}

/* ---- the power cut -------------------------------------------------------- */

/* The contents node n has after the cut: its durable bytes plus, in a
 * random-subset cut, some of its pending changes in their order. */
static uint8_t *after_cut(pl_disk *d, const pl_node *n, pl_cut_mode mode, size_t *len)
{
    size_t cap = n->len, l = n->len;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (n->len) {
        memcpy(buf, n->data, n->len);
    }
    for (size_t i = 0; i < n->n_ops; i++) {
        const pl_op *op = &n->ops[i];
        if (mode != PL_CUT_RANDOM_SUBSET || (rng_next(d) & 1)) {
            d->st.writes_undone++;
            continue;
        }
        d->st.writes_kept++;
        size_t end = (size_t)op->off + (op->data ? op->len : 0);
        if (end > cap) {
            cap = end * 2;
            buf = xrealloc(buf, cap);
        }
        if (end > l) {
            memset(buf + l, 0, end - l);
        }
        if (op->data) {
            memcpy(buf + op->off, op->data, op->len);
            l = end > l ? end : l;
        } else {
            l = (size_t)op->off;
        }
    }
    *len = l;
    return buf;
}

static int build(pl_disk *d, size_t n, const char *path, pl_cut_mode mode, int depth)
{
    const pl_node *node = &d->nodes[n];
    if (depth > 64) {
        return -ELOOP;
    }
    if (node->is_dir) {
        if (mkdir(path, 0755) != 0) {
            return -errno;
        }
        for (size_t i = 0; i < node->n_ents; i++) {
            char p[4096];
            snprintf(p, sizeof(p), "%s/%s", path, node->ents[i].name);
            int rc = build(d, node->ents[i].node, p, mode, depth + 1);
            if (rc != 0) {
                return rc;
            }
        }
        return 0;
    }
    size_t len;
    uint8_t *data = after_cut(d, node, mode, &len);
    int rc = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
    } else {
        if (len && pwrite(fd, data, len, 0) != (ssize_t)len) {
            rc = -EIO;
        }
        close(fd);
    }
    free(data);
    return rc;
}

/* Counts the names under a that are not under b. */
static long missing(const char *a, const char *b)
{
    DIR *dir = opendir(a);
    if (!dir) {
        return 0;
    }
    long cnt = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        char pa[4096], pb[4096];
        struct stat sa, sb;
        snprintf(pa, sizeof(pa), "%s/%s", a, de->d_name);
        snprintf(pb, sizeof(pb), "%s/%s", b, de->d_name);
        if (lstat(pb, &sb) != 0) {
            cnt++;
        } else if (lstat(pa, &sa) == 0 && S_ISDIR(sa.st_mode) && S_ISDIR(sb.st_mode)) {
            cnt += missing(pa, pb);
        }
    }
    closedir(dir);
    return cnt;
}

int pl_disk_power_cut(pl_disk *d, pl_cut_mode mode)
{
    pthread_mutex_lock(&d->mu);
    char cut[4200];
    snprintf(cut, sizeof(cut), "%s.plcut", d->root);
    fs_remove_tree(cut);
    int rc = build(d, d->root_node, cut, mode, 0);
    if (rc == 0) {
        d->st.names_lost += missing(d->root, cut);
        d->st.names_back += missing(cut, d->root);
        rc = fs_remove_tree(d->root);
    }
    if (rc == 0 && rename(cut, d->root) != 0) {
        rc = -errno;
    }
    d->countdown = 0;
    d->stopped = false;
    d->st.cuts++;
    rc = rc ? rc : snapshot_root(d);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

/* ---- the rest ------------------------------------------------------------- */

pl_disk *pl_disk_new(const char *root, uint64_t seed)
{
    pl_disk *d = calloc(1, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
    d->root = strdup(root);
    d->rng = seed;
    if (snapshot_root(d) != 0) {
        pl_disk_free(d);
        return NULL;
    }
    d->io = disk_io_posix;
    d->io.ctx = d;
    d->io.use_uring = 0;
    d->io.open = t_open;
    d->io.close = t_close;
    d->io.pread = t_pread;
    d->io.pwrite = t_pwrite;
    d->io.fdatasync = t_sync;
    d->io.fsync = t_sync;
    d->io.ftruncate = t_ftruncate;
    d->io.rename = t_rename;
    d->io.unlink = t_unlink;
    d->io.mkdir = t_mkdir;
    d->io.remove_tree = t_remove_tree;
    d->io.fsync_dir = t_fsync_dir;
    d->io.write_atomic = t_write_atomic;
    d->io.uring_result = NULL;
    return d;
}

void pl_disk_free(pl_disk *d)
{
    if (!d) {
        return;
    }
    nodes_free(d);
    free(d->root);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

const disk_io *pl_disk_io(pl_disk *d)
{
    return &d->io;
}

void pl_disk_arm(pl_disk *d, long n)
{
    pthread_mutex_lock(&d->mu);
    d->countdown = n > 0 ? n : 0;
    d->stopped = false;
    pthread_mutex_unlock(&d->mu);
}

bool pl_disk_stopped(pl_disk *d)
{
    pthread_mutex_lock(&d->mu);
    bool s = d->stopped;
    pthread_mutex_unlock(&d->mu);
    return s;
}

pl_disk_stats pl_disk_get_stats(pl_disk *d)
{
    pthread_mutex_lock(&d->mu);
    pl_disk_stats s = d->st;
    pthread_mutex_unlock(&d->mu);
    return s;
}
