/*
 * notify.h - the systemd service manager protocol (sd_notify).
 *
 * READY=1 once pgfan streams (or waits as a standby for its slot), STATUS=
 * lines for `systemctl status`, STOPPING=1 at shutdown, and WATCHDOG=1 from
 * the event loop while it keeps turning (WatchdogSec=). Every call does
 * nothing when NOTIFY_SOCKET is not set, or when pgfan was built without
 * libsystemd (meson option -Dsystemd=disabled).
 */
#ifndef PGFAN_NOTIFY_H
#define PGFAN_NOTIFY_H

#include "../common/clock.h"

#include <stdbool.h>

/* True when built with libsystemd. */
bool notify_available(void);

void notify_ready(void);
void notify_stopping(void);

/* STATUS=<text> (sent only when it changed). */
void notify_status(const char *text);

/*
 * Watchdog period asked for by systemd (WATCHDOG_USEC), halved as sd_watchdog
 * recommends; 0 when there is no watchdog.
 */
TimeUs notify_watchdog_interval(void);
void notify_watchdog(void);

#endif
