/*
 * run.c - the daemon's lifetime: start-up in a fixed order, the loop, the
 * ordered shutdown, and the status document.
 */
#include "run.h"

#include "../common/buf.h"
#include "../common/log.h"
#include "../common/mem.h"
#include "../common/loop.h"
#include "metrics.h"
#include "notify.h"
#include "pipeline.h"
#include "reload.h"
#include "replication.h"
#include "slot_monitor.h"
#include "status.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define COMPONENT "pgfan"

typedef struct OpenSink {
    const SinkOps *ops;
    void *self;
} OpenSink;

typedef enum Phase {
    PHASE_RUNNING = 0,
    PHASE_DRAINING,  /* stop requested: finishing the open transaction, flushing sinks */
    PHASE_FINISHING, /* final status update sent, waiting for the COPY to end */
    PHASE_DONE,
} Phase;

typedef struct Daemon {
    const Config *cfg; /* as started: modules keep pointers into it, it never changes */
    Reloader reload;   /* SIGHUP: the reloaded configurations and their outcome */
    SlotMonitor *monitor;
    Loop *loop;
    SourceInfo source;
    Pipeline *pipeline;
    Replication *repl;
    StatusServer *status;
    MetricsServer *metrics; /* NULL: [status] metrics_listen not set */
    OpenSink *sinks;
    size_t n_sinks;

    int sigfd;
    int signals_seen;
    Phase phase;
    TimeUs drain_deadline;
    TimeUs started_mono;
    int exit_code;
    PfError fatal;
    bool has_fatal;

    bool ready_sent;         /* READY=1 went to systemd */
    TimeUs watchdog_every;   /* 0: no watchdog */
    TimeUs watchdog_next;
    TimeUs status_next;      /* next STATUS= line */
} Daemon;

static void stop_with(Daemon *d, const PfError *err)
{
    if (d->has_fatal)
        return;
    d->fatal = *err;
    d->has_fatal = true;
    log_error_value(COMPONENT, err);
    repl_fail(d->repl, err);
    d->exit_code = err_exit_code(err);
    d->phase = PHASE_DONE;
}

static void begin_shutdown(Daemon *d)
{
    if (d->phase != PHASE_RUNNING)
        return;
    log_info(COMPONENT, "stopping: finishing the open transaction, then draining the sinks");
    notify_stopping();
    notify_status("stopping: draining the sinks");
    d->phase = PHASE_DRAINING;
    d->drain_deadline = clock_mono_us() + d->cfg->source.shutdown_timeout;
    slot_monitor_stop(d->monitor);
    repl_stop_reading(d->repl);
}

/* The reloadable settings of cfg, handed to the modules that use them. */
static void apply_settings(void *arg, const Config *cfg)
{
    Daemon *d = arg;
    SlotMonitorSettings set;

    log_set_level(cfg->log.level);
    log_set_format(cfg->log.format);
    slot_monitor_settings_from(cfg, &set);
    slot_monitor_apply(d->monitor, &set);
    pipeline_reconfigure(d->pipeline, cfg);
}

static void on_signal(void *arg, int fd, unsigned events)
{
    Daemon *d = arg;
    struct signalfd_siginfo si;

    (void)events;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            if (d->phase == PHASE_RUNNING)
                reload_run(&d->reload, apply_settings, d);
            continue;
        }
        d->signals_seen++;
        if (d->signals_seen == 1) {
            log_info(COMPONENT, "received %s", strsignal((int)si.ssi_signo));
            begin_shutdown(d);
        } else {
            /* Second signal: leave now. Nothing more is confirmed: the last
             * status update only ever carried durable positions. */
            log_warning(COMPONENT, "received %s again: exiting at once",
                        strsignal((int)si.ssi_signo));
            d->exit_code = 1;
            d->phase = PHASE_DONE;
        }
    }
}

