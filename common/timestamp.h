/*
 * timestamp — wall-clock points in time as people write them (prefix ts_).
 *
 * The one parser of the timestamps every interface takes for a point in a
 * branch's history (`arbor ... --at`, the API's `at` / `to` fields and
 * `from` / `to` query parameters): RFC 3339 with a zone, or a Unix time.
 */
#ifndef ARBOR_TIMESTAMP_H
#define ARBOR_TIMESTAMP_H

#include <stdint.h>

/* s as microseconds since the Unix epoch: 0, or -EINVAL (*us untouched).
 * Accepted:
 *   RFC 3339 with a zone: 2026-11-21T10:15:02Z, 2026-11-21T10:15:02.250Z,
 *     2026-11-21T11:15:02+01:00 (T, t or a space between date and time;
 *     1-9 fraction digits, past the 6th dropped; second 60 read as 59);
 *   a Unix time in seconds after '@': @1763720102, @1763720102.5;
 *   with TS_BARE_UNIX also without '@': 1763720102.5 (a query parameter).
 * Refused: no zone, impossible dates (2026-02-30), anything before 1970. */
#define TS_BARE_UNIX 1
int ts_parse(const char *s, unsigned flags, int64_t *us);

/* How far ahead of this machine's clock a point in history may lie (the
 * caller's clock may run ahead of it). A later time is refused where a
 * point is made (branch create, restore, an endpoint or export at a time),
 * not taken as the head: 2027 typed for 2026 must not silently mean now. */
#define TS_FUTURE_SKEW_US (60 * 1000000LL)

#endif
