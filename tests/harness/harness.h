/*
 * harness.h - helpers for pgfan's Check tests against a real PostgreSQL.
 *
 * The throwaway server comes from tests/harness/pg.sh (tests/run.sh starts
 * it); the helpers find it through PGFAN_TEST_PGHOST / PGFAN_TEST_PGPORT /
 * PGFAN_TEST_PGUSER and the daemon under test through PGFAN_TEST_BIN.
 *
 * Every helper either succeeds or fails the current test with ck_abort_msg
 * and a message "h_<helper>: could not <verb> <object>: <cause>", so tests
 * read as straight-line setup. They are meant for Check's fork mode (the
 * default): each test runs in its own child, and the harness keeps no global
 * state, so nothing leaks between tests or back to the runner.
 *
 * Ownership: every returned char * (and char ** from h_read_lines) is
 * malloc'd and owned by the caller (free(), h_free_lines()); a PGconn from
 * h_pg_connect is closed with PQfinish(). h_pgfan_bin() returns a borrowed
 * pointer into the environment. Under the sanitizer build a test that
 * leaks fails, so free what you take (also on the way to a ck_assert that
 * may fail, where practical).
 *
 * Time: h_wait_until is the only place that sleeps, and only to pace
 * polling under a deadline. It reads CLOCK_MONOTONIC directly, not
 * common/clock.h, so it measures real time even when a test fakes pgfan's
 * clock. Helpers that wait take the deadline from the caller (timeout_ms):
 * each suite knows how slow its work may be.
 *
 * harness.c holds the helpers for PostgreSQL, processes, files and slots;
 * harness_pgfan.c those for the daemon under test (running it, reading what
 * it wrote, its HTTP endpoints) and a suite's main() (h_run_suite).
 */
#ifndef PGFAN_TEST_HARNESS_H
#define PGFAN_TEST_HARNESS_H

#include "../../common/lsn.h"

#include <check.h>
#include <libpq-fe.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Fails the current test with the formatted message (cut to what Check
 * accepts, about 2 kB). Every helper fails through it.
 */
void h_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* --- PostgreSQL -------------------------------------------------------- */

/*
 * Connects to dbname (NULL: "postgres") on the test server. Notices
 * (e.g. "does not exist, skipping") are discarded.
 */
PGconn *h_pg_connect(const char *dbname);

/* Runs SQL (several statements allowed); fails the test with the SQL and
 * the server's message on any error. */