static bool setup_signals(Daemon *d, PfError *err)
{
    sigset_t mask;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        return err_set(err, ERR_FATAL, "could not block signals: %s", strerror(errno));
    d->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (d->sigfd < 0)
        return err_set(err, ERR_FATAL, "could not create signalfd: %s", strerror(errno));
    if (!loop_watch(d->loop, d->sigfd, LOOP_READ, on_signal, d))
        return err_set(err, ERR_FATAL, "could not watch signals: %s", strerror(errno));
    return true;
}

static void append_lsn_field(Buf *b, const char *name, Lsn lsn)
{
    char text[LSN_TEXT_SIZE];
    buf_printf(b, "\"%s\":\"%s\",", name, lsn_format(lsn, text));
}

/*
 * Lag in time: the age of the oldest transaction not yet durable everywhere,
 * or the heartbeat's round trip when larger (which also sees WAL pgfan has
 * not read yet).
 */
static TimeUs current_lag_us(const Daemon *d, TimeUs now_wall)
{
    TimeUs lag = pipeline_lag_us(d->pipeline, now_wall);
    TimeUs hb = slot_monitor_heartbeat_lag_us(d->monitor, now_wall);

    return hb > lag ? hb : lag;
}

/* The status document (see daemon/status_client.c for the reader). */
static void render_status(void *arg, Buf *out)
{
    Daemon *d = arg;
    TimeUs now_wall = clock_wall_us();
    Lsn confirmed = repl_sent_flush_lsn(d->repl);
    Lsn wal_end = repl_server_wal_end(d->repl);
    const PfError *err = d->has_fatal ? &d->fatal : repl_error(d->repl);
    const char *state = repl_state_name(repl_state(d->repl));

    if (d->phase == PHASE_DRAINING || d->phase == PHASE_FINISHING)
        state = "stopping";
    buf_append_str(out, "{\"version\":\"" PGFAN_VERSION "\",");
    buf_printf(out, "\"pid\":%ld,\"state\":", (long)getpid());
    buf_append_json_string(out, state, strlen(state));
    buf_append_str(out, ",\"slot\":");
    buf_append_json_string(out, d->source.slot, strlen(d->source.slot));
    buf_append_str(out, ",\"database\":");
    buf_append_json_string(out, d->source.dbname, strlen(d->source.dbname));
    buf_append_str(out, ",\"system_id\":");
    buf_append_json_string(out, d->source.system_id, strlen(d->source.system_id));
    buf_append_char(out, ',');
    append_lsn_field(out, "received_lsn", repl_received_lsn(d->repl));
    append_lsn_field(out, "confirmed_lsn", confirmed);
    append_lsn_field(out, "server_wal_end", wal_end);
    buf_printf(out, "\"lag_bytes\":%llu,\"lag_seconds\":%.3f,\"inflight_transactions\":%zu,",
               (unsigned long long)(wal_end > confirmed ? wal_end - confirmed : 0),
               (double)current_lag_us(d, now_wall) / USECS_PER_SEC,
               pipeline_inflight(d->pipeline));
    {
        const PipelineLatency *lat = pipeline_latency(d->pipeline);

        buf_printf(out,
                   "\"commit_to_durable\":{\"transactions\":%llu,\"p50_seconds\":%.4f,"
                   "\"p99_seconds\":%.4f,\"max_seconds\":%.4f},",
                   (unsigned long long)lat->count, pipeline_latency_quantile(lat, 0.5),
                   pipeline_latency_quantile(lat, 0.99), (double)lat->max_us / USECS_PER_SEC);
    }
    buf_printf(out, "\"uptime_seconds\":%.1f,\"last_error\":",
               (double)(clock_mono_us() - d->started_mono) / USECS_PER_SEC);
    buf_append_json_string(out, err ? err->msg : "", err ? strlen(err->msg) : 0);
    buf_printf(out, ",\"log_level\":\"%s\",\"log_format\":\"%s\",",
               log_level_name(log_get_level()), log_format_name(log_get_format()));
    slot_monitor_render_json(d->monitor, out, now_wall);
    buf_append_char(out, ',');
    reload_render_json(&d->reload, out);
    if (repl_snapshot(d->repl)) {
        buf_append_char(out, ',');
        snapshot_render_json(repl_snapshot(d->repl), out, clock_mono_us());
    }
    buf_append_str(out, ",\"sinks\":[");
    for (size_t i = 0; i < pipeline_sink_count(d->pipeline); i++) {
        SinkStatus st;
        const char *name = pipeline_sink_name(d->pipeline, i);

        pipeline_sink_status(d->pipeline, i, &st);
        buf_append_str(out, i ? ",{\"name\":" : "{\"name\":");
        buf_append_json_string(out, name, strlen(name));
        buf_append_str(out, ",\"state\":");
        buf_append_json_string(out, st.state ? st.state : "ok",
                               strlen(st.state ? st.state : "ok"));
        buf_append_char(out, ',');
        append_lsn_field(out, "durable_lsn", st.durable_lsn);
        buf_printf(out,
                   "\"queue_depth\":%llu,\"queued_bytes\":%llu,\"events\":%llu,\"bytes\":%llu,"
                   "\"retries\":%llu,\"errors\":%llu,\"dead_letters\":%llu,\"last_error\":",
                   (unsigned long long)st.queue_depth, (unsigned long long)st.queued_bytes,
                   (unsigned long long)st.events, (unsigned long long)st.bytes,
                   (unsigned long long)st.retries, (unsigned long long)st.errors,
                   (unsigned long long)st.dead_letters);
        buf_append_json_string(out, st.last_error, strlen(st.last_error));
        buf_append_char(out, '}');
    }
    buf_append_str(out, "]}");
}

