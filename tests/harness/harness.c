/*
 * harness.c - helpers for pgfan's Check tests (see harness.h): PostgreSQL,
 * processes, files, slots. harness_pgfan.c has those for pgfan itself.
 *
 * Every failure ends in h_fail(), which hands one preformatted message to
 * ck_abort_msg. Helpers release what they hold before failing: under the
 * sanitizer build a leak reported at the child's exit would replace the
 * test's failure message with "Received signal 6".
 */
#include "harness.h"

#include <check.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define H_MSG_SIZE 2048 /* Check refuses messages near 4 kB ("Message string too long") */
#define H_POLL_MS 20
/* How long h_create_db / h_drop_slot wait for a terminated walsender to
 * release its slot. */
#define H_SLOT_RELEASE_MS 10000

void h_fail(const char *fmt, ...)
{
    char msg[H_MSG_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ck_abort_msg("%s", msg);
}

/* libpq messages end in "\n"; the test output reads better without it. */
static void copy_trimmed(char *dst, size_t size, const char *src)
{
    size_t len;

    snprintf(dst, size, "%s", src != NULL ? src : "");
    len = strlen(dst);
    while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == ' '))
        dst[--len] = '\0';
}

static char *h_vasprintf(const char *who, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static char *h_vasprintf(const char *who, const char *fmt, va_list ap)
{
    char *out = NULL;

    if (vasprintf(&out, fmt, ap) < 0)
        h_fail("%s: could not format text: out of memory", who);
    return out;
}

static char *h_strdup(const char *who, const char *s)
{
    char *out = strdup(s);

    if (out == NULL)
        h_fail("%s: could not copy text: out of memory", who);
    return out;
}

/* --- PostgreSQL -------------------------------------------------------- */

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : fallback;
}

