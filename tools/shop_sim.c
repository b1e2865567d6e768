/*
 * shop_sim.c - the pgfan-shop-sim command line: parses the subcommand and
 * its options and hands over to sim_history_run / sim_live_run; the only
 * place that exits.
 *
 * Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
#include "sim.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_USAGE 2
#define US_PER_SEC INT64_C(1000000)

static const char usage_text[] =
    "pgfan-shop-sim " PGFAN_VERSION " - an online shop for pgfan's demo, tests and benchmarks\n"
    "\n"
    "Usage:\n"
    "  pgfan-shop-sim history --dsn DSN [--months N] [--stores N] [--customers N]\n"
    "                         [--orders N] [--seed S] [--end TIME]\n"
    "      Fills an empty shop (deploy/shop/schema.sql loaded, no rows) with N months of\n"
    "      history ending at --end: 20 countries, stores of very different sizes (a few big\n"
    "      ones, a long tail), customers, products, orders with 1-5 items, discounts, and\n"
    "      statuses pending -> paid -> shipped -> delivered with cancellations and refunds.\n"
    "      One transaction, loaded with COPY; prints rows/s. The same options give the same\n"
    "      rows.\n"
    "  pgfan-shop-sim live --dsn DSN --rate N [--seconds T] [--seed S]\n"
    "      The shop's API: creates orders with their items (one transaction each), pays,\n"
    "      ships, delivers, cancels and refunds them, signs customers up, at about N row\n"
    "      changes per second; prints what it did every second. Runs T seconds, or until\n"
    "      SIGINT/SIGTERM (a clean stop, exit 0) without --seconds.\n"
    "  pgfan-shop-sim --help | --version\n"
    "\n"
    "Options:\n"
    "  --dsn DSN        libpq conninfo or URI of the shop database\n"
    "  --months N       months of history (default 12, 1-120)\n"
    "  --stores N       stores (default 2000)\n"
    "  --customers N    customers (default 30000)\n"
    "  --orders N       orders (default 300000)\n"
    "  --end TIME       end of the history, UTC: YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]' or now\n"
    "                   (default: now, rounded down to the hour)\n"
    "  --seed S         seed of the random numbers, an unsigned integer (default 42)\n"
    "  --rate N         row changes per second (1-1000000)\n"
    "  --seconds T      run live traffic for T seconds (default: until stopped)\n"
    "\n"
    "Exit codes: 0 ok, 1 runtime failure (database unreachable, schema missing, a statement\n"
    "failed), 2 bad usage.\n";

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "pgfan-shop-sim: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'pgfan-shop-sim --help'.\n");
    return EXIT_USAGE;
}

/* A whole decimal number in [min, max]. */
static bool parse_long(const char *text, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_seed(const char *text, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    if (text[0] == '-')
        return false;
    v = strtoull(text, &end, 10);
    if (errno || end == text || *end)
        return false;
    *out = v;
    return true;
}

/* "now", "YYYY-MM-DD", "YYYY-MM-DD HH:MM[:SS]" (also with 'T'), UTC. */
static bool parse_end(const char *text, int64_t *out)
{
    static const char *const formats[] = {"%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
                                          "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d"};
    struct tm tm;

    if (strcmp(text, "now") == 0) {
        *out = (int64_t)time(NULL) * US_PER_SEC;
        return true;
    }
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        const char *end;

        memset(&tm, 0, sizeof tm);
        end = strptime(text, formats[i], &tm);
        if (end && (*end == '\0' || strcmp(end, "Z") == 0)) {
            *out = (int64_t)timegm(&tm) * US_PER_SEC;
            return true;
        }
    }
    return false;
}

typedef struct Args {
    const char *dsn;
    long months, stores, customers, orders, rate, seconds;
    uint64_t seed;
    int64_t end_us;
    bool rate_set;
} Args;

