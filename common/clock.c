/* clock.c - monotonic and wall clocks, replaceable by tests. */
#include "clock.h"

#include <stdio.h>
#include <time.h>

/* Seconds from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch). */
#define PG_EPOCH_OFFSET_SECS INT64_C(946684800)

static bool fake_active;
static TimeUs fake_mono;
static TimeUs fake_wall;

static TimeUs read_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (TimeUs)ts.tv_sec * USECS_PER_SEC + ts.tv_nsec / 1000;
}

TimeUs clock_mono_us(void)
{
    return fake_active ? fake_mono : read_clock(CLOCK_MONOTONIC);
}

TimeUs clock_wall_us(void)
{
    return fake_active ? fake_wall : read_clock(CLOCK_REALTIME);
}

void clock_set_fake(TimeUs mono, TimeUs wall)
{
    fake_active = mono >= 0;
    fake_mono = mono;
    fake_wall = wall;
}

void clock_advance_fake(TimeUs delta)
{
    fake_mono += delta;
    fake_wall += delta;
}

int64_t clock_unix_to_pg(TimeUs unix_us)
{
    return unix_us - PG_EPOCH_OFFSET_SECS * USECS_PER_SEC;
}

TimeUs clock_pg_to_unix(int64_t pg_us)
{
    return pg_us + PG_EPOCH_OFFSET_SECS * USECS_PER_SEC;
}

const char *clock_format_iso(TimeUs unix_us, char buf[CLOCK_ISO_SIZE])
{
    time_t secs = (time_t)(unix_us / USECS_PER_SEC);
    int millis = (int)((unix_us % USECS_PER_SEC) / USECS_PER_MSEC);
    struct tm tm;

    if (millis < 0) {
        secs -= 1;
        millis += 1000;
    }
    gmtime_r(&secs, &tm);
    snprintf(buf, CLOCK_ISO_SIZE, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
    return buf;
}