static const char *test_port(const char *who)
{
    const char *port = env_or("PGFAN_TEST_PGPORT", NULL);

    if (port == NULL)
        h_fail("%s: could not find the test server: PGFAN_TEST_PGPORT is not set\n"
               "HINT: run the tests through ./tests/run.sh, or start a server with "
               "tests/harness/pg.sh start DIR and load DIR/env",
               who);
    return port;
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *h_pg_connect(const char *dbname)
{
    const char *const keys[] = {"host",    "port",       "user",             "dbname",
                                "sslmode", "gssencmode", "application_name", "connect_timeout",
                                NULL};
    const char *const values[] = {env_or("PGFAN_TEST_PGHOST", "127.0.0.1"),
                                  test_port("h_pg_connect"),
                                  env_or("PGFAN_TEST_PGUSER", "postgres"),
                                  dbname != NULL ? dbname : "postgres",
                                  /* loopback test server: skip TLS/GSS negotiation */
                                  "disable",
                                  "disable",
                                  "pgfan-test",
                                  "10",
                                  NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 0);
    char cause[H_MSG_SIZE];

    if (conn == NULL)
        h_fail("h_pg_connect: could not connect to database %s: out of memory", values[3]);
    if (PQstatus(conn) != CONNECTION_OK) {
        copy_trimmed(cause, sizeof cause, PQerrorMessage(conn));
        PQfinish(conn);
        h_fail("h_pg_connect: could not connect to database %s at %s:%s: %s", values[3],
               values[0], values[1], cause);
    }
    PQsetNoticeProcessor(conn, quiet_notice, NULL);
    return conn;
}

/* Runs sql; on failure frees it, clears the result and fails the test. */
static PGresult *exec_or_fail(PGconn *conn, const char *who, char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    char cause[H_MSG_SIZE / 2];
    char query[H_MSG_SIZE / 2];

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)
        return res;
    copy_trimmed(cause, sizeof cause,
                 res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    copy_trimmed(query, sizeof query, sql);
    PQclear(res);
    free(sql);
    h_fail("%s: could not run SQL: %s\nSQL: %s", who, cause, query);
}

void h_sql(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    char *sql;

    va_start(ap, fmt);
    sql = h_vasprintf("h_sql", fmt, ap);
    va_end(ap);
    PQclear(exec_or_fail(conn, "h_sql", sql));
    free(sql);
}

/* First column of the first row of res (malloc'd, NULL for SQL NULL);
 * clears res. *found says whether there was such a value at all. */
static char *first_value(PGresult *res, const char *who, bool *found)
{
    char *out = NULL;

    *found = PQntuples(res) > 0 && PQnfields(res) > 0;
    if (*found && !PQgetisnull(res, 0, 0)) {
        out = strdup(PQgetvalue(res, 0, 0));
        if (out == NULL) {
            PQclear(res);
            h_fail("%s: could not copy the value: out of memory", who);
        }
    }
    PQclear(res);
    return out;
}

char *h_sql_value(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    char *sql;
    char *value;
    bool found;
    char query[H_MSG_SIZE / 2];

    va_start(ap, fmt);
    sql = h_vasprintf("h_sql_value", fmt, ap);
    va_end(ap);
    value = first_value(exec_or_fail(conn, "h_sql_value", sql), "h_sql_value", &found);
    if (!found) {
        copy_trimmed(query, sizeof query, sql);
        free(sql);
        h_fail("h_sql_value: could not read a value: the query returned no rows or no "
               "columns\nSQL: %s",
               query);
    }
    free(sql);
    return value;
}

long h_count_rows(PGconn *conn, const char *table)
{
    char *n = h_sql_value(conn, "SELECT count(*) FROM %s", table);
    long rows = atol(n);

    free(n);
    return rows;
}

/* Runs a one-parameter query; see first_value. */
static char *param_value(PGconn *conn, const char *who, const char *sql, const char *param,
                         bool *found)
{
    const char *params[1] = {param};
    PGresult *res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
    char cause[H_MSG_SIZE / 2];

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        copy_trimmed(cause, sizeof cause,
                     res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        PQclear(res);
        h_fail("%s: could not run SQL: %s\nSQL: %s ($1 = %s)", who, cause, sql, param);
    }
    return first_value(res, who, found);
}

typedef struct SlotsBusy {
    PGconn *conn;
    const char *who;
    const char *sql; /* counts the active slots of interest, $1 = param */
    const char *param;
} SlotsBusy;

static bool slots_released(void *arg)
{
    const SlotsBusy *sb = arg;
    bool found;
    char *n = param_value(sb->conn, sb->who, sb->sql, sb->param, &found);
    bool released = n != NULL && strcmp(n, "0") == 0;

    free(n);
    return released;
}

/*
 * Terminates the walsenders holding the selected slots, waits for them to
 * let go, then drops the slots. where is a condition on pg_replication_slots
 * with $1 = param.
 */
static void drop_slots_where(PGconn *conn, const char *who, const char *where, const char *param)
{
    /* where is one of our own short constants: stack buffers, nothing to
     * free if a query fails the test. */
    char terminate[256];
    char count_active[256];
    char drop[256];
    SlotsBusy sb = {.conn = conn, .who = who, .sql = count_active, .param = param};
    bool found;

    snprintf(terminate, sizeof terminate,
             "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots "
             "WHERE %s AND active_pid IS NOT NULL",
             where);
    snprintf(count_active, sizeof count_active,
             "SELECT count(*) FROM pg_replication_slots WHERE %s AND active", where);
    snprintf(drop, sizeof drop,
             "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots "
             "WHERE %s",
             where);

    free(param_value(conn, who, terminate, param, &found));
    if (!h_wait_until(slots_released, &sb, H_SLOT_RELEASE_MS))
        h_fail("%s: could not drop replication slots (%s, $1 = %s): still active %d ms after "
               "terminating their walsenders",
               who, where, param, H_SLOT_RELEASE_MS);
    free(param_value(conn, who, drop, param, &found));
}

void h_create_db(const char *name)
{
    PGconn *conn = h_pg_connect("postgres");
    char *ident;

    /* DROP DATABASE refuses while logical slots of the database exist. */
    drop_slots_where(conn, "h_create_db", "database = $1", name);
    ident = PQescapeIdentifier(conn, name, strlen(name));
    if (ident == NULL) {
        PQfinish(conn);
        h_fail("h_create_db: could not quote database name \"%s\"", name);
    }
    h_sql(conn, "DROP DATABASE IF EXISTS %s WITH (FORCE)", ident);
    h_sql(conn, "CREATE DATABASE %s", ident);
    PQfreemem(ident);
    PQfinish(conn);
}

void h_drop_slot(PGconn *conn, const char *slot)
{
    drop_slots_where(conn, "h_drop_slot", "slot_name = $1", slot);
}

/* Appends " key=value" to out, quoting value the way libpq's conninfo parser
 * wants when it is empty or holds spaces, quotes or backslashes. */
static void conninfo_add(FILE *out, const char *key, const char *value)
{
    bool quote = value[0] == '\0' || strpbrk(value, " \t\n'\\") != NULL;

    fprintf(out, "%s%s=", ftell(out) > 0 ? " " : "", key);
    if (!quote) {
        fputs(value, out);
        return;
    }
    fputc('\'', out);
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '\'' || *p == '\\')
            fputc('\\', out);
        fputc(*p, out);
    }
    fputc('\'', out);
}