/* ---- [status] metrics_listen: Prometheus text and probes (daemon/metrics.c) ---- */

static const char *current_state(const Daemon *d)
{
    if (d->phase == PHASE_DRAINING || d->phase == PHASE_FINISHING)
        return "stopping";
    return repl_state_name(repl_state(d->repl));
}

/* Every value current_state() can return, so each has a 0/1 series. */
static const char *const all_states[] = {"connecting", "snapshot", "streaming",
                                         "waiting_for_slot", "reconnecting", "stopping",
                                         "stopped", "failed"};

static void gauge(Buf *out, const char *name, const char *help, unsigned long long value)
{
    metrics_append_header(out, name, "gauge", help);
    buf_printf(out, "%s %llu\n", name, value);
}

/* Process metrics as the Prometheus client libraries name them, from /proc/self. */
static void render_process(Buf *out, double uptime_s)
{
    struct rusage ru;
    struct rlimit rl;
    unsigned long long size_pages = 0, resident_pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    DIR *dir;
    long open_fds = 0;

    if (f) {
        if (fscanf(f, "%llu %llu", &size_pages, &resident_pages) != 2)
            resident_pages = 0;
        fclose(f);
    }
    gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
          resident_pages * (unsigned long long)sysconf(_SC_PAGESIZE));
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        metrics_append_header(out, "process_cpu_seconds_total", "counter",
                              "Total user and system CPU time spent in seconds.");
        buf_printf(out, "process_cpu_seconds_total %.3f\n",
                   (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    }
    metrics_append_header(out, "process_start_time_seconds", "gauge",
                          "Start time of the process since unix epoch in seconds.");
    buf_printf(out, "process_start_time_seconds %.3f\n",
               (double)clock_wall_us() / USECS_PER_SEC - uptime_s);
    dir = opendir("/proc/self/fd");
    if (dir) {
        while (readdir(dir) != NULL)
            open_fds++;
        closedir(dir);
        open_fds -= 3; /* ".", ".." and the directory's own descriptor */
        gauge(out, "process_open_fds", "Number of open file descriptors.",
              (unsigned long long)(open_fds > 0 ? open_fds : 0));
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        gauge(out, "process_max_fds", "Maximum number of open file descriptors.",
              (unsigned long long)rl.rlim_cur);
}

/* One sample of a per-sink family: name{sink="..."} value. */
static void sink_sample(Buf *out, const char *name, const char *sink, unsigned long long value)
{
    buf_printf(out, "%s{sink=\"", name);
    metrics_append_label_value(out, sink);
    buf_printf(out, "\"} %llu\n", value);
}

/* GET /metrics. Per-table/op counters are not exported: the pipeline does not count them. */
static void render_metrics(void *arg, Buf *out)
{
    Daemon *d = arg;
    Lsn confirmed = repl_sent_flush_lsn(d->repl);
    Lsn wal_end = repl_server_wal_end(d->repl);
    const char *state = current_state(d);
    double uptime_s = (double)(clock_mono_us() - d->started_mono) / USECS_PER_SEC;
    size_t n = pipeline_sink_count(d->pipeline);
    SinkStatus *st = xcalloc(n ? n : 1, sizeof *st);

    for (size_t i = 0; i < n; i++)
        pipeline_sink_status(d->pipeline, i, &st[i]);

    gauge(out, "pgfan_up", "1 while pgfan runs.", 1);
    metrics_append_header(out, "pgfan_info", "gauge", "pgfan build information.");
    buf_append_str(out, "pgfan_info{version=\"");
    metrics_append_label_value(out, PGFAN_VERSION);
    buf_append_str(out, "\"} 1\n");
    gauge(out, "pgfan_replication_lag_bytes",
          "Bytes of WAL between the server's WAL end and the confirmed position.",
          wal_end > confirmed ? wal_end - confirmed : 0);
    metrics_append_header(out, "pgfan_replication_lag_seconds", "gauge",
                          "Age of the oldest transaction not yet durable in every sink, or the "
                          "heartbeat round trip when larger (0 when neither).");
    buf_printf(out, "pgfan_replication_lag_seconds %.3f\n",
               (double)current_lag_us(d, clock_wall_us()) / USECS_PER_SEC);
    if (pipeline_table_count(d->pipeline) > 0) {
        static const struct {
            ChangeKind kind;
            const char *op;
        } ops[] = {{CHANGE_INSERT, "insert"},
                   {CHANGE_UPDATE, "update"},
                   {CHANGE_DELETE, "delete"},
                   {CHANGE_TRUNCATE, "truncate"}};

        metrics_append_header(out, "pgfan_changes_total", "counter",
                              "Row changes (and truncates) received, by table and operation.");
        for (size_t i = 0; i < pipeline_table_count(d->pipeline); i++) {
            for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
                buf_append_str(out, "pgfan_changes_total{table=\"");
                metrics_append_label_value(out, pipeline_table_name(d->pipeline, i));
                buf_printf(out, "\",op=\"%s\"} %llu\n", ops[k].op,
                           (unsigned long long)pipeline_table_changes(d->pipeline, i,
                                                                      ops[k].kind));
            }
        }
    }
    {
        const PipelineLatency *lat = pipeline_latency(d->pipeline);

        metrics_append_histogram(out, "pgfan_commit_to_durable_seconds",
                                 "Time from a transaction's commit on the server until every sink "
                                 "held it durably (confirmed transactions).",
                                 lat->bounds, lat->counts, PIPELINE_LATENCY_BOUNDS, lat->sum_s);
    }
    gauge(out, "pgfan_received_lsn_bytes", "Highest WAL position received, as a byte position.",
          repl_received_lsn(d->repl));
    gauge(out, "pgfan_confirmed_lsn_bytes",
          "WAL position confirmed to PostgreSQL (durable in every sink), as a byte position.",
          confirmed);
    gauge(out, "pgfan_server_wal_end_lsn_bytes",
          "The server's WAL end from its last message, as a byte position.", wal_end);
    gauge(out, "pgfan_inflight_transactions",
          "Transactions received but not yet durable in every sink.",
          pipeline_inflight(d->pipeline));
    metrics_append_header(out, "pgfan_replication_state", "gauge",
                          "1 for the current replication state, 0 for the others.");
    for (size_t i = 0; i < sizeof all_states / sizeof all_states[0]; i++)
        buf_printf(out, "pgfan_replication_state{state=\"%s\"} %d\n", all_states[i],
                   strcmp(state, all_states[i]) == 0);
    metrics_append_header(out, "pgfan_uptime_seconds", "gauge", "Seconds since pgfan started.");
    buf_printf(out, "pgfan_uptime_seconds %.1f\n", uptime_s);

#define SINK_FAMILY(name, type, help, expr)                                                     \
    do {                                                                                        \
        metrics_append_header(out, name, type, help);                                          \
        for (size_t i = 0; i < n; i++)                                                          \
            sink_sample(out, name, pipeline_sink_name(d->pipeline, i), (unsigned long long)(expr)); \
    } while (0)
    SINK_FAMILY("pgfan_sink_up", "gauge", "0 when the sink has failed, else 1.",
                !(st[i].state && strcmp(st[i].state, "failed") == 0));
    SINK_FAMILY("pgfan_sink_durable_lsn_bytes", "gauge",
                "Highest WAL position durable in the sink, as a byte position.", st[i].durable_lsn);
    SINK_FAMILY("pgfan_sink_queue_events", "gauge", "Events accepted but not yet durable.",
                st[i].queue_depth);
    SINK_FAMILY("pgfan_sink_queued_bytes", "gauge", "Bytes held in memory for the sink.",
                st[i].queued_bytes);
    SINK_FAMILY("pgfan_sink_events_total", "counter", "Row events accepted by the sink.",
                st[i].events);
    SINK_FAMILY("pgfan_sink_bytes_total", "counter", "Bytes written or sent by the sink.",
                st[i].bytes);
    SINK_FAMILY("pgfan_sink_retries_total", "counter", "Retries of the sink.", st[i].retries);
    SINK_FAMILY("pgfan_sink_errors_total", "counter", "Errors of the sink.", st[i].errors);
    SINK_FAMILY("pgfan_sink_dead_letters_total", "counter",
                "Events or batches the sink moved to its dead letter file.", st[i].dead_letters);
#undef SINK_FAMILY
    free(st);
    slot_monitor_render_metrics(d->monitor, out, clock_wall_us());
    render_process(out, uptime_s);
}