/* Parses the options after the subcommand; returns 0 or an exit code. */
static int parse_options(int argc, char **argv, bool live, Args *a)
{
    for (int i = 2; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;

        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            fputs(usage_text, stdout);
            return -1;
        }
        if (strncmp(opt, "--", 2) != 0)
            return usage_error("unexpected argument \"%s\"", opt);
        if (!val)
            return usage_error("option %s needs a value", opt);
        i++;
        if (strcmp(opt, "--dsn") == 0)
            a->dsn = val;
        else if (strcmp(opt, "--seed") == 0)
            ok = parse_seed(val, &a->seed);
        else if (!live && strcmp(opt, "--months") == 0)
            ok = parse_long(val, 1, 120, &a->months);
        else if (!live && strcmp(opt, "--stores") == 0)
            ok = parse_long(val, 1, 10000000, &a->stores);
        else if (!live && strcmp(opt, "--customers") == 0)
            ok = parse_long(val, 1, 100000000, &a->customers);
        else if (!live && strcmp(opt, "--orders") == 0)
            ok = parse_long(val, 0, 1000000000, &a->orders);
        else if (!live && strcmp(opt, "--end") == 0)
            ok = parse_end(val, &a->end_us);
        else if (live && strcmp(opt, "--rate") == 0)
            ok = a->rate_set = parse_long(val, 1, 1000000, &a->rate);
        else if (live && strcmp(opt, "--seconds") == 0)
            ok = parse_long(val, 1, 100000000, &a->seconds);
        else
            return usage_error(live ? "unknown option for live: \"%s\""
                                    : "unknown option for history: \"%s\"",
                               opt);
        if (!ok)
            return usage_error("invalid value for %s: \"%s\" (see the ranges in --help)", opt,
                               val);
    }
    if (!a->dsn)
        return usage_error("%s needs --dsn DSN", live ? "live" : "history");
    if (live && !a->rate_set)
        return usage_error("%s needs --rate N (row changes per second)", "live");
    return 0;
}

static int report_error(const PfError *err)
{
    fprintf(stderr, "pgfan-shop-sim: %s\n", err->msg);
    if (err->hint[0])
        fprintf(stderr, "HINT: %s\n", err->hint);
    return err->kind == ERR_CONFIG ? EXIT_USAGE : EXIT_FAILURE;
}

static int run_history(const Args *a)
{
    HistoryOptions opt = {a->dsn, (int)a->months, a->stores, a->customers, a->orders, a->seed,
                          a->end_us};
    PfError err;

    err_clear(&err);
    return sim_history_run(&opt, &err) ? EXIT_SUCCESS : report_error(&err);
}

static int run_live(const Args *a)
{
    LiveOptions opt = {a->dsn, a->rate, a->seconds, a->seed};
    struct sigaction sa;
    PfError err;

    /* no SA_RESTART: the pacing sleep returns at once */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    err_clear(&err);
    return sim_live_run(&opt, &stop_requested, &err) ? EXIT_SUCCESS : report_error(&err);
}

int main(int argc, char **argv)
{
    Args a = {.months = 12, .stores = 2000, .customers = 30000, .orders = 300000, .seed = 42};
    bool live;
    int rc;

    if (argc < 2)
        return usage_error("%s", "missing command: history or live");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, stdout);
        return EXIT_SUCCESS;
    }
    if (strcmp(argv[1], "--version") == 0) {
        puts("pgfan-shop-sim " PGFAN_VERSION);
        return EXIT_SUCCESS;
    }
    if (strcmp(argv[1], "history") != 0 && strcmp(argv[1], "live") != 0)
        return usage_error("unknown command \"%s\" (history or live)", argv[1]);
    live = strcmp(argv[1], "live") == 0;
    /* default end: now, rounded down to the hour (the same rows all hour) */
    a.end_us = (int64_t)(time(NULL) / 3600 * 3600) * US_PER_SEC;
    rc = parse_options(argc, argv, live, &a);
    if (rc)
        return rc < 0 ? EXIT_SUCCESS : rc;
    return live ? run_live(&a) : run_history(&a);
}