char *h_dsn(const char *dbname)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);

    if (out == NULL)
        h_fail("h_dsn: could not open a memory stream: %s", strerror(errno));
    conninfo_add(out, "host", env_or("PGFAN_TEST_PGHOST", "127.0.0.1"));
    conninfo_add(out, "port", test_port("h_dsn"));
    conninfo_add(out, "user", env_or("PGFAN_TEST_PGUSER", "postgres"));
    conninfo_add(out, "dbname", dbname != NULL ? dbname : "postgres");
    if (fclose(out) != 0) {
        free(buf);
        h_fail("h_dsn: could not build the conninfo: out of memory");
    }
    return buf;
}

PGconn *h_sql_send(const char *dbname, const char *fmt, ...)
{
    va_list ap;
    char *sql;
    PGconn *conn;
    char cause[H_MSG_SIZE / 2];

    va_start(ap, fmt);
    sql = h_vasprintf("h_sql_send", fmt, ap);
    va_end(ap);
    conn = h_pg_connect(dbname);
    if (PQsendQuery(conn, sql) != 1) {
        copy_trimmed(cause, sizeof cause, PQerrorMessage(conn));
        PQfinish(conn);
        free(sql);
        h_fail("h_sql_send: could not send SQL to database %s: %s", dbname, cause);
    }
    free(sql);
    return conn;
}

/* --- a test's database and directory ------------------------------------ */

PGconn *h_setup(const char *name, const char *schema_sql, char **dir)
{
    PGconn *conn;

    *dir = h_tmpdir();
    h_create_db(name);
    conn = h_pg_connect(name);
    if (schema_sql != NULL)
        h_sql(conn, "%s", schema_sql);
    return conn;
}

void h_teardown(PGconn *conn, const char *slot, char *dir)
{
    if (slot != NULL)
        h_drop_slot(conn, slot);
    PQfinish(conn);
    h_rm_rf(dir);
    free(dir);
}

/* --- waiting ------------------------------------------------------------ */

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

bool h_wait_until(bool (*pred)(void *arg), void *arg, int timeout_ms)
{
    int64_t deadline = mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000;

    for (;;) {
        if (pred(arg))
            return true;
        int64_t left = deadline - mono_us();
        if (left <= 0)
            return false;
        int64_t step = left < H_POLL_MS * 1000 ? left : H_POLL_MS * 1000;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(step * 1000)};
        /* EINTR just means an early poll. */
        nanosleep(&ts, NULL);
    }
}

/* --- processes ---------------------------------------------------------- */

/* Between fork and exec: write(2) only, best effort (stderr is the log). */
static void child_say(const char *text)
{
    ssize_t r = write(STDERR_FILENO, text, strlen(text));

    (void)r;
}