void h_sql(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Runs a query and returns the first column of its first row, malloc'd,
 * or NULL when that value is SQL NULL. Fails the test when the query fails
 * or returns no row or no column.
 */
char *h_sql_value(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* SELECT count(*) FROM table (a trusted name, not quoted). */
long h_count_rows(PGconn *conn, const char *table);

/*
 * Drops database name if it exists (first terminating its sessions and
 * dropping its replication slots, which would block DROP DATABASE), then
 * creates it empty. Test files running in parallel must use distinct names.
 */
void h_create_db(const char *name);

/* A libpq conninfo for pgfan's [source] dsn, to dbname on the test server. */
char *h_dsn(const char *dbname);

/*
 * Sends SQL on a new connection to dbname without waiting for it, so a test
 * can work while it runs (a workload procedure, a long transaction);
 * h_workload_finish waits for it and closes the connection.
 */
PGconn *h_sql_send(const char *dbname, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --- a test's database and directory ------------------------------------ */

/*
 * The usual start of a test against the server: a new directory (h_tmpdir)
 * in *dir, database name created empty (h_create_db) with schema_sql run in
 * it (NULL: nothing). Returns a connection to name.
 */
PGconn *h_setup(const char *name, const char *schema_sql, char **dir);

/*
 * The usual end: drops slot if it exists (slots hold WAL; NULL: none),
 * closes conn, removes dir with everything in it and frees dir.
 */
void h_teardown(PGconn *conn, const char *slot, char *dir);

/* --- waiting ------------------------------------------------------------ */

/*
 * Calls pred(arg) until it returns true (returns true) or timeout_ms have
 * passed (returns false after one last call), every 20 ms.
 */
bool h_wait_until(bool (*pred)(void *arg), void *arg, int timeout_ms);

/* --- processes ---------------------------------------------------------- */

/*
 * Starts argv[0] (searched in PATH when it has no '/') with argv, in a new
 * process group, stdin from /dev/null, stdout and stderr appended to
 * stderr_path (NULL: /dev/null). If exec fails the child writes why to
 * stderr_path and exits 127. The child is SIGKILLed when the test process
 * ends, so a failed test leaves nothing running. Returns the child's pid.
 */
pid_t h_spawn(const char *const argv[], const char *stderr_path);

/*
 * Waits up to timeout_ms for pid (a child from h_spawn) to exit and reaps
 * it. Returns its exit code, 128 + N when killed by signal N (like a shell),
 * or -1 on timeout (the child is left running).
 */
int h_wait_exit(pid_t pid, int timeout_ms);

/* Sends sig to pid's process group (h_spawn made one). A process that is
 * already gone is not an error. */
void h_kill(pid_t pid, int sig);

/* The pgfan binary under test: $PGFAN_TEST_BIN (borrowed). */
const char *h_pgfan_bin(void);

/* Runs a shell command line (system(3)); fails the test showing it unless
 * it exits 0. */
void h_shell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* --- files -------------------------------------------------------------- */

/* A new empty directory /tmp/pgfan-test.XXXXXX (short enough for unix
 * socket paths inside it). Remove with h_rm_rf. */
char *h_tmpdir(void);

/* Removes path and everything below it; a missing path is not an error.
 * Only paths under /tmp/ are accepted. */
void h_rm_rf(const char *path);

/* dir/name (malloc'd). */
char *h_path(const char *dir, const char *name);

/* Creates or truncates path with the formatted text. */
void h_write_file(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Whole file, NUL-terminated (binary-safe: *len is the size; len may be
 * NULL). Fails the test if the file cannot be read. */
char *h_read_file(const char *path, size_t *len);

/*
 * Complete lines ('\n'-terminated) of path. A last line without '\n' is one
 * still being written and is not counted. A missing file counts as empty,
 * so these can be polled while a process creates the file.
 */
size_t h_count_lines(const char *path);
bool h_file_contains(const char *path, const char *needle);

/* The complete lines of path, without their '\n', in a NULL-terminated
 * array; *n (may be NULL) is their count. Fails the test if path cannot be
 * read. Free with h_free_lines. */
char **h_read_lines(const char *path, size_t *n);

/* Waits until the file at path contains needle; fails the test showing the
 * file's content otherwise (for logs). */
void h_wait_file_contains(const char *path, const char *needle, int timeout_ms);
void h_free_lines(char **lines);

/* Waits until path has at least n complete lines; fails the test saying
 * how many it has otherwise. */
void h_wait_lines(const char *path, size_t n, int timeout_ms);

/* --- replication slots -------------------------------------------------- */

/* confirmed_flush_lsn of slot, LSN_INVALID when the slot does not exist. */
Lsn h_slot_confirmed_lsn(PGconn *conn, const char *slot);

/* Whether a walsender is streaming from slot (false when it does not exist). */
bool h_slot_active(PGconn *conn, const char *slot);

/* pg_current_wal_lsn(). */
Lsn h_current_wal_lsn(PGconn *conn);

/*
 * pg_current_wal_insert_lsn(): the end of everything inserted so far. With
 * synchronous_commit off (the test server's setting) pg_current_wal_lsn()
 * can lag behind a commit just made; this cannot.
 */
Lsn h_wal_insert_lsn(PGconn *conn);

/* Whether slot's confirmed_flush_lsn reaches target within timeout_ms
 * (for tests that expect it not to; never fails the test). */
bool h_slot_reaches(PGconn *conn, const char *slot, Lsn target, int timeout_ms);

/*
 * Waits until slot's confirmed_flush_lsn reaches target; fails the test
 * naming both positions and showing log_path's content (may be NULL).
 */
void h_wait_slot_confirmed(PGconn *conn, const char *slot, Lsn target, int timeout_ms,
                           const char *log_path);

/*
 * Waits until slot confirmed everything written so far (h_wal_insert_lsn),
 * as h_wait_slot_confirmed: for a consumer that confirms only what all its
 * sinks hold, the point where every change made before the call is durable.
 */
void h_wait_caught_up(PGconn *conn, const char *slot, int timeout_ms, const char *log_path);

/* Waits until no walsender streams from slot (a killed consumer's walsender
 * has let go of it); fails the test otherwise. */
void h_wait_slot_inactive(PGconn *conn, const char *slot, int timeout_ms);

/*
 * The crash-test workload the sink suites share, on a table
 * orders(id bigint PRIMARY KEY, v int): ids 1..rows inserted one per
 * transaction, and after every third insert an update (v = 1) of the row
 * before it (ids 2, 5, 8, ...), each in its own transaction. Sent on a new
 * connection without waiting (h_sql_send), so a test can stop pgfan
 * mid-stream; h_workload_finish waits for it (failing the test if it
 * failed) and closes the connection. h_workload_check (harness_pgfan.c)
 * checks what a sink delivered of it.
 */
PGconn *h_workload_start(const char *dbname, int rows);
void h_workload_finish(PGconn *workload);

/* Terminates the walsender using slot, if any, and drops it, if it exists. */
void h_drop_slot(PGconn *conn, const char *slot);

/* --- pgfan configuration ------------------------------------------------ */

/*
 * Writes DIR/pgfan.conf for a pgfan run against the test server:
 *   [source]    dsn = h_dsn(dbname), slot = slot, tables = tables
 *   [status]    socket = DIR/status.sock
 *   [log]       level = debug
 *   [sink.file] path = DIR/out.ndjson
 * followed by extra verbatim (NULL: nothing; it may open further sections).
 * slot or tables NULL leave that key out (pgfan's default applies).
 * Returns the file's path.
 */
char *h_write_config(const char *dir, const char *dbname, const char *slot, const char *tables,
                     const char *extra);

/* --- TLS ---------------------------------------------------------------- */

/*
 * Makes test certificates in dir with the openssl command: ca.crt/ca.key (a
 * test CA), server.crt/server.key (CN and subjectAltName 127.0.0.1, signed
 * by that CA) and other.crt/other.key (a second CA that signed nothing, for
 * "wrong CA" tests).
 */
void h_make_certificates(const char *dir);

/* --- pgfan under test (harness_pgfan.c) --------------------------------- */

/* Starts `pgfan run -c config` (h_spawn), its output appended to log_path.
 * Returns its pid. */
pid_t h_pgfan_start(const char *config, const char *log_path);

/* Sends pid (from h_pgfan_start) SIGTERM and waits up to timeout_ms for it
 * to exit; fails the test unless it exits 0 (a clean stop). */
void h_pgfan_stop(pid_t pid, int timeout_ms);

/*
 * kill -9 of pid (from h_pgfan_start): sends SIGKILL, reaps it, waits until
 * the server let go of its slot and returns slot's confirmed position then,
 * where a restarted pgfan resumes (every duplicate must come after it).
 * Fails the test if pid or its walsender outlive timeout_ms.
 */
Lsn h_pgfan_crash(pid_t pid, PGconn *conn, const char *slot, int timeout_ms);

/*
 * Runs `pgfan ARG...` (the arguments after timeout_ms, NULL-terminated, at
 * most 15), its output appended to out_path. Returns its exit code (as
 * h_wait_exit), or -1 when it did not exit within timeout_ms (it is then
 * killed).
 */
int h_pgfan_cmd(const char *out_path, int timeout_ms, ...) __attribute__((sentinel));

/* The unsigned integer after "key": in text (its first occurrence); fails
 * the test when there is none. */
uint64_t h_json_u64(const char *text, const char *key);

/* One change of h_workload_start's workload as a sink delivered it. */
typedef struct HChange {
    Lsn commit_lsn;
    Lsn lsn;
    uint64_t id; /* the row's id */
    char op;     /* 'c' insert, 'u' update */
} HChange;

/*
 * Checks what a sink delivered of h_workload_start(rows), with pgfan
 * stopped or killed once on the way: every change has an id in 1..rows and
 * op c or u, every insert and update arrived at least once, and every
 * duplicate (the same commit_lsn and lsn twice) belongs to a transaction
 * after confirmed_before, the position confirmed when pgfan stopped
 * (UINT64_MAX: no duplicate at all). Sorts changes. Returns the number of
 * duplicates.
 */
size_t h_workload_check(HChange *changes, size_t n, int rows, Lsn confirmed_before);

/*
 * (Re)creates es_docs(idx text, id text, version numeric, doc jsonb) on
 * conn and loads into it every document of ndjson, the answer of the
 * Elasticsearch test server's GET /_test/docs/PATTERN (one
 * {"_index","_id","_version","_source"} object a line). Returns how many.
 */
size_t h_load_es_docs(PGconn *conn, const char *ndjson);

/* --- HTTP and metrics (harness_pgfan.c) --------------------------------- */

/* A TCP port on 127.0.0.1 nobody listens on right now (bound and closed). */
int h_free_tcp_port(void);

/* GET path from 127.0.0.1:port (10 s receive timeout): the whole response,
 * or NULL when nothing accepts the connection. */
char *h_http_get(int port, const char *path);

/* The value of the sample whose name and labels are series in a Prometheus
 * exposition body, or -1 when there is no such sample. */
double h_metric_value(const char *body, const char *series);

/*
 * Checks a Prometheus exposition body with `promtool check metrics` (in
 * dir/metrics.txt); fails the test with promtool's words when it objects.
 * Without /usr/bin/promtool it says so on stdout and checks nothing.
 */
void h_promtool_check(const char *dir, const char *body);

/* --- a suite's main() (harness_pgfan.c) --------------------------------- */

/*
 * Runs tests (NULL-terminated) as suite name with one TCase tcase_name,
 * timeout_s seconds a test, and teardown (may be NULL) as the TCase's
 * unchecked teardown (run once in this process after the tests, also when
 * they fail). When an environment variable of required_env
 * (NULL-terminated) is unset or empty it runs nothing and returns 77
 * (meson: skipped), naming it. Returns main()'s exit status.
 */
int h_run_suite(const char *name, const char *tcase_name, double timeout_s,
                const char *const required_env[], const TTest *const tests[],
                void (*teardown)(void));

#endif
