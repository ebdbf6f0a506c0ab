/*
 * log — leveled logging with timestamps (prefix log_).
 *
 * Lines go to stderr (or the file given to log_open) as
 *   2026-11-21T10:15:02.123456Z INFO  safekeeper: message
 * One write(2) per line, so lines from threads never interleave. The level
 * and destination are process-wide, set once at start-up (log_init) before
 * threads start; logging itself is thread-safe.
 */
#ifndef ARBOR_LOG_H
#define ARBOR_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF } log_level;

/* component: short name printed on each line ("safekeeper"). */
void log_init(const char *component, log_level level);
/* Appends to path instead of stderr. 0 or -errno. */
int log_open(const char *path);
/* "debug", "info", "warn", "error", "off" -> 0 and *out, or -EINVAL. */
int log_level_parse(const char *s, log_level *out);
log_level log_get_level(void);
/* Lower-case name of a level ("info"); "?" for an invalid value. */
const char *log_level_name(log_level level);
/* Closes a file opened by log_open and goes back to stderr. */
void log_close(void);

void log_write(log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...) do { if (log_get_level() <= LOG_DEBUG) log_write(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