pid_t h_spawn(const char *const argv[], const char *stderr_path)
{
    const char *path = stderr_path != NULL ? stderr_path : "/dev/null";
    int out_fd;
    int in_fd;
    pid_t parent;
    pid_t pid;

    if (argv == NULL || argv[0] == NULL)
        h_fail("h_spawn: could not start a process: argv is empty");
    /* Opened here, not in the child, so a bad path fails the test itself. */
    out_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0)
        h_fail("h_spawn: could not open %s: %s", path, strerror(errno));
    in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in_fd < 0) {
        int e = errno;
        close(out_fd);
        h_fail("h_spawn: could not open /dev/null: %s", strerror(e));
    }
    /* Unflushed stdio buffers would otherwise be written twice. */
    fflush(NULL);
    parent = getpid();
    pid = fork();
    if (pid < 0) {
        int e = errno;
        close(out_fd);
        close(in_fd);
        h_fail("h_spawn: could not fork for %s: %s", argv[0], strerror(e));
    }
    if (pid == 0) {
        /* The test may have threads (librdkafka's mock cluster): only
         * async-signal-safe calls between fork and exec. */
        setpgid(0, 0);
        /* Its own group keeps it out of Check's cleanup of the test's group,
         * so tie it to the test process instead: a failed test must not
         * leave a pgfan running. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        if (dup2(in_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
            dup2(out_fd, STDERR_FILENO) < 0)
            _exit(127);
        close_range(3, ~0U, 0);
        execvp(argv[0], (char *const *)argv);

        const char *name = strerrorname_np(errno);
        child_say("h_spawn: could not execute ");
        child_say(argv[0]);
        child_say(": ");
        child_say(name != NULL ? name : "unknown error");
        child_say("\n");
        _exit(127);
    }
    /* Also here, so h_kill(pid) right after h_spawn finds the group. */
    setpgid(pid, pid);
    close(out_fd);
    close(in_fd);
    return pid;
}

typedef struct ExitWait {
    pid_t pid;
    int status;
    int err; /* errno of a failed waitpid, 0 if none */
    bool exited;
} ExitWait;

static bool child_exited(void *arg)
{
    ExitWait *w = arg;
    pid_t r;

    do
        r = waitpid(w->pid, &w->status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        w->err = errno;
        return true;
    }
    w->exited = r == w->pid;
    return w->exited;
}

int h_wait_exit(pid_t pid, int timeout_ms)
{
    ExitWait w = {.pid = pid};

    if (pid <= 0)
        h_fail("h_wait_exit: could not wait for process %d: not a child pid", (int)pid);
    if (!h_wait_until(child_exited, &w, timeout_ms))
        return -1;
    if (w.err != 0)
        h_fail("h_wait_exit: could not wait for process %d: %s", (int)pid, strerror(w.err));
    if (WIFEXITED(w.status))
        return WEXITSTATUS(w.status);
    if (WIFSIGNALED(w.status))
        return 128 + WTERMSIG(w.status);
    return -1;
}

void h_kill(pid_t pid, int sig)
{
    /* kill(0) or kill(-1) would hit the test runner or everything we own. */
    if (pid <= 1)
        h_fail("h_kill: could not signal process %d: not a spawned pid", (int)pid);
    if (kill(-pid, sig) == 0)
        return;
    /* Not a group leader (not from h_spawn): signal the process alone. */
    if (errno == ESRCH && kill(pid, sig) == 0)
        return;
    if (errno == ESRCH)
        return;
    h_fail("h_kill: could not send signal %d to process %d: %s", sig, (int)pid, strerror(errno));
}

const char *h_pgfan_bin(void)
{
    const char *bin = env_or("PGFAN_TEST_BIN", NULL);

    if (bin == NULL)
        h_fail("h_pgfan_bin: could not find the pgfan binary: PGFAN_TEST_BIN is not set\n"
               "HINT: run the tests through ./tests/run.sh, or set PGFAN_TEST_BIN=build/daemon/pgfan");
    if (access(bin, X_OK) != 0)
        h_fail("h_pgfan_bin: could not use the pgfan binary %s: %s", bin, strerror(errno));
    return bin;
}

void h_shell(const char *fmt, ...)
{
    va_list ap;
    char *cmd;
    char copy[H_MSG_SIZE / 2];
    int rc;

    va_start(ap, fmt);
    cmd = h_vasprintf("h_shell", fmt, ap);
    va_end(ap);
    fflush(NULL); /* the shell's output comes after ours */
    rc = system(cmd);
    if (rc == 0) {
        free(cmd);
        return;
    }
    snprintf(copy, sizeof copy, "%s", cmd);
    free(cmd);
    if (rc > 0 && WIFEXITED(rc))
        h_fail("h_shell: could not run %s: exit status %d", copy, WEXITSTATUS(rc));
    h_fail("h_shell: could not run %s: %s", copy, rc < 0 ? strerror(errno) : "killed by a signal");
}

