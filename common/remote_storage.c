/*
 * remote_storage — see remote_storage.h. Two backends behind a small
 * function table (local directory, S3 over libcurl); retries, stats and key
 * checks are shared.
 */
#define _GNU_SOURCE
#include "remote_storage.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "fsutil.h"
#include "log.h"

typedef struct rs_backend {
    const char *kind;
    int (*put)(remote_storage *rs, const char *key, const void *data, size_t len);
    int (*put_file)(remote_storage *rs, const char *key, const char *path);
    int (*get)(remote_storage *rs, const char *key, uint64_t off, uint64_t len,
               uint8_t **data, size_t *n);
    int (*del)(remote_storage *rs, const char *key);
    int (*del_many)(remote_storage *rs, const char *const *keys, size_t n);
    int (*list)(remote_storage *rs, const char *prefix, rs_listing *out);
} rs_backend;

struct remote_storage {
    const rs_backend *be;
    char *url;
    rs_options opts;
    uint32_t backoff_base_ms;
    /* local */
    char *root;
    /* s3 */
    char *endpoint;     /* no trailing '/' */
    char *bucket;
    char *prefix;       /* "" or ends with '/' */
    char *region;
    char *userpwd;      /* "AK:SK" */
    char *sigv4;        /* "aws:amz:<region>:s3" */
    _Atomic uint64_t requests, errors, retries, up, down, puts, gets, dels, lists;
};

/* ---- shared ----------------------------------------------------------- */

static bool key_valid(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > RS_KEY_MAX || key[0] == '/' || key[n - 1] == '/') {
        return false;
    }
    const char *p = key;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') ||
            (len == 2 && p[0] == '.' && p[1] == '.')) {
            return false;
        }
        p += len + (e ? 1 : 0);
    }
    return true;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Delay before retry attempt (1-based): base * 2^(attempt-1), at most 5 s,
 * plus up to 25% jitter. */
static uint32_t backoff_ms(const remote_storage *rs, uint32_t attempt)
{
    uint64_t d = rs->backoff_base_ms;
    for (uint32_t i = 1; i < attempt && d < 5000; i++) {
        d *= 2;
    }
    if (d > 5000) {
        d = 5000;
    }
    return (uint32_t)(d + (d ? (uint64_t)rand() % (d / 4 + 1) : 0));
}

static void count_result(remote_storage *rs, int rc)
{
    if (rc != 0 && rc != -ENOENT) {
        atomic_fetch_add_explicit(&rs->errors, 1, memory_order_relaxed);
    }
}

/* ---- local directory backend ------------------------------------------ */

static char *local_path(const remote_storage *rs, const char *key)
{
    size_t n = strlen(rs->root) + strlen(key) + 2;
    char *p = az_malloc(n);
    snprintf(p, n, "%s/%s", rs->root, key);
    return p;
}

static int mkdir_parent(const char *path)
{
    char *d = az_strdup(path);
    char *slash = strrchr(d, '/');
    int rc = 0;
    if (slash) {
        *slash = '\0';
        rc = fs_mkdir_p(d);
    }
    az_free(d);
    return rc;
}

/* A temporary name beside dst that no other writer of dst uses (another
 * thread or process may PUT the same key at once: the last rename wins, as
 * on S3). Hidden from listings by its leading dot. */
static int unique_tmp(const char *dst, char *tmp, size_t cap)
{
    static _Atomic uint64_t seq;
    const char *slash = strrchr(dst, '/');
    int dl = slash ? (int)(slash - dst) + 1 : 0;
    int n = snprintf(tmp, cap, "%.*s.%s.%ld.%" PRIu64 ".tmp", dl, dst, dst + dl, (long)getpid(),
                     atomic_fetch_add(&seq, 1));
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static int local_put(remote_storage *rs, const char *key, const void *data, size_t len)
{
    char *p = local_path(rs, key);
    char tmp[4200];
    int rc = mkdir_parent(p);
    if (rc == 0) {
        rc = unique_tmp(p, tmp, sizeof(tmp));
    }
    if (rc == 0) {
        rc = fs_write_atomic_via(p, tmp, data, len);
    }
    az_free(p);
    return rc;
}

/* Copies src into dst through a temporary file: write, fsync, rename,
 * fsync dir. */
static int copy_file_durable(const char *src, const char *dst, uint64_t *copied)
{
    char tmp[4200];
    if (unique_tmp(dst, tmp, sizeof(tmp)) != 0) {
        return -ENAMETOOLONG;
    }
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return -errno;
    }
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = -errno;
        close(in);
        return e;
    }
    int rc = 0;
    uint64_t total = 0;
    uint8_t *buf = az_malloc(1 << 20);
    for (;;) {
        ssize_t r = read(in, buf, 1 << 20);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            rc = r < 0 ? -errno : 0;
            break;
        }
        rc = fs_pwrite_all(out, buf, (size_t)r, (off_t)total);
        if (rc != 0) {
            break;
        }
        total += (uint64_t)r;
    }
    az_free(buf);
    close(in);
    if (rc == 0 && fsync(out) != 0) {
        rc = -errno;
    }
    close(out);
    if (rc == 0 && rename(tmp, dst) != 0) {
        rc = -errno;
    }
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    char *d = az_strdup(dst);
    char *slash = strrchr(d, '/');
    if (slash) {
        *slash = '\0';
        rc = fs_fsync_dir(d);
    }
    az_free(d);
    if (copied) {
        *copied = total;
    }
    return rc;
}