/* GET /readyz: ready while streaming; the body is the state. */
static bool render_ready(void *arg, Buf *out)
{
    const char *state = current_state(arg);

    buf_append_str(out, state);
    return strcmp(state, "streaming") == 0;
}

/*
 * systemd: READY=1 once streaming (or standing by for the slot: a standby is
 * a healthy service), a STATUS= line at most once a second, and WATCHDOG=1
 * while this loop keeps turning. Returns the next deadline it needs.
 */
static TimeUs tell_systemd(Daemon *d, TimeUs now)
{
    ReplState st = repl_state(d->repl);
    TimeUs next = TIME_NEVER;

    /* A long initial snapshot is a healthy start, not a hung one. */
    if (!d->ready_sent &&
        (st == REPL_STREAMING || st == REPL_WAITING_FOR_SLOT || st == REPL_SNAPSHOT)) {
        notify_ready();
        d->ready_sent = true;
    }
    if (d->phase == PHASE_RUNNING && now >= d->status_next) {
        char text[256], lsn[LSN_TEXT_SIZE];

        snprintf(text, sizeof text, "%s: confirmed %s, lag %.1f s, %zu transactions in flight",
                 repl_state_name(st), lsn_format(repl_sent_flush_lsn(d->repl), lsn),
                 (double)current_lag_us(d, clock_wall_us()) / USECS_PER_SEC,
                 pipeline_inflight(d->pipeline));
        notify_status(text);
        d->status_next = now + USECS_PER_SEC;
    }
    if (d->phase == PHASE_RUNNING)
        next = d->status_next;
    if (d->watchdog_every > 0) {
        if (now >= d->watchdog_next) {
            notify_watchdog();
            d->watchdog_next = now + d->watchdog_every;
        }
        if (d->watchdog_next < next)
            next = d->watchdog_next;
    }
    return next;
}