/* --- files -------------------------------------------------------------- */

char *h_path(const char *dir, const char *name)
{
    char *path;

    if (asprintf(&path, "%s/%s", dir, name) < 0)
        h_fail("h_path: could not format %s/%s: out of memory", dir, name);
    return path;
}

char *h_tmpdir(void)
{
    char *dir = h_strdup("h_tmpdir", "/tmp/pgfan-test.XXXXXX");

    if (mkdtemp(dir) == NULL) {
        int e = errno;
        free(dir);
        h_fail("h_tmpdir: could not create a directory under /tmp: %s", strerror(e));
    }
    return dir;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

void h_rm_rf(const char *path)
{
    struct stat st;

    /* A guard against a test bug turning into rm -rf of something real. */
    if (strncmp(path, "/tmp/", 5) != 0 || path[5] == '\0' || strstr(path, "/..") != NULL)
        h_fail("h_rm_rf: could not remove %s: only paths under /tmp/ are allowed", path);
    if (lstat(path, &st) != 0 && errno == ENOENT)
        return;
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        h_fail("h_rm_rf: could not remove %s: %s", path, strerror(errno));
}

void h_write_file(const char *path, const char *fmt, ...)
{
    va_list ap;
    char *text;
    FILE *f;
    size_t len;
    bool ok;
    int e;

    va_start(ap, fmt);
    text = h_vasprintf("h_write_file", fmt, ap);
    va_end(ap);
    f = fopen(path, "w");
    if (f == NULL) {
        e = errno;
        free(text);
        h_fail("h_write_file: could not open %s: %s", path, strerror(e));
    }
    len = strlen(text);
    ok = fwrite(text, 1, len, f) == len;
    e = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok && e == 0)
        e = errno;
    free(text);
    if (!ok)
        h_fail("h_write_file: could not write %s: %s", path, strerror(e));
}

/*
 * Reads all of path into a NUL-terminated buffer. A missing file gives NULL
 * when missing_ok; any other problem fails the test as who.
 */
static char *read_all(const char *who, const char *path, size_t *len_out, bool missing_ok)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t cap = 4096;
    size_t len = 0;
    char *buf;

    if (fd < 0) {
        if (errno == ENOENT && missing_ok)
            return NULL;
        h_fail("%s: could not open %s: %s", who, path, strerror(errno));
    }
    buf = malloc(cap);
    for (;;) {
        if (buf == NULL) {
            close(fd);
            h_fail("%s: could not read %s: out of memory", who, path);
        }
        if (cap - len < 2) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL)
                free(buf);
            buf = bigger;
            cap *= 2;
            continue;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            h_fail("%s: could not read %s: %s", who, path, strerror(e));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    if (len_out != NULL)
        *len_out = len;
    return buf;
}

char *h_read_file(const char *path, size_t *len)
{
    return read_all("h_read_file", path, len, false);
}

static size_t count_newlines(const char *buf, size_t len)
{
    size_t n = 0;
    const char *p = buf;
    const char *end = buf + len;

    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    return n;
}

size_t h_count_lines(const char *path)
{
    size_t len = 0;
    char *buf = read_all("h_count_lines", path, &len, true);
    size_t n = buf != NULL ? count_newlines(buf, len) : 0;

    free(buf);
    return n;
}

bool h_file_contains(const char *path, const char *needle)
{
    size_t len = 0;
    char *buf = read_all("h_file_contains", path, &len, true);
    bool found = buf != NULL && memmem(buf, len, needle, strlen(needle)) != NULL;

    free(buf);
    return found;
}

char **h_read_lines(const char *path, size_t *n_out)
{
    size_t len = 0;
    char *buf = read_all("h_read_lines", path, &len, false);
    size_t n = count_newlines(buf, len);
    char **lines = calloc(n + 1, sizeof *lines);
    const char *p = buf;

    if (lines == NULL) {
        free(buf);
        h_fail("h_read_lines: could not read %s: out of memory", path);
    }
    for (size_t i = 0; i < n; i++) {
        const char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        lines[i] = strndup(p, (size_t)(nl - p));
        if (lines[i] == NULL) {
            h_free_lines(lines);
            free(buf);
            h_fail("h_read_lines: could not read %s: out of memory", path);
        }
        p = nl + 1;
    }
    free(buf);
    if (n_out != NULL)
        *n_out = n;
    return lines;
}

