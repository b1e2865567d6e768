/*
 * clock.h - the one way pgfan reads time.
 *
 * Times are int64_t microseconds (TimeUs). Monotonic time is for deadlines
 * and intervals; wall time (microseconds since the Unix epoch) is for logs,
 * event timestamps and lag. Tests replace both sources with clock_set_fake().
 */
#ifndef PGFAN_CLOCK_H
#define PGFAN_CLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef int64_t TimeUs;

#define USECS_PER_MSEC INT64_C(1000)
#define USECS_PER_SEC INT64_C(1000000)

/* "No deadline": larger than any real monotonic time. */
#define TIME_NEVER INT64_MAX

/* Monotonic microseconds (CLOCK_MONOTONIC), for deadlines. */
TimeUs clock_mono_us(void);

/* Wall-clock microseconds since 1970-01-01 UTC (CLOCK_REALTIME). */
TimeUs clock_wall_us(void);

/*
 * Replaces both clocks with fixed values (tests). mono < 0 restores the
 * real clocks. clock_advance_fake() moves both fake clocks forward.
 */
void clock_set_fake(TimeUs mono, TimeUs wall);
void clock_advance_fake(TimeUs delta);

/*
 * PostgreSQL's protocol times count microseconds since 2000-01-01 UTC.
 * These convert between that and Unix-epoch microseconds.
 */
int64_t clock_unix_to_pg(TimeUs unix_us);
TimeUs clock_pg_to_unix(int64_t pg_us);

/*
 * Formats a Unix-epoch time as ISO-8601 UTC with milliseconds,
 * "2026-11-24T01:02:03.456Z", into buf (CLOCK_ISO_SIZE bytes). Returns buf.
 */
#define CLOCK_ISO_SIZE 80
const char *clock_format_iso(TimeUs unix_us, char buf[CLOCK_ISO_SIZE]);

#endif