/* Slot checks and heartbeats (daemon/slot_monitor.c); a lost slot stops the daemon. */
static TimeUs monitor_slot(Daemon *d, TimeUs now)
{
    const PfError *fatal;
    TimeUs next;

    slot_monitor_note_confirmed(d->monitor, repl_sent_flush_lsn(d->repl), clock_wall_us());
    next = slot_monitor_poll(d->monitor, now, repl_state(d->repl) == REPL_STREAMING);
    fatal = slot_monitor_fatal(d->monitor);
    if (fatal) {
        stop_with(d, fatal);
        return now;
    }
    return next;
}

/* Runs after every loop turn: drive sinks, advance, feedback, shutdown steps. */
static TimeUs daemon_hook(void *arg, TimeUs now)
{
    Daemon *d = arg;
    TimeUs next = TIME_NEVER;
    TimeUs repl_next;
    PfError err;

    if (d->phase == PHASE_DONE)
        return now;
    if (!pipeline_poll(d->pipeline, now, &next, &err)) {
        stop_with(d, &err);
        return now;
    }
    repl_next = repl_poll(d->repl, now);
    if (repl_next < next)
        next = repl_next;
    repl_next = tell_systemd(d, now);
    if (repl_next < next)
        next = repl_next;
    repl_next = monitor_slot(d, now);
    if (repl_next < next)
        next = repl_next;
    if (d->phase == PHASE_DONE)
        return now;

    if (repl_state(d->repl) == REPL_FAILED) {
        const PfError *re = repl_error(d->repl);
        if (re && !d->has_fatal) {
            stop_with(d, re);
        }
        d->phase = PHASE_DONE;
        return now;
    }

    if (d->phase == PHASE_DRAINING) {
        if (!repl_reading_stopped(d->repl)) {
            if (now >= d->drain_deadline) {
                log_warning(COMPONENT,
                            "the open transaction did not finish within shutdown_timeout; "
                            "stopping without it (it will be streamed again)");
                d->phase = PHASE_FINISHING;
                repl_finish(d->repl);
            }
            return next < d->drain_deadline ? next : d->drain_deadline;
        }
        pipeline_flush(d->pipeline);
        if (!pipeline_poll(d->pipeline, now, &next, &err)) {
            stop_with(d, &err);
            return now;
        }
        if (pipeline_drained(d->pipeline) || now >= d->drain_deadline) {
            if (!pipeline_drained(d->pipeline))
                log_warning(COMPONENT, "sinks did not drain within shutdown_timeout; "
                                       "confirming only what is durable");
            d->phase = PHASE_FINISHING;
            repl_finish(d->repl);
        } else {
            TimeUs soon = now + 10 * USECS_PER_MSEC;
            return soon < d->drain_deadline ? soon : d->drain_deadline;
        }
    }
    if (d->phase == PHASE_FINISHING) {
        ReplState st = repl_state(d->repl);
        if (st == REPL_STOPPED || st == REPL_FAILED) {
            d->phase = PHASE_DONE;
            return now;
        }
    }
    return next;
}

