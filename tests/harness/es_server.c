/*
 * es_server.c - runs tests/es_server/es_server.py for Check tests (see
 * es_server.h).
 *
 * The server process gets its own process group and PR_SET_PDEATHSIG so
 * that it dies with the test child even when the test aborts midway.
 * Requests use a libcurl easy handle per call: simple, and the tests that
 * need keep-alive measure pgfan's connections, not these.
 */
#include "es_server.h"

#include <check.h>
#include <curl/curl.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ES_MSG_SIZE 2048 /* Check refuses messages near 4 kB */
#define ES_START_MS 15000
#define ES_STOP_MS 10000
#define ES_POLL_MS 20
#define ES_MAX_ARGS 64
#define ES_REQUEST_TIMEOUT_S 60L

struct EsServer {
    pid_t pid;
    char dir[64];       /* /tmp/pgfan-es.XXXXXX for the port file, removed once read */
    int log_fd;         /* the server's stdout/stderr, an unlinked file */
    char url[64];
    char *auth_header;  /* "Authorization: ..." or NULL */
    bool tls;
};

static void es_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void es_fail(const char *fmt, ...)
{
    char msg[ES_MSG_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ck_abort_msg("%s", msg);
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The tail of the server's log (an unlinked file still open), for
 * failure messages. */
static void read_tail(int fd, char *out, size_t size)
{
    out[0] = '\0';
    if (fd < 0)
        return;
    off_t len = lseek(fd, 0, SEEK_END);
    off_t start = len > (off_t)size - 1 ? len - (off_t)size + 1 : 0;
    ssize_t n = len > 0 ? pread(fd, out, size - 1, start) : 0;
    out[n > 0 ? n : 0] = '\0';
}

/* Nothing of the server stays on disk: the log is unlinked at once, the
 * port file and its directory as soon as the port is known. */
static void remove_dir(EsServer *es)
{
    char path[128];

    if (es->dir[0] == '\0')
        return;
    snprintf(path, sizeof path, "%s/port", es->dir);
    unlink(path);
    rmdir(es->dir);
    es->dir[0] = '\0';
}

static void free_server(EsServer *es)
{
    if (es->log_fd >= 0)
        close(es->log_fd);
    free(es->auth_header);
    free(es);
}

static void kill_and_reap(EsServer *es)
{
    kill(-es->pid, SIGKILL);
    while (waitpid(es->pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* Fails the test after tearing down what h_es_start built so far. */
static void start_failed(EsServer *es, const char *why) __attribute__((noreturn));

static void start_failed(EsServer *es, const char *why)
{
    char log[4096];

    read_tail(es->log_fd, log, sizeof log);
    if (es->pid > 0)
        kill_and_reap(es);
    remove_dir(es);
    free_server(es);
    es_fail("h_es_start: could not start the Elasticsearch test server: %s\nserver log:\n%s", why,
            log);
}

/* base64 of text, malloc'd (NULL when out of memory). */
static char *base64(const char *text)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = strlen(text);
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t k = 0; k < len; k += 3) {
        unsigned v = (unsigned)(unsigned char)text[k] << 16;
        if (k + 1 < len)
            v |= (unsigned)(unsigned char)text[k + 1] << 8;
        if (k + 2 < len)
            v |= (unsigned)(unsigned char)text[k + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = k + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = k + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* The Authorization header for the server's --api-key (preferred) or
 * --basic USER:PASS, NULL when it runs without authentication. */
static char *make_auth_header(const char *const *extra_args)
{
    const char *api_key = NULL;
    const char *basic = NULL;
    char *out = NULL;

    for (size_t i = 0; extra_args != NULL && extra_args[i] != NULL; i++) {
        if (extra_args[i + 1] == NULL)
            break;
        if (strcmp(extra_args[i], "--api-key") == 0)
            api_key = extra_args[i + 1];
        else if (strcmp(extra_args[i], "--basic") == 0)
            basic = extra_args[i + 1];
    }
    if (api_key != NULL) {
        if (asprintf(&out, "Authorization: ApiKey %s", api_key) < 0)
            out = NULL;
    } else if (basic != NULL) {
        char *b64 = base64(basic);
        if (b64 != NULL && asprintf(&out, "Authorization: Basic %s", b64) < 0)
            out = NULL;
        free(b64);
    }
    return out;
}

static bool has_arg(const char *const *extra_args, const char *name)
{
    for (size_t i = 0; extra_args != NULL && extra_args[i] != NULL; i++)
        if (strcmp(extra_args[i], name) == 0)
            return true;
    return false;
}

static pid_t spawn_server(EsServer *es, const char *script, const char *const *extra_args)
{
    const char *argv[ES_MAX_ARGS];
    char port_path[128];
    char log_path[128];
    size_t n = 0;
    pid_t parent = getpid();

    snprintf(port_path, sizeof port_path, "%s/port", es->dir);
    snprintf(log_path, sizeof log_path, "%s/log", es->dir);
    es->log_fd = open(log_path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (es->log_fd < 0)
        start_failed(es, strerror(errno));
    unlink(log_path);
    argv[n++] = "python3";
    argv[n++] = script;
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--port-file";
    argv[n++] = port_path;
    for (size_t i = 0; extra_args != NULL && extra_args[i] != NULL; i++) {
        if (n + 1 >= ES_MAX_ARGS)
            start_failed(es, "too many extra arguments");
        argv[n++] = extra_args[i];
    }
    argv[n] = NULL;

    int log_fd = es->log_fd;
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0)
        start_failed(es, strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(null_fd);
        start_failed(es, strerror(e));
    }
    if (pid == 0) {
        setpgid(0, 0);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
            dup2(log_fd, STDERR_FILENO) < 0)
            _exit(127);
        close_range(3, ~0U, 0);
        execvp(argv[0], (char *const *)argv);
        static const char msg[] = "h_es_start: could not execute python3\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(127);
    }
    setpgid(pid, pid);
    close(null_fd);
    return pid;
}

/* The port from the port file, 0 while it is not there yet. */
static int read_port(const EsServer *es)
{
    char path[128];
    char buf[32] = {0};

    snprintf(path, sizeof path, "%s/port", es->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    long port = strtol(buf, NULL, 10);
    return port > 0 && port < 65536 ? (int)port : 0;
}

EsServer *h_es_start(const char *const *extra_args)
{
    const char *script = getenv("PGFAN_TEST_ES_SERVER");

    if (script == NULL || script[0] == '\0')
        es_fail("h_es_start: could not find the Elasticsearch test server: PGFAN_TEST_ES_SERVER "
                "is not set\nHINT: run the suite through meson test, or set "
                "PGFAN_TEST_ES_SERVER=tests/es_server/es_server.py");
    if (access(script, R_OK) != 0)
        es_fail("h_es_start: could not read the Elasticsearch test server %s: %s", script,
                strerror(errno));
    EsServer *es = calloc(1, sizeof *es);
    if (es == NULL)
        es_fail("h_es_start: could not allocate the server handle: out of memory");
    es->log_fd = -1;
    snprintf(es->dir, sizeof es->dir, "/tmp/pgfan-es.XXXXXX");
    if (mkdtemp(es->dir) == NULL) {
        int e = errno;
        free_server(es);
        es_fail("h_es_start: could not create a directory under /tmp: %s", strerror(e));
    }
    es->tls = has_arg(extra_args, "--tls-cert");
    es->auth_header = make_auth_header(extra_args);
    es->pid = spawn_server(es, script, extra_args);

    long long deadline = now_ms() + ES_START_MS;
    int port = 0;
    while ((port = read_port(es)) == 0) {
        int wstatus;
        pid_t r = waitpid(es->pid, &wstatus, WNOHANG);
        if (r == es->pid) {
            char why[128];
            snprintf(why, sizeof why, "it exited with status %d before listening",
                     WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus));
            es->pid = 0;
            start_failed(es, why);
        }
        if (now_ms() > deadline)
            start_failed(es, "no port file after 15 s");
        sleep_ms(ES_POLL_MS);
    }
    remove_dir(es);
    snprintf(es->url, sizeof es->url, "%s://127.0.0.1:%d", es->tls ? "https" : "http", port);
    return es;
}

const char *h_es_url(const EsServer *es)
{
    return es->url;
}

void h_es_stop(EsServer *es)
{
    if (es == NULL)
        return;
    kill(-es->pid, SIGTERM);
    long long deadline = now_ms() + ES_STOP_MS;
    int wstatus = 0;
    bool reaped = false;
    while (!reaped) {
        pid_t r = waitpid(es->pid, &wstatus, WNOHANG);
        if (r == es->pid || (r < 0 && errno == ECHILD)) {
            reaped = true;
            break;
        }
        if (now_ms() > deadline)
            break;
        sleep_ms(ES_POLL_MS);
    }
    if (!reaped)
        kill_and_reap(es);
    remove_dir(es);
    free_server(es);
    if (!reaped)
        es_fail("h_es_stop: could not stop the Elasticsearch test server: no exit 10 s after "
                "SIGTERM (killed)");
}

typedef struct Buffer {
    char *data;
    size_t len;
    size_t cap;
    bool oom;
} Buffer;

static size_t collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    Buffer *b = userdata;
    size_t n = size * nmemb;

    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (p == NULL) {
            b->oom = true;
            return 0;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

char *h_es_request(const EsServer *es, const char *method, const char *path, const char *body,
                   long *status)
{
    char url[4096];
    char err[CURL_ERROR_SIZE] = {0};
    Buffer buf = {0};
    struct curl_slist *headers = NULL;

    if (snprintf(url, sizeof url, "%s%s", es->url, path) >= (int)sizeof url)
        es_fail("h_es_request: could not send %s %s: path too long", method, path);
    CURL *curl = curl_easy_init();
    if (curl == NULL)
        es_fail("h_es_request: could not send %s %s: curl_easy_init failed", method, path);
    headers = curl_slist_append(headers, strstr(path, "_bulk") != NULL
                                             ? "Content-Type: application/x-ndjson"
                                             : "Content-Type: application/json");
    if (es->auth_header != NULL)
        headers = curl_slist_append(headers, es->auth_header);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, ES_REQUEST_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (es->tls) {
        /* loopback test server with a throwaway certificate */
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    CURLcode rc = curl_easy_perform(curl);
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK || buf.oom) {
        free(buf.data);
        es_fail("h_es_request: could not send %s %s to %s: %s", method, path, es->url,
                buf.oom ? "out of memory" : (err[0] ? err : curl_easy_strerror(rc)));
    }
    if (buf.data == NULL) {
        buf.data = calloc(1, 1);
        if (buf.data == NULL)
            es_fail("h_es_request: could not read the answer to %s %s: out of memory", method,
                    path);
    }
    if (status != NULL)
        *status = code;
    return buf.data;
}

long h_es_count(const EsServer *es, const char *index_pattern)
{
    char path[1024];
    long status = 0;

    snprintf(path, sizeof path, "/%s/_refresh", index_pattern);
    char *body = h_es_request(es, "POST", path, NULL, &status);
    if (status != 200) {
        char copy[1024];
        snprintf(copy, sizeof copy, "%s", body);
        free(body);
        es_fail("h_es_count: could not refresh %s: HTTP %ld %s", index_pattern, status, copy);
    }
    free(body);
    snprintf(path, sizeof path, "/%s/_count", index_pattern);
    body = h_es_request(es, "GET", path, NULL, &status);
    const char *p = strstr(body, "\"count\":");
    char *end = NULL;
    long n = p != NULL ? strtol(p + strlen("\"count\":"), &end, 10) : -1;
    if (status != 200 || p == NULL || end == p + strlen("\"count\":")) {
        char copy[1024];
        snprintf(copy, sizeof copy, "%s", body);
        free(body);
        es_fail("h_es_count: could not count %s: HTTP %ld %s", index_pattern, status, copy);
    }
    free(body);
    return n;
}
