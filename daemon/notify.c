/* notify.c - sd_notify through libsystemd when pgfan is built with it. */
#include "notify.h"

#include <stdio.h>
#include <string.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

static char last_status[512];

bool notify_available(void)
{
#ifdef HAVE_LIBSYSTEMD
    return true;
#else
    return false;
#endif
}

#ifdef HAVE_LIBSYSTEMD
static void send_state(const char *state)
{
    /* Failures are not actionable: systemd is gone or the socket is not ours. */
    (void)sd_notify(0, state);
}
#else
static void send_state(const char *state)
{
    (void)state;
}
#endif

void notify_ready(void)
{
    send_state("READY=1");
}

void notify_stopping(void)
{
    send_state("STOPPING=1");
}

void notify_status(const char *text)
{
    char msg[sizeof last_status + 8];

    if (strcmp(text, last_status) == 0)
        return;
    snprintf(last_status, sizeof last_status, "%s", text);
    snprintf(msg, sizeof msg, "STATUS=%s", last_status);
    send_state(msg);
}

TimeUs notify_watchdog_interval(void)
{
#ifdef HAVE_LIBSYSTEMD
    uint64_t usec = 0;

    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
        return (TimeUs)(usec / 2);
#endif
    return 0;
}

void notify_watchdog(void)
{
    send_state("WATCHDOG=1");
}
