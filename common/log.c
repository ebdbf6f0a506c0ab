/*
 * log — see log.h.
 *
 * Each line is formatted into one buffer and handed to the kernel with a
 * single write(2) on an O_APPEND descriptor (or stderr), which is what keeps
 * lines from different threads (and processes sharing a log file) whole.
 */
#define _GNU_SOURCE
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Longest line we format on the stack; longer lines go through the heap. */
#define LOG_STACK_LINE_BYTES 1024
/* Hard cap on one line, so a runaway message cannot take the process down. */
#define LOG_MAX_LINE_BYTES (64 * 1024)

/*
 * The module's one piece of process-wide state: where lines go and which
 * levels pass. Level and fd are atomics so that a late log_open/log_init
 * (tests do it) is not a data race with logging threads.
 */
static struct {
    _Atomic int level;
    _Atomic int fd;            /* STDERR_FILENO or a descriptor we own */
    char component[32];
} log_state = { .level = LOG_INFO, .fd = STDERR_FILENO, .component = "arbor" };

static const char *const level_names[] = {
    [LOG_DEBUG] = "DEBUG", [LOG_INFO] = "INFO ", [LOG_WARN] = "WARN ",
    [LOG_ERROR] = "ERROR",
};

void log_init(const char *component, log_level level)
{
    if (component) {
        snprintf(log_state.component, sizeof(log_state.component), "%s", component);
    }
    atomic_store(&log_state.level, (int)level);
}

int log_open(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    int old = atomic_exchange(&log_state.fd, fd);
    if (old != STDERR_FILENO) {
        close(old);
    }
    return 0;
}

void log_close(void)
{
    int old = atomic_exchange(&log_state.fd, STDERR_FILENO);
    if (old != STDERR_FILENO) {
        close(old);
    }
}

int log_level_parse(const char *s, log_level *out)
{
    static const struct { const char *name; log_level level; } names[] = {
        { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "warn", LOG_WARN },
        { "warning", LOG_WARN }, { "error", LOG_ERROR }, { "off", LOG_OFF },
    };
    if (!s) {
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -EINVAL;
}

const char *log_level_name(log_level level)
{
    static const char *const names[] = { "debug", "info", "warn", "error", "off" };
    return (unsigned)level <= LOG_OFF ? names[level] : "?";
}

log_level log_get_level(void)
{
    return (log_level)atomic_load_explicit(&log_state.level, memory_order_relaxed);
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return; /* nowhere left to report a failing log */
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* "2026-11-21T10:15:02.123456Z INFO  component: " into buf; returns length. */
static int format_prefix(char *buf, size_t size, log_level level)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    return snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ %s %s: ",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000, level_names[level],
                    log_state.component);
}

void log_write(log_level level, const char *fmt, ...)
{
    if ((unsigned)level >= LOG_OFF || level < log_get_level()) {
        return;
    }
    char stack[LOG_STACK_LINE_BYTES];
    char *line = stack;
    size_t cap = sizeof(stack);
    int prefix = format_prefix(stack, cap, level);
    va_list ap;
    va_start(ap, fmt);
    int body = vsnprintf(stack + prefix, cap - (size_t)prefix, fmt, ap);
    va_end(ap);
    if (body < 0) {
        return;
    }
    size_t need = (size_t)prefix + (size_t)body + 2; /* '\n' and NUL */
    if (need > cap) {
        cap = need < LOG_MAX_LINE_BYTES ? need : LOG_MAX_LINE_BYTES;
        /* Plain malloc: logging must work even while reporting an OOM. */
        char *heap = malloc(cap);
        if (heap) {
            memcpy(heap, stack, (size_t)prefix);
            va_start(ap, fmt);
            vsnprintf(heap + prefix, cap - (size_t)prefix, fmt, ap);
            va_end(ap);
            line = heap;
        } else {
            cap = sizeof(stack);
        }
    }
    size_t len = strlen(line);
    if (len > 0 && line[len - 1] == '\n') {
        len--; /* a message that ends in '\n' must not leave a blank line */
    }
    if (len + 1 >= cap) {
        len = cap - 2; /* truncated: keep room for the newline */
    }
    line[len++] = '\n';
    write_all(atomic_load(&log_state.fd), line, len);
    if (line != stack) {
        free(line);
    }
}
