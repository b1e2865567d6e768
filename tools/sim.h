/*
 * sim.h - the two jobs of pgfan-shop-sim: load a shop's history, and play
 * live traffic against it. shop_sim.c parses the command line into these
 * options; each job returns false with err set when it fails (ERR_CONFIG:
 * bad usage, exit 2; otherwise exit 1).
 */
#ifndef PGFAN_SIM_H
#define PGFAN_SIM_H

#include "../common/error.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct HistoryOptions {
    const char *dsn;
    int months;      /* history length, ending at end_us */
    long stores;
    long customers;
    long orders;
    uint64_t seed;
    int64_t end_us;  /* Unix microseconds (UTC) */
} HistoryOptions;

/*
 * Fills an empty shop (schema.sql loaded, no rows) with months of history in
 * one transaction, loaded with COPY; prints what it loaded and the rows/s.
 * The same options give the same rows.
 */
bool sim_history_run(const HistoryOptions *opt, PfError *err);

typedef struct LiveOptions {
    const char *dsn;
    long rate;     /* row changes per second */
    long seconds;  /* 0: until SIGINT/SIGTERM */
    uint64_t seed;
} LiveOptions;

/*
 * Creates, pays, ships, delivers, cancels and refunds orders and signs up
 * customers at about opt->rate row changes per second, printing a line per
 * second, until opt->seconds have passed or *stop becomes non-zero (set by
 * a signal handler). Ends with a summary line:
 *   live: stopped after S s: N row changes (R/s, target T/s) in X transactions
 */
bool sim_live_run(const LiveOptions *opt, const volatile sig_atomic_t *stop, PfError *err);

#endif