static int local_put_file(remote_storage *rs, const char *key, const char *path)
{
    char *p = local_path(rs, key);
    uint64_t n = 0;
    int rc = mkdir_parent(p);
    if (rc == 0) {
        rc = copy_file_durable(path, p, &n);
    }
    az_free(p);
    if (rc == 0) {
        atomic_fetch_add_explicit(&rs->up, n, memory_order_relaxed);
    }
    return rc;
}

static int local_get(remote_storage *rs, const char *key, uint64_t off, uint64_t len,
                     uint8_t **data, size_t *n)
{
    (void)rs;
    char *p = local_path(rs, key);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    az_free(p);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    uint64_t size = (uint64_t)st.st_size;
    uint64_t avail = off < size ? size - off : 0;
    uint64_t want = (len == 0 || len > avail) ? avail : len;
    uint8_t *buf = az_malloc(want + 1);
    int rc = want ? fs_pread_all(fd, buf, want, (off_t)off) : 0;
    close(fd);
    if (rc != 0) {
        az_free(buf);
        return rc;
    }
    *data = buf;
    *n = want;
    return 0;
}

static int local_del(remote_storage *rs, const char *key)
{
    char *p = local_path(rs, key);
    int rc = unlink(p) == 0 || errno == ENOENT ? 0 : -errno;
    az_free(p);
    return rc;
}

static int local_del_many(remote_storage *rs, const char *const *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = local_del(rs, keys[i]);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static void list_add(rs_listing *l, size_t *cap, const char *key, uint64_t size)
{
    if (l->n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        l->objects = az_realloc(l->objects, *cap * sizeof(*l->objects));
    }
    l->objects[l->n].key = az_strdup(key);
    l->objects[l->n].size_bytes = size;
    l->n++;
}

/* Walks dir (relative key rel) recursively, adding files under prefix. */
static int local_walk(const char *dir, const char *rel, const char *prefix,
                      rs_listing *l, size_t *cap)
{
    DIR *d = opendir(dir);
    if (!d) {
        return errno == ENOENT ? 0 : -errno;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t nl = strlen(nm);
        if (nm[0] == '.' || (nl > 4 && strcmp(nm + nl - 4, ".tmp") == 0)) {
            continue;   /* ".", "..", and objects being written */
        }
        char path[4096], key[RS_KEY_MAX + 256];
        snprintf(key, sizeof(key), "%s%s%s", rel, rel[0] ? "/" : "", nm);
        /* Prune what cannot match the prefix before any stat: a listing of
         * one timeline's keys must not stat its 10,000 siblings. */
        size_t kl = strlen(key), pl = strlen(prefix);
        if (strncmp(key, prefix, kl < pl ? kl : pl) != 0) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, nm);
        struct stat st;
        if (stat(path, &st) != 0) {
            continue;   /* deleted meanwhile */
        }
        if (S_ISDIR(st.st_mode)) {
            rc = local_walk(path, key, prefix, l, cap);
        } else if (S_ISREG(st.st_mode) && kl >= pl) {
            list_add(l, cap, key, (uint64_t)st.st_size);
        }
    }
    closedir(d);
    return rc;
}

static int obj_cmp(const void *a, const void *b)
{
    return strcmp(((const rs_object *)a)->key, ((const rs_object *)b)->key);
}

static int local_list(remote_storage *rs, const char *prefix, rs_listing *out)
{
    /* The walk starts in the prefix's directory part ("a/b/" of "a/b/c"):
     * only what is below it can match. */
    size_t cap = 0;
    const char *slash = strrchr(prefix, '/');
    char rel[RS_KEY_MAX + 1], dir[4096];
    size_t rl = slash ? (size_t)(slash - prefix) : 0;
    if (rl >= sizeof(rel)) {
        return -ENAMETOOLONG;
    }
    memcpy(rel, prefix, rl);
    rel[rl] = 0;
    if (rl && !key_valid(rel)) {
        return -EINVAL;   /* "..": nothing outside the root */
    }
    int n = snprintf(dir, sizeof(dir), "%s%s%s", rs->root, rl ? "/" : "", rel);
    if (n < 0 || (size_t)n >= sizeof(dir)) {
        return -ENAMETOOLONG;
    }
    int rc = local_walk(dir, rel, prefix, out, &cap);
    if (rc == 0 && out->n > 1) {
        qsort(out->objects, out->n, sizeof(*out->objects), obj_cmp);
    }
    return rc;
}

