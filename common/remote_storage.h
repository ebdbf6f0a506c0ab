/*
 * remote_storage — an object store behind one interface (prefix rs_): a
 * local directory (the embedded default) or an S3-compatible bucket over
 * libcurl. Used by the pageserver (layers + index objects) and the
 * safekeepers (WAL backup, under safekeeper/).
 *
 * Keys are '/'-separated relative paths ("tenants/<t>/timelines/<id>/..."):
 * no leading '/', no empty, "." or ".." component, at most RS_KEY_MAX bytes.
 * The backend prepends its prefix. Data objects are immutable in practice
 * (callers never rewrite them with different bytes; the safekeepers' lease
 * objects are the exception). A PUT replaces the whole object atomically,
 * and of PUTs racing on one key (from any threads or processes) the last
 * wins whole (local: a temporary file per writer + fsync + rename + fsync
 * dir; S3: single PUT or multipart, both atomic on the server).
 *
 * URLs accepted by rs_open:
 *   /abs/dir, rel/dir, file:///abs/dir     local directory backend
 *   s3://BUCKET[/PREFIX][?endpoint=URL&region=R]
 *       endpoint default $AWS_ENDPOINT_URL, else https://s3.R.amazonaws.com
 *       region default $AWS_REGION, else us-east-1; path-style addressing
 *       credentials: opts, else $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY
 *
 * S3 requests are signed with AWS SigV4 by libcurl (CURLOPT_AWS_SIGV4);
 * this module adds x-amz-content-sha256 (SHA-256 of the payload) itself and
 * gives query parameters already in canonical (sorted) order, since curl
 * signs them in the order given. Transient failures (connection errors,
 * timeouts, HTTP 5xx, 429, SlowDown) are retried opts.max_retries times
 * with exponential backoff (100 ms doubling up to 5 s, with jitter); 404 is
 * -ENOENT at once, other 4xx -EIO at once (logged with the server's body).
 *
 * Errors: 0, -ENOENT (no such object), -EINVAL (bad key/URL), -ETIMEDOUT,
 * -EIO (server said no / transport), other -errno from the local disk.
 *
 * Threads: every function may be called from any number of threads on one
 * handle concurrently (each call uses its own curl easy handle). Results are
 * az_malloc'ed and owned by the caller as stated per function.
 */
#ifndef ARBOR_REMOTE_STORAGE_H
#define ARBOR_REMOTE_STORAGE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RS_KEY_MAX 1024

typedef struct remote_storage remote_storage;

typedef struct rs_options {
    const char *access_key;        /* NULL: $AWS_ACCESS_KEY_ID */
    const char *secret_key;        /* NULL: $AWS_SECRET_ACCESS_KEY */
    uint32_t connect_timeout_ms;   /* 0: 5000 */
    uint32_t request_timeout_ms;   /* 0: 60000 (whole request) */
    uint32_t max_retries;          /* retries after the first try; 0: 5 */
    uint64_t multipart_threshold;  /* files larger than this go multipart;
                                      0: 16 MiB */
    uint64_t part_bytes;           /* multipart part size (S3: >= 5 MiB
                                      except the last); 0: 8 MiB */
} rs_options;

/* Counters since open; read with rs_get_stats (relaxed loads). */
typedef struct rs_stats {
    uint64_t requests;        /* HTTP requests sent (S3 backend) */
    uint64_t errors;          /* operations that failed after retries */
    uint64_t retries;
    uint64_t bytes_uploaded;
    uint64_t bytes_downloaded;
    uint64_t puts, gets, deletes, lists;
} rs_stats;

typedef struct rs_object {
    char *key;                /* relative to the backend's prefix */
    uint64_t size_bytes;
} rs_object;

typedef struct rs_listing {
    rs_object *objects;       /* sorted by key */
    size_t n;
} rs_listing;

/* Opens a backend for url (see above). opts may be NULL. The local backend
 * creates its directory. -EINVAL for a URL it cannot parse. */
int rs_open(const char *url, const rs_options *opts, remote_storage **out);
void rs_close(remote_storage *rs);
/* "local" or "s3". */
const char *rs_kind(const remote_storage *rs);
/* The URL it was opened with, for logs. */
const char *rs_url(const remote_storage *rs);

int rs_put(remote_storage *rs, const char *key, const void *data, size_t len);
/* Uploads a local file (multipart above the threshold). */
int rs_put_file(remote_storage *rs, const char *key, const char *path);
/* Bytes [offset, offset+len) (len 0: to the end) into an az_malloc'ed
 * buffer *data (az_free), *n bytes. A range past the end is cut short. */
int rs_get(remote_storage *rs, const char *key, uint64_t offset, uint64_t len,
           uint8_t **data, size_t *n);
/* Downloads a whole object into path durably (path.tmp, fsync, rename,
 * fsync dir). */
int rs_get_file(remote_storage *rs, const char *key, const char *path);
/* Deleting a missing key is not an error (S3 semantics). */
int rs_delete(remote_storage *rs, const char *key);
int rs_delete_many(remote_storage *rs, const char *const *keys, size_t n);
/* Every object whose key starts with prefix ("" = all). Free with
 * rs_list_free. */
int rs_list(remote_storage *rs, const char *prefix, rs_listing *out);
void rs_list_free(rs_listing *l);

void rs_get_stats(const remote_storage *rs, rs_stats *out);

/* Test seam: the backoff sleep (default nanosleep) and the base delay. */
void rs_set_backoff_base_ms(remote_storage *rs, uint32_t base_ms);

#endif