void h_free_lines(char **lines)
{
    if (lines == NULL)
        return;
    for (char **l = lines; *l != NULL; l++)
        free(*l);
    free(lines);
}

/* --- replication slots -------------------------------------------------- */

static Lsn parse_lsn(const char *who, char *text)
{
    Lsn lsn = LSN_INVALID;

    if (text == NULL)
        return LSN_INVALID;
    if (!lsn_parse(text, strlen(text), &lsn)) {
        char copy[64];
        snprintf(copy, sizeof copy, "%s", text);
        free(text);
        h_fail("%s: could not parse LSN \"%s\"", who, copy);
    }
    free(text);
    return lsn;
}

Lsn h_slot_confirmed_lsn(PGconn *conn, const char *slot)
{
    bool found;
    char *v = param_value(conn, "h_slot_confirmed_lsn",
                          "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
                          slot, &found);

    return parse_lsn("h_slot_confirmed_lsn", v);
}

bool h_slot_active(PGconn *conn, const char *slot)
{
    bool found;
    char *v = param_value(conn, "h_slot_active",
                          "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot,
                          &found);
    bool active = v != NULL && strcmp(v, "t") == 0;

    free(v);
    return active;
}

Lsn h_current_wal_lsn(PGconn *conn)
{
    return parse_lsn("h_current_wal_lsn", h_sql_value(conn, "SELECT pg_current_wal_lsn()"));
}

/* --- pgfan configuration ------------------------------------------------ */

char *h_write_config(const char *dir, const char *dbname, const char *slot, const char *tables,
                     const char *extra)
{
    char *path;
    char *dsn = h_dsn(dbname);
    FILE *f;
    int e;

    if (asprintf(&path, "%s/pgfan.conf", dir) < 0) {
        free(dsn);
        h_fail("h_write_config: could not format the path: out of memory");
    }
    f = fopen(path, "w");
    if (f == NULL) {
        e = errno;
        free(dsn);
        free(path);
        h_fail("h_write_config: could not open %s/pgfan.conf: %s", dir, strerror(e));
    }
    fprintf(f, "[source]\ndsn = %s\n", dsn);
    if (slot != NULL)
        fprintf(f, "slot = %s\n", slot);
    if (tables != NULL)
        fprintf(f, "tables = %s\n", tables);
    fprintf(f, "\n[status]\nsocket = %s/status.sock\n", dir);
    fprintf(f, "\n[log]\nlevel = debug\n");
    fprintf(f, "\n[sink.file]\npath = %s/out.ndjson\n", dir);
    if (extra != NULL)
        fprintf(f, "\n%s\n", extra);
    e = ferror(f) ? EIO : 0;
    if (fclose(f) != 0 && e == 0)
        e = errno;
    free(dsn);
    if (e != 0) {
        free(path);
        h_fail("h_write_config: could not write %s/pgfan.conf: %s", dir, strerror(e));
    }
    return path;
}

/* --- waiting on files and slots ------------------------------------------ */

typedef struct FileWait {
    const char *path;
    const char *needle;
} FileWait;

static bool file_has(void *arg)
{
    FileWait *w = arg;
    return h_file_contains(w->path, w->needle);
}

void h_wait_file_contains(const char *path, const char *needle, int timeout_ms)
{
    FileWait w = {path, needle};
    char *text;

    if (h_wait_until(file_has, &w, timeout_ms))
        return;
    text = h_read_file(path, NULL);
    h_fail("%s never contained \"%s\" within %d ms; it has:\n%s", path, needle, timeout_ms,
           text ? text : "");
}

typedef struct LinesWait {
    const char *path;
    size_t n;
} LinesWait;

static bool has_lines(void *arg)
{
    LinesWait *w = arg;
    return h_count_lines(w->path) >= w->n;
}