static const rs_backend local_backend = {
    "local", local_put, local_put_file, local_get, local_del, local_del_many, local_list,
};

/* ---- S3 backend ---------------------------------------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void buf_add(buf *b, const void *d, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = az_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void buf_addf(buf *b, const char *fmt, const char *s)
{
    char tmp[RS_KEY_MAX * 6 + 256];
    int n = snprintf(tmp, sizeof(tmp), fmt, s);
    buf_add(b, tmp, (size_t)n);
}

static size_t on_body(char *p, size_t sz, size_t nm, void *arg)
{
    buf_add(arg, p, sz * nm);
    return sz * nm;
}

typedef struct s3_resp {
    long status;
    buf body;
    char etag[128];
} s3_resp;

static size_t on_header(char *p, size_t sz, size_t nm, void *arg)
{
    s3_resp *r = arg;
    size_t n = sz * nm;
    if (n > 5 && strncasecmp(p, "etag:", 5) == 0) {
        size_t i = 5;
        while (i < n && (p[i] == ' ' || p[i] == '\t')) {
            i++;
        }
        size_t e = n;
        while (e > i && (p[e - 1] == '\r' || p[e - 1] == '\n' || p[e - 1] == ' ')) {
            e--;
        }
        size_t len = e - i < sizeof(r->etag) - 1 ? e - i : sizeof(r->etag) - 1;
        memcpy(r->etag, p + i, len);
        r->etag[len] = 0;
    }
    return n;
}

static void hex_sha256(const void *d, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(d, n, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) {
        sprintf(out + 2 * i, "%02x", md[i]);
    }
}

static void b64_md5(const void *d, size_t n, char out[32])
{
    unsigned char md[16];
    unsigned int len = 0;
    EVP_Digest(d, n, md, &len, EVP_md5(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, 16);
}

/* RFC 3986 encoding of s; '/' kept when keep_slash (object paths). */
static void uri_encode(buf *b, const char *s, bool keep_slash)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            buf_add(b, &c, 1);
        } else {
            char h[4];
            snprintf(h, sizeof(h), "%%%02X", c);
            buf_add(b, h, 3);
        }
    }
}

typedef struct s3_req {
    const char *method;
    const char *key;          /* NULL: the bucket itself */
    const char *query;        /* canonical order, already encoded, or NULL */
    const void *body;
    size_t body_len;
    uint64_t range_off, range_len;   /* range_len 0 and off 0: no Range */
    bool has_range;
    const char *content_md5;
} s3_req;

static bool transient_status(long st)
{
    return st >= 500 || st == 429;
}

/* One HTTP exchange. 0 with resp filled (any status), or a transport
 * error: -ETIMEDOUT / -EIO. */
static int s3_exchange(remote_storage *rs, const s3_req *q, s3_resp *resp)
{
    buf url = { 0 };
    buf_addf(&url, "%s/", rs->endpoint);
    uri_encode(&url, rs->bucket, false);
    if (q->key) {
        buf_add(&url, "/", 1);
        uri_encode(&url, rs->prefix, true);
        uri_encode(&url, q->key, true);
    } else {
        buf_add(&url, "/", 1);
    }
    if (q->query) {
        buf_addf(&url, "?%s", q->query);
    }
    CURL *c = curl_easy_init();
    if (!c) {
        az_free(url.p);
        return -ENOMEM;
    }
    char sha[65], h_sha[100], h_range[96], h_md5[64];
    hex_sha256(q->body ? q->body : "", q->body_len, sha);
    snprintf(h_sha, sizeof(h_sha), "x-amz-content-sha256: %s", sha);
    struct curl_slist *hdr = curl_slist_append(NULL, h_sha);
    /* No "Expect:" line to suppress 100-continue: libcurl's SigV4 signs
     * every header of this list, also an empty one it then does not send,
     * and S3 refuses such a signature (tests/s3/sigv4_s3.py checks every
     * request with botocore). libcurl's own Expect on big bodies is not
     * signed and S3 answers it. */
    if (q->has_range) {
        if (q->range_len) {
            snprintf(h_range, sizeof(h_range), "Range: bytes=%" PRIu64 "-%" PRIu64,
                     q->range_off, q->range_off + q->range_len - 1);
        } else {
            snprintf(h_range, sizeof(h_range), "Range: bytes=%" PRIu64 "-", q->range_off);
        }
        hdr = curl_slist_append(hdr, h_range);
    }
    if (q->content_md5) {
        snprintf(h_md5, sizeof(h_md5), "Content-MD5: %s", q->content_md5);
        hdr = curl_slist_append(hdr, h_md5);
    }
    if (q->body) {
        hdr = curl_slist_append(hdr, "Content-Type: application/octet-stream");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
    } else if (strcmp(q->method, "POST") == 0 || strcmp(q->method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    curl_easy_setopt(c, CURLOPT_URL, (char *)url.p);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
    if (strcmp(q->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_USERPWD, rs->userpwd);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, rs->sigv4);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)rs->opts.connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)rs->opts.request_timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
    CURLcode cc = curl_easy_perform(c);
    int rc = 0;
    if (cc != CURLE_OK) {
        log_warn("s3 %s %s: %s", q->method, q->key ? q->key : "(bucket)",
                 curl_easy_strerror(cc));
        rc = cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
    } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    az_free(url.p);
    return rc;
}

