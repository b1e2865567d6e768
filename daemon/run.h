/*
 * run.h - the daemon: wires config, sinks, pipeline, replication, status
 * socket and signals onto one loop and runs until stopped.
 *
 * Shutdown (SIGTERM/SIGINT): stop reading after the open transaction, flush
 * every sink, wait until everything received is durable (bounded by
 * [source] shutdown_timeout), send the final status update, end the COPY
 * and return 0. A second signal returns at once with 1, having confirmed
 * nothing that is not durable.
 *
 * SIGHUP reloads the configuration (daemon/reload.h): the reloadable
 * options are applied, the others reported as needing a restart. The slot
 * monitor (daemon/slot_monitor.h) runs beside replication; a lost slot
 * returns 1.
 */
#ifndef PGFAN_RUN_H
#define PGFAN_RUN_H

#include "../config/config.h"

/* Runs the daemon; returns the process exit code (0, 1 or 2). */
int daemon_run(const Config *cfg);

#endif
