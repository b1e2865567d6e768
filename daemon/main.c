/*
 * main.c - the pgfan command line. Parses the command, loads the
 * configuration and hands over; the only place that exits.
 *
 * Exit codes: 0 clean stop, 1 runtime failure, 2 bad usage or bad config.
 */
#include "../common/log.h"
#include "../config/config.h"
#include "run.h"
#include "status_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2

static const char usage_text[] =
    "pgfan " PGFAN_VERSION " - change data capture from a PostgreSQL replication slot\n"
    "\n"
    "Usage:\n"
    "  pgfan run -c FILE                    stream changes to the configured sinks (foreground)\n"
    "  pgfan check-config -c FILE           validate FILE, print the effective configuration\n"
    "                                       (secrets redacted); exit 0 when valid, 2 otherwise\n"
    "  pgfan status [-s SOCKET] [--json]    show replication and sink state of a running pgfan\n"
    "  pgfan status [-s SOCKET] --check [--max-lag-seconds N] [--max-lag-bytes B]\n"
    "                                       health check for probes and monitoring: exit 0\n"
    "                                       healthy, 1 unhealthy (reason on one line), 2 no answer\n"
    "  pgfan --version | --help\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE    configuration file (INI); every key can be overridden by the\n"
    "                       environment variable PGFAN_<SECTION>_<KEY>\n"
    "  -s, --socket PATH    status socket (default: [status] socket of -c FILE, else\n"
    "                       /run/pgfan/status.sock)\n"
    "  --json               print the status document as JSON\n"
    "  --check              healthy = streaming, no failed sink, lag within the limits,\n"
    "                       replication slot neither unreserved nor lost\n"
    "\n"
    "Exit codes: 0 clean stop, 1 runtime failure, 2 bad usage or bad configuration.\n";

/* what: the problem, detail: the offending word (may be NULL). */
static int usage_error(const char *what, const char *detail)
{
    if (detail)
        fprintf(stderr, "pgfan: %s \"%s\"\nTry 'pgfan --help'.\n", what, detail);
    else
        fprintf(stderr, "pgfan: %s\nTry 'pgfan --help'.\n", what);
    return EXIT_USAGE;
}

static bool is_opt(const char *arg, const char *short_name, const char *long_name)
{
    return (short_name && strcmp(arg, short_name) == 0) || strcmp(arg, long_name) == 0;
}

static int load_config(const char *path, Config **cfg)
{
    PfError err;

    if (!config_load(path, cfg, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        if (err.hint[0])
            fprintf(stderr, "HINT: %s\n", err.hint);
        return err_exit_code(&err);
    }
    return 0;
}

static int cmd_run_or_check(int argc, char **argv, bool run)
{
    const char *path = NULL;
    Config *cfg = NULL;
    int rc;

    for (int i = 2; i < argc; i++) {
        if (is_opt(argv[i], "-c", "--config") && i + 1 < argc)
            path = argv[++i];
        else
            return usage_error("unexpected argument", argv[i]);
    }
    if (!path)
        return usage_error(run ? "run needs -c FILE" : "check-config needs -c FILE", NULL);
    rc = load_config(path, &cfg);
    if (rc != 0)
        return rc;
    if (run) {
        rc = daemon_run(cfg);
    } else {
        config_print(cfg, stdout);
        rc = 0;
    }
    config_free(cfg);
    return rc;
}

/* Parses a non-negative number for --max-lag-*; false when it is not one. */
static bool parse_limit(const char *text, double *out)
{
    char *end;
    double v = strtod(text, &end);

    if (end == text || *end != '\0' || v < 0)
        return false;
    *out = v;
    return true;
}

static int cmd_status(int argc, char **argv)
{
    const char *socket_path = NULL;
    const char *config_path = NULL;
    bool json = false;
    bool check = false;
    StatusCheck limits = {-1, -1};
    Config *cfg = NULL;
    int rc;

    for (int i = 2; i < argc; i++) {
        if (is_opt(argv[i], "-s", "--socket") && i + 1 < argc)
            socket_path = argv[++i];
        else if (is_opt(argv[i], "-c", "--config") && i + 1 < argc)
            config_path = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--check") == 0)
            check = true;
        else if (strcmp(argv[i], "--max-lag-seconds") == 0 && i + 1 < argc) {
            if (!parse_limit(argv[++i], &limits.max_lag_seconds))
                return usage_error("--max-lag-seconds needs a number of seconds >= 0, not",
                                   argv[i]);
        } else if (strcmp(argv[i], "--max-lag-bytes") == 0 && i + 1 < argc) {
            if (!parse_limit(argv[++i], &limits.max_lag_bytes))
                return usage_error("--max-lag-bytes needs a number of bytes >= 0, not", argv[i]);
        } else
            return usage_error("unexpected argument", argv[i]);
    }
    if (!check && (limits.max_lag_seconds >= 0 || limits.max_lag_bytes >= 0))
        return usage_error("--max-lag-seconds and --max-lag-bytes go with --check", NULL);
    if (!socket_path && config_path) {
        rc = load_config(config_path, &cfg);
        if (rc != 0)
            return rc;
        socket_path = cfg->status.socket;
    }
    if (!socket_path)
        socket_path = "/run/pgfan/status.sock";
    rc = status_client_run(socket_path, json, check ? &limits : NULL, stdout, stderr);
    config_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL;

    if (!cmd)
        return usage_error("missing command", NULL);
    if (is_opt(cmd, "-h", "--help") || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (is_opt(cmd, "-V", "--version") || strcmp(cmd, "version") == 0) {
        printf("pgfan %s\n", PGFAN_VERSION);
        return 0;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run_or_check(argc, argv, true);
    if (strcmp(cmd, "check-config") == 0)
        return cmd_run_or_check(argc, argv, false);
    if (strcmp(cmd, "status") == 0)
        return cmd_status(argc, argv);
    return usage_error("unknown command", cmd);
}