/* An exchange with retries. 0 with a 2xx/3xx/4xx response in resp (the
 * caller maps its status), or the last transport error / -EIO after the
 * retries ran out on transient statuses. */
static int s3_request(remote_storage *rs, const s3_req *q, s3_resp *resp)
{
    int rc = 0;
    for (uint32_t attempt = 0;; attempt++) {
        az_free(resp->body.p);
        memset(resp, 0, sizeof(*resp));
        atomic_fetch_add_explicit(&rs->requests, 1, memory_order_relaxed);
        rc = s3_exchange(rs, q, resp);
        bool transient = rc != 0 || transient_status(resp->status) ||
                         (resp->body.p && strstr((char *)resp->body.p, "<Code>SlowDown<"));
        if (!transient) {
            return 0;
        }
        if (attempt >= rs->opts.max_retries) {
            if (rc == 0) {
                log_warn("s3 %s %s: HTTP %ld after %u retries", q->method,
                         q->key ? q->key : "(bucket)", resp->status, attempt);
                rc = -EIO;
            }
            return rc;
        }
        atomic_fetch_add_explicit(&rs->retries, 1, memory_order_relaxed);
        sleep_ms(backoff_ms(rs, attempt + 1));
    }
}

/* Maps a final status: 2xx 0, 404 -ENOENT, else -EIO (logged). */
static int s3_status(const s3_req *q, const s3_resp *r)
{
    if (r->status >= 200 && r->status < 300) {
        return 0;
    }
    if (r->status == 404) {
        return -ENOENT;
    }
    log_warn("s3 %s %s: HTTP %ld %.300s", q->method, q->key ? q->key : "(bucket)",
             r->status, r->body.p ? (char *)r->body.p : "");
    return -EIO;
}

static int s3_simple(remote_storage *rs, const s3_req *q, s3_resp *r)
{
    int rc = s3_request(rs, q, r);
    return rc != 0 ? rc : s3_status(q, r);
}

static int s3_put(remote_storage *rs, const char *key, const void *data, size_t len)
{
    s3_req q = { .method = "PUT", .key = key, .body = len ? data : NULL, .body_len = len };
    s3_resp r = { 0 };
    int rc = s3_simple(rs, &q, &r);
    az_free(r.body.p);
    if (rc == 0) {
        atomic_fetch_add_explicit(&rs->up, len, memory_order_relaxed);
    }
    return rc;
}

/* The text between <tag> and </tag> after *from (advanced past it), XML
 * entities decoded; NULL if none. az_free the result. */
static char *xml_next(const char **from, const char *tag)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *s = strstr(*from, open);
    if (!s) {
        return NULL;
    }
    s += strlen(open);
    const char *e = strstr(s, close);
    if (!e) {
        return NULL;
    }
    *from = e + strlen(close);
    char *out = az_malloc((size_t)(e - s) + 1);
    size_t o = 0;
    static const struct { const char *ent; char c; } ents[] = {
        { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' }, { "&apos;", '\'' },
    };
    while (s < e) {
        bool done = false;
        for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]) && *s == '&'; i++) {
            size_t l = strlen(ents[i].ent);
            if ((size_t)(e - s) >= l && strncmp(s, ents[i].ent, l) == 0) {
                out[o++] = ents[i].c;
                s += l;
                done = true;
                break;
            }
        }
        if (!done) {
            out[o++] = *s++;
        }
    }
    out[o] = 0;
    return out;
}

static void xml_escape(buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': buf_add(b, "&amp;", 5); break;
        case '<': buf_add(b, "&lt;", 4); break;
        case '>': buf_add(b, "&gt;", 4); break;
        default: buf_add(b, s, 1);
        }
    }
}