static bool open_sinks(Daemon *d, PfError *err)
{
    const char *const *names = sink_names();
    SinkContext ctx = {d->cfg, d->loop, &d->source};

    for (size_t i = 0; names[i]; i++) {
        const SinkOps *ops = sink_lookup(names[i]);
        void *self;

        if (!config_sink_enabled(d->cfg, names[i]))
            continue;
        self = ops->open(&ctx, err);
        if (!self) {
            err_prefix(err, "sink=%s", ops->name);
            return false;
        }
        d->sinks = xrealloc(d->sinks, (d->n_sinks + 1) * sizeof *d->sinks);
        d->sinks[d->n_sinks].ops = ops;
        d->sinks[d->n_sinks].self = self;
        d->n_sinks++;
        pipeline_add_sink(d->pipeline, ops, self);
        log_info(COMPONENT, "sink %s ready", ops->name);
    }
    if (d->n_sinks == 0)
        return err_set(err, ERR_CONFIG, "could not start: no sink is enabled");
    return true;
}

static void cleanup(Daemon *d)
{
    slot_monitor_free(d->monitor);
    reload_free(&d->reload);
    metrics_server_free(d->metrics);
    status_server_free(d->status);
    repl_free(d->repl);
    pipeline_free(d->pipeline);
    for (size_t i = 0; i < d->n_sinks; i++)
        d->sinks[i].ops->close(d->sinks[i].self);
    free(d->sinks);
    if (d->sigfd >= 0) {
        loop_unwatch(d->loop, d->sigfd);
        close(d->sigfd);
    }
    loop_free(d->loop);
}