void h_wait_lines(const char *path, size_t n, int timeout_ms)
{
    LinesWait w = {path, n};

    if (!h_wait_until(has_lines, &w, timeout_ms))
        h_fail("h_wait_lines: could not see %zu lines in %s within %d ms: it has %zu", n, path,
               timeout_ms, h_count_lines(path));
}

Lsn h_wal_insert_lsn(PGconn *conn)
{
    char *text = h_sql_value(conn, "SELECT pg_current_wal_insert_lsn()");
    Lsn lsn = LSN_INVALID;

    if (!text || !lsn_parse(text, strlen(text), &lsn))
        h_fail("h_wal_insert_lsn: could not read pg_current_wal_insert_lsn(): %s",
               text ? text : "NULL");
    free(text);
    return lsn;
}

typedef struct SlotWait {
    PGconn *conn;
    const char *slot;
    Lsn target;
} SlotWait;

static bool slot_reached(void *arg)
{
    SlotWait *w = arg;
    return h_slot_confirmed_lsn(w->conn, w->slot) >= w->target;
}

bool h_slot_reaches(PGconn *conn, const char *slot, Lsn target, int timeout_ms)
{
    SlotWait w = {conn, slot, target};

    return h_wait_until(slot_reached, &w, timeout_ms);
}

void h_wait_slot_confirmed(PGconn *conn, const char *slot, Lsn target, int timeout_ms,
                           const char *log_path)
{
    char a[LSN_TEXT_SIZE], b[LSN_TEXT_SIZE];
    char *text;

    if (h_slot_reaches(conn, slot, target, timeout_ms))
        return;
    text = log_path ? h_read_file(log_path, NULL) : NULL;
    h_fail("slot %s stuck at %s, wanted %s within %d ms; log:\n%s", slot,
           lsn_format(h_slot_confirmed_lsn(conn, slot), a), lsn_format(target, b), timeout_ms,
           text ? text : "(none)");
}

void h_wait_caught_up(PGconn *conn, const char *slot, int timeout_ms, const char *log_path)
{
    h_wait_slot_confirmed(conn, slot, h_wal_insert_lsn(conn), timeout_ms, log_path);
}

typedef struct InactiveWait {
    PGconn *conn;
    const char *slot;
} InactiveWait;

static bool slot_inactive(void *arg)
{
    InactiveWait *w = arg;
    return !h_slot_active(w->conn, w->slot);
}

void h_wait_slot_inactive(PGconn *conn, const char *slot, int timeout_ms)
{
    InactiveWait w = {conn, slot};

    if (!h_wait_until(slot_inactive, &w, timeout_ms))
        h_fail("slot %s is still in use after %d ms", slot, timeout_ms);
}

/* --- the shared crash-test workload --------------------------------------- */

static const char workload_sql[] =
    "DO $$ BEGIN FOR i IN 1..%d LOOP "
    "  INSERT INTO orders VALUES (i, 0); "
    "  IF i %% 3 = 0 THEN UPDATE orders SET v = 1 WHERE id = i - 1; END IF; "
    "  COMMIT; "
    "END LOOP; END $$";

PGconn *h_workload_start(const char *dbname, int rows)
{
    char sql[sizeof workload_sql + 16];

    snprintf(sql, sizeof sql, workload_sql, rows);
    return h_sql_send(dbname, "%s", sql);
}

void h_workload_finish(PGconn *w)
{
    PGresult *res;

    while ((res = PQgetResult(w)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
            PQclear(res);
            h_fail("h_workload_finish: the workload failed: %s", msg);
        }
        PQclear(res);
    }
    PQfinish(w);
}

/* --- TLS ---------------------------------------------------------------- */

void h_make_certificates(const char *dir)
{
    h_shell("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=pgfan-test-ca "
            "-keyout ca.key -out ca.crt >/dev/null 2>&1",
            dir);
    h_shell("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca "
            "-keyout other.key -out other.crt >/dev/null 2>&1",
            dir);
    h_shell("cd %s && openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key "
            "-out server.csr >/dev/null 2>&1 && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext "
            "&& openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
            "-extfile san.ext -out server.crt >/dev/null 2>&1",
            dir);
}