static int s3_multipart_abort(remote_storage *rs, const char *key, const char *upload_id)
{
    buf qs = { 0 };
    buf_add(&qs, "uploadId=", 9);
    uri_encode(&qs, upload_id, false);
    s3_req q = { .method = "DELETE", .key = key, .query = (char *)qs.p };
    s3_resp r = { 0 };
    int rc = s3_simple(rs, &q, &r);
    az_free(r.body.p);
    az_free(qs.p);
    return rc;
}

/* Uploads parts of fd (size bytes); fills the CompleteMultipartUpload body. */
static int s3_upload_parts(remote_storage *rs, const char *key, const char *upload_id,
                           int fd, uint64_t size, buf *complete)
{
    uint64_t part = rs->opts.part_bytes;
    uint8_t *data = az_malloc(part);
    int rc = 0;
    buf_add(complete, "<CompleteMultipartUpload>", 25);
    for (uint64_t off = 0, no = 1; rc == 0 && off < size; off += part, no++) {
        size_t n = (size_t)(size - off < part ? size - off : part);
        rc = fs_pread_all(fd, data, n, (off_t)off);
        if (rc != 0) {
            break;
        }
        char qs[512];
        buf enc = { 0 };
        uri_encode(&enc, upload_id, false);
        snprintf(qs, sizeof(qs), "partNumber=%" PRIu64 "&uploadId=%s", no, (char *)enc.p);
        az_free(enc.p);
        s3_req q = { .method = "PUT", .key = key, .query = qs, .body = data, .body_len = n };
        s3_resp r = { 0 };
        rc = s3_simple(rs, &q, &r);
        if (rc == 0) {
            char item[256];
            snprintf(item, sizeof(item), "<Part><PartNumber>%" PRIu64 "</PartNumber><ETag>", no);
            buf_add(complete, item, strlen(item));
            xml_escape(complete, r.etag);
            buf_add(complete, "</ETag></Part>", 14);
            atomic_fetch_add_explicit(&rs->up, n, memory_order_relaxed);
        }
        az_free(r.body.p);
    }
    buf_add(complete, "</CompleteMultipartUpload>", 26);
    az_free(data);
    return rc;
}

static int s3_put_multipart(remote_storage *rs, const char *key, int fd, uint64_t size)
{
    s3_req q = { .method = "POST", .key = key, .query = "uploads=" };
    s3_resp r = { 0 };
    int rc = s3_simple(rs, &q, &r);
    const char *cur = r.body.p ? (char *)r.body.p : "";
    char *upload_id = rc == 0 ? xml_next(&cur, "UploadId") : NULL;
    az_free(r.body.p);
    if (rc != 0 || !upload_id) {
        return rc != 0 ? rc : -EIO;
    }
    buf complete = { 0 };
    rc = s3_upload_parts(rs, key, upload_id, fd, size, &complete);
    if (rc == 0) {
        buf qs = { 0 };
        buf_add(&qs, "uploadId=", 9);
        uri_encode(&qs, upload_id, false);
        s3_req c = { .method = "POST", .key = key, .query = (char *)qs.p,
                     .body = complete.p, .body_len = complete.n };
        s3_resp cr = { 0 };
        rc = s3_simple(rs, &c, &cr);
        /* S3 may answer 200 with an <Error> body. */
        if (rc == 0 && cr.body.p && strstr((char *)cr.body.p, "<Error>")) {
            log_warn("s3 complete multipart %s: %.300s", key, (char *)cr.body.p);
            rc = -EIO;
        }
        az_free(cr.body.p);
        az_free(qs.p);
    }
    if (rc != 0) {
        s3_multipart_abort(rs, key, upload_id);
    }
    az_free(complete.p);
    az_free(upload_id);
    return rc;
}

static int s3_put_file(remote_storage *rs, const char *key, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? 0 : -errno;
    uint64_t size = rc == 0 ? (uint64_t)st.st_size : 0;
    if (rc == 0 && size > rs->opts.multipart_threshold) {
        rc = s3_put_multipart(rs, key, fd, size);
    } else if (rc == 0) {
        uint8_t *data = az_malloc(size + 1);
        rc = size ? fs_pread_all(fd, data, size, 0) : 0;
        if (rc == 0) {
            rc = s3_put(rs, key, data, size);
        }
        az_free(data);
    }
    close(fd);
    return rc;
}

static int s3_get(remote_storage *rs, const char *key, uint64_t off, uint64_t len,
                  uint8_t **data, size_t *n)
{
    s3_req q = { .method = "GET", .key = key, .has_range = off != 0 || len != 0,
                 .range_off = off, .range_len = len };
    s3_resp r = { 0 };
    int rc = s3_request(rs, &q, &r);
    if (rc == 0 && r.status == 416) {
        r.body.n = 0;   /* range past the end: empty */
    } else if (rc == 0) {
        rc = s3_status(&q, &r);
    }
    if (rc != 0) {
        az_free(r.body.p);
        return rc;
    }
    if (!r.body.p) {
        r.body.p = az_malloc(1);
    }
    atomic_fetch_add_explicit(&rs->down, r.body.n, memory_order_relaxed);
    *data = r.body.p;
    *n = r.body.n;
    return 0;
}