int daemon_run(const Config *cfg)
{
    Daemon d;
    PfError err;

    memset(&d, 0, sizeof d);
    d.cfg = cfg;
    d.sigfd = -1;
    d.started_mono = clock_mono_us();
    snprintf(d.source.slot, sizeof d.source.slot, "%s", cfg->source.slot);
    snprintf(d.source.name, sizeof d.source.name, "%s", cfg->source.name);
    reload_init(&d.reload, cfg);
    log_detect_journal();
    log_set_level(cfg->log.level);
    log_set_format(cfg->log.format);

    d.loop = loop_new();
    if (!d.loop) {
        log_error(COMPONENT, "could not create the event loop: %s", strerror(errno));
        return 1;
    }
    d.pipeline = pipeline_new(cfg->source.max_inflight_txns);
    d.repl = repl_new(cfg, d.loop, d.pipeline, &d.source);
    {
        SlotMonitorSettings set;
        slot_monitor_settings_from(cfg, &set);
        d.monitor = slot_monitor_new(cfg, d.loop, &set);
    }

    if (!setup_signals(&d, &err) || !open_sinks(&d, &err)) {
        log_error_value(COMPONENT, &err);
        cleanup(&d);
        return err_exit_code(&err);
    }
    d.status = status_server_new(d.loop, cfg->status.socket, render_status, &d, &err);
    if (!d.status) {
        log_error_value(COMPONENT, &err);
        cleanup(&d);
        return err_exit_code(&err);
    }
    if (cfg->status.metrics_listen) {
        MetricsHandlers h = {.render = render_metrics, .ready = render_ready, .arg = &d};
        d.metrics = metrics_server_new(d.loop, cfg->status.metrics_listen, &h, &err);
        if (!d.metrics) {
            log_error_value(COMPONENT, &err);
            cleanup(&d);
            return err_exit_code(&err);
        }
    }
    d.watchdog_every = notify_watchdog_interval();
    loop_add_hook(d.loop, daemon_hook, &d);
    log_info(COMPONENT, "pgfan %s starting: slot \"%s\", %zu table%s, status socket %s",
             PGFAN_VERSION, cfg->source.slot, cfg->source.n_tables,
             cfg->source.n_tables == 1 ? "" : "s", cfg->status.socket);
    repl_start(d.repl);

    while (d.phase != PHASE_DONE) {
        if (!loop_run_once(d.loop, TIME_NEVER)) {
            err_set(&err, ERR_FATAL, "could not wait for events: %s", strerror(errno));
            stop_with(&d, &err);
        }
    }
    if (!d.has_fatal && d.exit_code == 0) {
        char a[LSN_TEXT_SIZE];
        log_info(COMPONENT, "stopped cleanly; confirmed position %s",
                 lsn_format(repl_sent_flush_lsn(d.repl), a));
    }
    cleanup(&d);
    return d.exit_code;
}
