/*
 * clock — monotonic time and condition-variable deadlines (prefix clock_).
 *
 * One copy of the timespec arithmetic every daemon used to carry its own
 * of. Thread-safe; none fails (clock_gettime on these clocks cannot).
 */
#ifndef ARBOR_CLOCK_H
#define ARBOR_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in milliseconds, microseconds and seconds: for intervals
 * and deadlines, never for wall time. */
int64_t clock_mono_ms(void);
int64_t clock_mono_us(void);
double clock_mono_s(void);

/* Now on clk plus ms (may be negative), normalized (0 <= tv_nsec < 1e9):
 * the absolute deadline of pthread_cond_timedwait. clk must be the clock
 * the condition variable waits on: CLOCK_REALTIME for a default one,
 * CLOCK_MONOTONIC for one made with pthread_condattr_setclock. */
struct timespec clock_after_ms(clockid_t clk, int64_t ms);

/* pthread_cond_init of a condition variable that waits on CLOCK_MONOTONIC
 * (deadlines from clock_after_ms(CLOCK_MONOTONIC, ...)). */
void clock_cond_init_mono(pthread_cond_t *cv);

#endif