static int s3_del(remote_storage *rs, const char *key)
{
    s3_req q = { .method = "DELETE", .key = key };
    s3_resp r = { 0 };
    int rc = s3_simple(rs, &q, &r);
    az_free(r.body.p);
    return rc == -ENOENT ? 0 : rc;
}

/* DeleteObjects, at most 1000 keys per request. */
static int s3_del_many(remote_storage *rs, const char *const *keys, size_t n)
{
    int rc = 0;
    for (size_t at = 0; rc == 0 && at < n; at += 1000) {
        size_t k = n - at < 1000 ? n - at : 1000;
        buf body = { 0 };
        buf_add(&body, "<Delete><Quiet>true</Quiet>", 27);
        for (size_t i = 0; i < k; i++) {
            buf_add(&body, "<Object><Key>", 13);
            xml_escape(&body, rs->prefix);
            xml_escape(&body, keys[at + i]);
            buf_add(&body, "</Key></Object>", 15);
        }
        buf_add(&body, "</Delete>", 9);
        char md5[32];
        b64_md5(body.p, body.n, md5);
        s3_req q = { .method = "POST", .key = NULL, .query = "delete=", .body = body.p,
                     .body_len = body.n, .content_md5 = md5 };
        s3_resp r = { 0 };
        rc = s3_simple(rs, &q, &r);
        if (rc == 0 && r.body.p && strstr((char *)r.body.p, "<Error>")) {
            log_warn("s3 DeleteObjects: %.300s", (char *)r.body.p);
            rc = -EIO;
        }
        az_free(r.body.p);
        az_free(body.p);
    }
    return rc;
}

/* One ListObjectsV2 page; *token (az_malloc'ed) set when truncated. */
static int s3_list_page(remote_storage *rs, const char *prefix, char **token,
                        rs_listing *out, size_t *cap)
{
    buf qs = { 0 };
    if (*token) {
        buf_add(&qs, "continuation-token=", 19);
        uri_encode(&qs, *token, false);
        buf_add(&qs, "&", 1);
    }
    buf_add(&qs, "list-type=2&prefix=", 19);
    buf full = { 0 };
    buf_addf(&full, "%s", rs->prefix);
    buf_addf(&full, "%s", prefix);
    uri_encode(&qs, (char *)full.p, false);
    az_free(full.p);
    s3_req q = { .method = "GET", .key = NULL, .query = (char *)qs.p };
    s3_resp r = { 0 };
    int rc = s3_simple(rs, &q, &r);
    az_free(qs.p);
    az_free(*token);
    *token = NULL;
    if (rc != 0) {
        az_free(r.body.p);
        return rc;
    }
    const char *cur = r.body.p ? (char *)r.body.p : "";
    size_t plen = strlen(rs->prefix);
    for (;;) {
        char *contents = xml_next(&cur, "Contents");
        if (!contents) {
            break;
        }
        const char *c2 = contents;
        char *key = xml_next(&c2, "Key");
        c2 = contents;
        char *size = xml_next(&c2, "Size");
        if (key && strlen(key) > plen) {
            list_add(out, cap, key + plen, size ? strtoull(size, NULL, 10) : 0);
        }
        az_free(key);
        az_free(size);
        az_free(contents);
    }
    const char *c3 = r.body.p ? (char *)r.body.p : "";
    char *trunc = xml_next(&c3, "IsTruncated");
    if (trunc && strcmp(trunc, "true") == 0) {
        c3 = (char *)r.body.p;
        *token = xml_next(&c3, "NextContinuationToken");
        if (!*token) {
            rc = -EIO;
        }
    }
    az_free(trunc);
    az_free(r.body.p);
    return rc;
}

static int s3_list(remote_storage *rs, const char *prefix, rs_listing *out)
{
    size_t cap = 0;
    char *token = NULL;
    int rc;
    do {
        rc = s3_list_page(rs, prefix, &token, out, &cap);
    } while (rc == 0 && token);
    az_free(token);
    if (rc == 0 && out->n > 1) {
        qsort(out->objects, out->n, sizeof(*out->objects), obj_cmp);
    }
    return rc;
}

static const rs_backend s3_backend = {
    "s3", s3_put, s3_put_file, s3_get, s3_del, s3_del_many, s3_list,
};

/* ---- open ------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return (v && *v) ? az_strdup(v) : (dflt ? az_strdup(dflt) : NULL);
}

/* Value of query parameter name in q ("a=1&b=2"), percent-decoded; NULL. */
static char *query_param(const char *q, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = q; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            char *out = az_malloc(len - nl);
            size_t o = 0;
            for (size_t i = nl + 1; i < len; i++) {
                unsigned hv;
                if (p[i] == '%' && i + 2 < len + 1 && sscanf(p + i + 1, "%2x", &hv) == 1) {
                    out[o++] = (char)hv;
                    i += 2;
                } else {
                    out[o++] = p[i];
                }
            }
            out[o] = 0;
            return out;
        }
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static int open_s3(remote_storage *rs, const char *spec)
{
    char *s = az_strdup(spec);
    char *q = strchr(s, '?');
    if (q) {
        *q++ = 0;
    }
    char *slash = strchr(s, '/');
    if (slash) {
        *slash++ = 0;
    }
    int rc = 0;
    if (!*s) {
        rc = -EINVAL;
        goto done;
    }
    rs->bucket = az_strdup(s);
    /* prefix: no leading/trailing '/', then one trailing '/' */
    const char *p = slash ? slash : "";
    while (*p == '/') {
        p++;
    }
    size_t pl = strlen(p);
    while (pl && p[pl - 1] == '/') {
        pl--;
    }
    rs->prefix = az_malloc(pl + 2);
    memcpy(rs->prefix, p, pl);
    rs->prefix[pl] = pl ? '/' : 0;
    rs->prefix[pl + (pl ? 1 : 0)] = 0;
    char *region = query_param(q, "region");
    rs->region = region ? region : env_or("AWS_REGION", "us-east-1");
    char *ep = query_param(q, "endpoint");
    if (!ep) {
        char dflt[256];
        snprintf(dflt, sizeof(dflt), "https://s3.%s.amazonaws.com", rs->region);
        ep = env_or("AWS_ENDPOINT_URL", dflt);
    }
    size_t el = strlen(ep);
    while (el && ep[el - 1] == '/') {
        ep[--el] = 0;
    }
    rs->endpoint = ep;
    char *ak = rs->opts.access_key ? az_strdup(rs->opts.access_key)
                                   : env_or("AWS_ACCESS_KEY_ID", "");
    char *sk = rs->opts.secret_key ? az_strdup(rs->opts.secret_key)
                                   : env_or("AWS_SECRET_ACCESS_KEY", "");
    size_t n = strlen(ak) + strlen(sk) + 2;
    rs->userpwd = az_malloc(n);
    snprintf(rs->userpwd, n, "%s:%s", ak, sk);
    az_free(ak);
    az_free(sk);
    n = strlen(rs->region) + 16;
    rs->sigv4 = az_malloc(n);
    snprintf(rs->sigv4, n, "aws:amz:%s:s3", rs->region);
    rs->be = &s3_backend;
    pthread_once(&curl_once, curl_init_once);
done:
    az_free(s);
    return rc;
}

int rs_open(const char *url, const rs_options *opts, remote_storage **out)
{
    if (!url || !*url) {
        return -EINVAL;
    }
    remote_storage *rs = az_calloc(1, sizeof(*rs));
    if (opts) {
        rs->opts = *opts;
    }
    if (!rs->opts.connect_timeout_ms) rs->opts.connect_timeout_ms = 5000;
    if (!rs->opts.request_timeout_ms) rs->opts.request_timeout_ms = 60000;
    if (!rs->opts.max_retries) rs->opts.max_retries = 5;
    if (!rs->opts.multipart_threshold) rs->opts.multipart_threshold = 16u << 20;
    if (!rs->opts.part_bytes) rs->opts.part_bytes = 8u << 20;
    rs->opts.access_key = rs->opts.secret_key = NULL;   /* copied below if used */
    rs->backoff_base_ms = 100;
    rs->url = az_strdup(url);
    int rc = 0;
    if (strncmp(url, "s3://", 5) == 0) {
        rs->opts.access_key = opts ? opts->access_key : NULL;
        rs->opts.secret_key = opts ? opts->secret_key : NULL;
        rc = open_s3(rs, url + 5);
        rs->opts.access_key = rs->opts.secret_key = NULL;
    } else if (strstr(url, "://") && strncmp(url, "file://", 7) != 0) {
        rc = -EINVAL;
    } else {
        const char *dir = strncmp(url, "file://", 7) == 0 ? url + 7 : url;
        rs->root = az_strdup(dir);
        size_t l = strlen(rs->root);
        while (l > 1 && rs->root[l - 1] == '/') {
            rs->root[--l] = 0;
        }
        rc = *rs->root ? fs_mkdir_p(rs->root) : -EINVAL;
        rs->be = &local_backend;
    }
    if (rc != 0) {
        rs_close(rs);
        return rc;
    }
    *out = rs;
    return 0;
}

void rs_close(remote_storage *rs)
{
    if (!rs) {
        return;
    }
    az_free(rs->url);
    az_free(rs->root);
    az_free(rs->endpoint);
    az_free(rs->bucket);
    az_free(rs->prefix);
    az_free(rs->region);
    az_free(rs->userpwd);
    az_free(rs->sigv4);
    az_free(rs);
}

const char *rs_kind(const remote_storage *rs)
{
    return rs->be->kind;
}

const char *rs_url(const remote_storage *rs)
{
    return rs->url;
}

void rs_set_backoff_base_ms(remote_storage *rs, uint32_t base_ms)
{
    rs->backoff_base_ms = base_ms;
}

/* ---- public operations: key checks + stats around the backend ---------- */

int rs_put(remote_storage *rs, const char *key, const void *data, size_t len)
{
    if (!key_valid(key)) {
        return -EINVAL;
    }
    atomic_fetch_add_explicit(&rs->puts, 1, memory_order_relaxed);
    int rc = rs->be->put(rs, key, data, len);
    if (rc == 0 && rs->be == &local_backend) {
        atomic_fetch_add_explicit(&rs->up, len, memory_order_relaxed);
    }
    count_result(rs, rc);
    return rc;
}

int rs_put_file(remote_storage *rs, const char *key, const char *path)
{
    if (!key_valid(key)) {
        return -EINVAL;
    }
    atomic_fetch_add_explicit(&rs->puts, 1, memory_order_relaxed);
    int rc = rs->be->put_file(rs, key, path);
    count_result(rs, rc);
    return rc;
}

int rs_get(remote_storage *rs, const char *key, uint64_t offset, uint64_t len,
           uint8_t **data, size_t *n)
{
    if (!key_valid(key)) {
        return -EINVAL;
    }
    atomic_fetch_add_explicit(&rs->gets, 1, memory_order_relaxed);
    int rc = rs->be->get(rs, key, offset, len, data, n);
    if (rc == 0 && rs->be == &local_backend) {
        atomic_fetch_add_explicit(&rs->down, *n, memory_order_relaxed);
    }
    count_result(rs, rc);
    return rc;
}

int rs_get_file(remote_storage *rs, const char *key, const char *path)
{
    uint8_t *data = NULL;
    size_t n = 0;
    int rc = rs_get(rs, key, 0, 0, &data, &n);
    if (rc == 0) {
        rc = fs_write_atomic(path, data, n);
    }
    az_free(data);
    return rc;
}

int rs_delete(remote_storage *rs, const char *key)
{
    if (!key_valid(key)) {
        return -EINVAL;
    }
    atomic_fetch_add_explicit(&rs->dels, 1, memory_order_relaxed);
    int rc = rs->be->del(rs, key);
    count_result(rs, rc);
    return rc;
}

int rs_delete_many(remote_storage *rs, const char *const *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!key_valid(keys[i])) {
            return -EINVAL;
        }
    }
    if (n == 0) {
        return 0;
    }
    atomic_fetch_add_explicit(&rs->dels, n, memory_order_relaxed);
    int rc = rs->be->del_many(rs, keys, n);
    count_result(rs, rc);
    return rc;
}

int rs_list(remote_storage *rs, const char *prefix, rs_listing *out)
{
    memset(out, 0, sizeof(*out));
    atomic_fetch_add_explicit(&rs->lists, 1, memory_order_relaxed);
    int rc = rs->be->list(rs, prefix ? prefix : "", out);
    if (rc != 0) {
        rs_list_free(out);
    }
    count_result(rs, rc);
    return rc;
}

void rs_list_free(rs_listing *l)
{
    for (size_t i = 0; i < l->n; i++) {
        az_free(l->objects[i].key);
    }
    az_free(l->objects);
    l->objects = NULL;
    l->n = 0;
}

void rs_get_stats(const remote_storage *rs, rs_stats *out)
{
    remote_storage *m = (remote_storage *)rs;
    out->requests = atomic_load_explicit(&m->requests, memory_order_relaxed);
    out->errors = atomic_load_explicit(&m->errors, memory_order_relaxed);
    out->retries = atomic_load_explicit(&m->retries, memory_order_relaxed);
    out->bytes_uploaded = atomic_load_explicit(&m->up, memory_order_relaxed);
    out->bytes_downloaded = atomic_load_explicit(&m->down, memory_order_relaxed);
    out->puts = atomic_load_explicit(&m->puts, memory_order_relaxed);
    out->gets = atomic_load_explicit(&m->gets, memory_order_relaxed);
    out->deletes = atomic_load_explicit(&m->dels, memory_order_relaxed);
    out->lists = atomic_load_explicit(&m->lists, memory_order_relaxed);
}
