/*
 * status_client.c - `pgfan status`.
 *
 * jsmn tokenizes but does not validate (it accepts missing commas and colons,
 * raw control characters in strings, "tru" as a primitive), so the document
 * is first checked by a small RFC 8259 syntax checker; exit code 1 then
 * reliably means "the daemon sent something that is not JSON".
 */
#include "status_client.h"

#include "../common/buf.h"
#include "../common/error.h"
#include "../common/mem.h"
#include "status.h"

#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Nesting deeper than this is refused rather than risking the stack. */
#define JSON_MAX_DEPTH 128

/* While the daemon's backlog is full, retry connect() this often. */
#define CONNECT_RETRY_MS 10

/* ---- socket ------------------------------------------------------------ */

static int remaining_ms(TimeUs deadline)
{
    TimeUs left = deadline - clock_mono_us();

    if (left <= 0)
        return 0;
    if (left > INT32_MAX / 2 * USECS_PER_MSEC)
        return INT32_MAX / 2;
    return (int)((left + USECS_PER_MSEC - 1) / USECS_PER_MSEC);
}

static void set_connect_error(PfError *err, const char *path, const char *cause)
{
    err_set(err, ERR_RETRY, "could not connect to status socket \"%s\": %s", path, cause);
    err_hint(err, "is pgfan running? Is the path right (-s SOCKET, or [status] socket in the config)?");
}

static void format_timeout(char *out, size_t size, TimeUs timeout)
{
    snprintf(out, size, "timed out after %g s", (double)timeout / (double)USECS_PER_SEC);
}

/* Waits for fd to become ready for events; false on timeout (errno = ETIMEDOUT) or error. */
static bool wait_fd(int fd, short events, TimeUs deadline)
{
    struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};

    for (;;) {
        int n = poll(&pfd, 1, remaining_ms(deadline));
        if (n > 0)
            return true;
        if (n == 0) {
            errno = ETIMEDOUT;
            return false;
        }
        if (errno != EINTR)
            return false;
    }
}

/*
 * Non-blocking connect so that a daemon that is not accepting cannot hang
 * the command. A unix socket whose backlog is full answers EAGAIN (not
 * EINPROGRESS) and must be retried; poll() cannot wait for that.
 */
static int connect_socket(const char *path, TimeUs timeout, PfError *err)
{
    struct sockaddr_un addr;
    size_t len = strlen(path);
    TimeUs deadline = clock_mono_us() + timeout;
    char cause[128];
    int fd;

    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (len >= sizeof addr.sun_path) {
        snprintf(cause, sizeof cause, "the path is %zu bytes long, the limit is %zu bytes", len,
                 sizeof addr.sun_path - 1);
        set_connect_error(err, path, cause);
        return -1;
    }
    memcpy(addr.sun_path, path, len + 1);

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_connect_error(err, path, strerror(errno));
        return -1;
    }
    for (;;) {
        int soerr = 0;
        socklen_t soerr_len = sizeof soerr;

        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
            return fd;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            if (remaining_ms(deadline) == 0)
                break;
            poll(NULL, 0, CONNECT_RETRY_MS);
            continue;
        }
        if (errno != EINPROGRESS) {
            set_connect_error(err, path, strerror(errno));
            close(fd);
            return -1;
        }
        if (!wait_fd(fd, POLLOUT, deadline)) {
            if (errno == ETIMEDOUT)
                break;
            set_connect_error(err, path, strerror(errno));
            close(fd);
            return -1;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &soerr_len) < 0)
            soerr = errno;
        if (soerr == 0)
            return fd;
        set_connect_error(err, path, strerror(soerr));
        close(fd);
        return -1;
    }
    format_timeout(cause, sizeof cause, timeout);
    set_connect_error(err, path, cause);
    err_hint(err, "the daemon does not accept connections; is its event loop stuck?");
    close(fd);
    return -1;
}

/*
 * Reads to EOF. The timeout bounds each wait for more data, not the whole
 * transfer. Sets *code to the exit code on failure.
 */
static bool read_document(int fd, const char *path, TimeUs timeout, Buf *doc, int *code,
                          PfError *err)
{
    for (;;) {
        ssize_t n;

        buf_reserve(doc, 65536);
        n = recv(fd, doc->data + doc->len, doc->cap - doc->len - 1, 0);
        if (n > 0) {
            doc->len += (size_t)n;
            doc->data[doc->len] = '\0';
            if (doc->len > STATUS_CLIENT_MAX_DOC) {
                *code = STATUS_EXIT_BAD_DOCUMENT;
                return err_set(err, ERR_FATAL,
                               "could not read status document from \"%s\": larger than %d bytes",
                               path, STATUS_CLIENT_MAX_DOC);
            }
            continue;
        }
        if (n == 0)
            return true;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (wait_fd(fd, POLLIN, clock_mono_us() + timeout))
                continue;
            if (errno == ETIMEDOUT) {
                char cause[64];
                format_timeout(cause, sizeof cause, timeout);
                *code = STATUS_EXIT_UNREACHABLE;
                err_set(err, ERR_RETRY, "could not read status document from \"%s\": %s", path,
                        cause);
                err_hint(err, "the daemon accepted the connection but did not answer; is its "
                              "event loop stuck?");
                return false;
            }
        }
        *code = STATUS_EXIT_UNREACHABLE;
        return err_set(err, ERR_RETRY, "could not read status document from \"%s\": %s", path,
                       strerror(errno));
    }
}

/* ---- JSON syntax check ------------------------------------------------- */

typedef struct JsonCheck {
    const char *s;
    size_t len;
    size_t pos;
} JsonCheck;

static bool check_value(JsonCheck *c, int depth);

static void skip_ws(JsonCheck *c)
{
    while (c->pos < c->len && (c->s[c->pos] == ' ' || c->s[c->pos] == '\t' ||
                               c->s[c->pos] == '\n' || c->s[c->pos] == '\r'))
        c->pos++;
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_hex(char ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static bool check_string(JsonCheck *c)
{
    /* On failure pos is left at the offending byte, for the error message. */
    c->pos++; /* opening quote */
    while (c->pos < c->len) {
        unsigned char ch = (unsigned char)c->s[c->pos];
        if (ch < 0x20)
            return false;
        c->pos++;
        if (ch == '"')
            return true;
        if (ch != '\\')
            continue;
        if (c->pos >= c->len)
            return false;
        ch = (unsigned char)c->s[c->pos];
        if (ch == 'u') {
            c->pos++;
            for (int i = 0; i < 4; i++) {
                if (c->pos >= c->len || !is_hex(c->s[c->pos]))
                    return false;
                c->pos++;
            }
        } else if (ch != '\0' && strchr("\"\\/bfnrt", ch)) {
            c->pos++;
        } else {
            return false;
        }
    }
    return false;
}

static bool check_digits(JsonCheck *c)
{
    size_t start = c->pos;

    while (c->pos < c->len && is_digit(c->s[c->pos]))
        c->pos++;
    return c->pos > start;
}

static bool check_number(JsonCheck *c)
{
    if (c->s[c->pos] == '-')
        c->pos++;
    if (c->pos < c->len && c->s[c->pos] == '0')
        c->pos++;
    else if (!check_digits(c))
        return false;
    if (c->pos < c->len && c->s[c->pos] == '.') {
        c->pos++;
        if (!check_digits(c))
            return false;
    }
    if (c->pos < c->len && (c->s[c->pos] == 'e' || c->s[c->pos] == 'E')) {
        c->pos++;
        if (c->pos < c->len && (c->s[c->pos] == '+' || c->s[c->pos] == '-'))
            c->pos++;
        if (!check_digits(c))
            return false;
    }
    return true;
}

static bool check_literal(JsonCheck *c, const char *word)
{
    size_t n = strlen(word);

    if (c->len - c->pos < n || memcmp(c->s + c->pos, word, n) != 0)
        return false;
    c->pos += n;
    return true;
}

/* Object or array: open and close are the brackets, keyed says object. */
static bool check_container(JsonCheck *c, int depth, char close, bool keyed)
{
    c->pos++;
    skip_ws(c);
    if (c->pos < c->len && c->s[c->pos] == close) {
        c->pos++;
        return true;
    }
    for (;;) {
        if (keyed) {
            skip_ws(c);
            if (c->pos >= c->len || c->s[c->pos] != '"' || !check_string(c))
                return false;
            skip_ws(c);
            if (c->pos >= c->len || c->s[c->pos] != ':')
                return false;
            c->pos++;
        }
        if (!check_value(c, depth + 1))
            return false;
        if (c->pos >= c->len)
            return false;
        if (c->s[c->pos] == close) {
            c->pos++;
            return true;
        }
        if (c->s[c->pos] != ',')
            return false;
        c->pos++;
    }
}

/* Checks one value with the whitespace around it. */
static bool check_value(JsonCheck *c, int depth)
{
    bool ok;

    if (depth > JSON_MAX_DEPTH)
        return false;
    skip_ws(c);
    if (c->pos >= c->len)
        return false;
    switch (c->s[c->pos]) {
    case '{':
        ok = check_container(c, depth, '}', true);
        break;
    case '[':
        ok = check_container(c, depth, ']', false);
        break;
    case '"':
        ok = check_string(c);
        break;
    case 't':
        ok = check_literal(c, "true");
        break;
    case 'f':
        ok = check_literal(c, "false");
        break;
    case 'n':
        ok = check_literal(c, "null");
        break;
    default:
        ok = check_number(c);
        break;
    }
    skip_ws(c);
    return ok;
}

/* True when s[0..len) is exactly one JSON value; *where is the offending byte otherwise. */
static bool json_valid(const char *s, size_t len, size_t *where)
{
    JsonCheck c = {s, len, 0};

    if (check_value(&c, 0) && c.pos == len)
        return true;
    *where = c.pos;
    return false;
}

/* ---- document access (jsmn) -------------------------------------------- */

typedef struct Doc {
    const char *js;
    jsmntok_t *tok;
    int n;
} Doc;

/* Index of the token after the subtree rooted at i. */
static int tok_skip(const Doc *d, int i)
{
    int pending = 1;

    while (pending > 0 && i < d->n) {
        pending += d->tok[i].size - 1;
        i++;
    }
    return i;
}

/*
 * Appends the decoded JSON string s[0..len) (escapes resolved, UTF-8 out).
 * Control characters become spaces: they would break the table or, for ESC,
 * drive the terminal.
 */
static void decode_string(const char *s, size_t len, Buf *out)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        unsigned long cp;

        if (ch != '\\') {
            buf_append_char(out, (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch);
            continue;
        }
        ch = (unsigned char)s[++i];
        switch (ch) {
        case 'u':
            cp = strtoul((char[5]){s[i + 1], s[i + 2], s[i + 3], s[i + 4], 0}, NULL, 16);
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < len && s[i + 1] == '\\' && s[i + 2] == 'u') {
                unsigned long lo =
                    strtoul((char[5]){s[i + 3], s[i + 4], s[i + 5], s[i + 6], 0}, NULL, 16);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp = 0xFFFD; /* lone surrogate */
            if (cp < 0x20 || cp == 0x7f) {
                buf_append_char(out, ' ');
            } else if (cp < 0x80) {
                buf_append_char(out, (char)cp);
            } else if (cp < 0x800) {
                buf_append_char(out, (char)(0xC0 | (cp >> 6)));
                buf_append_char(out, (char)(0x80 | (cp & 0x3F)));
            } else if (cp < 0x10000) {
                buf_append_char(out, (char)(0xE0 | (cp >> 12)));
                buf_append_char(out, (char)(0x80 | ((cp >> 6) & 0x3F)));
                buf_append_char(out, (char)(0x80 | (cp & 0x3F)));
            } else {
                buf_append_char(out, (char)(0xF0 | (cp >> 18)));
                buf_append_char(out, (char)(0x80 | ((cp >> 12) & 0x3F)));
                buf_append_char(out, (char)(0x80 | ((cp >> 6) & 0x3F)));
                buf_append_char(out, (char)(0x80 | (cp & 0x3F)));
            }
            break;
        case '"':
        case '\\':
        case '/':
            buf_append_char(out, (char)ch);
            break;
        default: /* \b \f \n \r \t: control characters */
            buf_append_char(out, ' ');
            break;
        }
    }
}

/* Token of key in the object at obj, or -1 (also when obj is -1 or not an object). */
static int obj_get(const Doc *d, int obj, const char *key)
{
    Buf name = BUF_INIT;
    int i;
    int found = -1;

    if (obj < 0 || d->tok[obj].type != JSMN_OBJECT)
        return -1;
    i = obj + 1;
    for (int k = 0; k < d->tok[obj].size && found < 0; k++) {
        const jsmntok_t *t = &d->tok[i];
        buf_reset(&name);
        decode_string(d->js + t->start, (size_t)(t->end - t->start), &name);
        if (name.data && strcmp(name.data, key) == 0)
            found = i + 1;
        i = tok_skip(d, i + 1);
    }
    buf_free(&name);
    return found;
}

/*
 * Appends the display form of token i: strings decoded, numbers and booleans
 * as sent, "-" for a missing key, null, an empty string or a nested value.
 */
static void tok_display(const Doc *d, int i, Buf *out)
{
    size_t before = out->len;
    const jsmntok_t *t;

    if (i >= 0) {
        t = &d->tok[i];
        if (t->type == JSMN_STRING) {
            decode_string(d->js + t->start, (size_t)(t->end - t->start), out);
        } else if (t->type == JSMN_PRIMITIVE &&
                   !(t->end - t->start == 4 && memcmp(d->js + t->start, "null", 4) == 0)) {
            buf_append(out, d->js + t->start, (size_t)(t->end - t->start));
        }
    }
    if (out->len == before)
        buf_append_char(out, '-');
}

static void field(const Doc *d, int obj, const char *key, Buf *out)
{
    tok_display(d, obj_get(d, obj, key), out);
}

/* "up 12 s", "up 3 min 5 s", "up 2 h 3 min", "up 4 d 2 h". */
static void format_uptime(const Doc *d, int root, Buf *out)
{
    int i = obj_get(d, root, "uptime_seconds");
    char *end;
    double v;
    long long s;

    if (i < 0 || d->tok[i].type != JSMN_PRIMITIVE) {
        buf_append_char(out, '-');
        return;
    }
    v = strtod(d->js + d->tok[i].start, &end);
    if (end == d->js + d->tok[i].start || !isfinite(v) || v < 0 || v > 1e15) {
        buf_append_char(out, '-');
        return;
    }
    s = (long long)v;
    if (s < 60)
        buf_printf(out, "%lld s", s);
    else if (s < 3600)
        buf_printf(out, "%lld min %lld s", s / 60, s % 60);
    else if (s < 86400)
        buf_printf(out, "%lld h %lld min", s / 3600, s % 3600 / 60);
    else
        buf_printf(out, "%lld d %lld h", s / 86400, s % 86400 / 3600);
}

/* ---- table ------------------------------------------------------------- */

typedef struct Column {
    const char *title;
    const char *key;
    bool right; /* numbers are right-aligned */
} Column;

static const Column sink_columns[] = {
    {"SINK", "name", false},          {"STATE", "state", false},
    {"DURABLE", "durable_lsn", false}, {"QUEUE", "queue_depth", true},
    {"EVENTS", "events", true},       {"RETRIES", "retries", true},
    {"ERRORS", "errors", true},       {"DEAD", "dead_letters", true},
    {"LAST ERROR", "last_error", false},
};
#define N_COLUMNS (sizeof sink_columns / sizeof sink_columns[0])

/* Terminal columns taken by UTF-8 text (one per code point; good enough here). */
static size_t display_width(const char *s)
{
    size_t w = 0;

    for (; *s; s++) {
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    }
    return w;
}

static void append_cell(Buf *out, const char *text, size_t width, bool right, bool last)
{
    size_t pad = width - display_width(text);

    if (right)
        for (size_t k = 0; k < pad; k++)
            buf_append_char(out, ' ');
    buf_append_str(out, text);
    if (!right && !last)
        for (size_t k = 0; k < pad; k++)
            buf_append_char(out, ' ');
    buf_append_str(out, last ? "\n" : "  ");
}

static void render_sinks(const Doc *d, int root, Buf *out)
{
    int sinks = obj_get(d, root, "sinks");
    int n_rows = 0;
    char **cells;
    size_t width[N_COLUMNS];
    Buf text = BUF_INIT;
    int i;

    if (sinks >= 0 && d->tok[sinks].type == JSMN_ARRAY)
        n_rows = d->tok[sinks].size;
    cells = xcalloc((size_t)n_rows * N_COLUMNS + 1, sizeof *cells);
    for (size_t c = 0; c < N_COLUMNS; c++)
        width[c] = strlen(sink_columns[c].title);

    i = sinks + 1;
    for (int r = 0; r < n_rows; r++) {
        for (size_t c = 0; c < N_COLUMNS; c++) {
            char **cell = &cells[(size_t)r * N_COLUMNS + c];
            size_t w;

            buf_reset(&text);
            field(d, i, sink_columns[c].key, &text);
            *cell = xstrdup(text.data);
            w = display_width(*cell);
            if (w > width[c])
                width[c] = w;
        }
        i = tok_skip(d, i);
    }

    for (size_t c = 0; c < N_COLUMNS; c++)
        append_cell(out, sink_columns[c].title, width[c], sink_columns[c].right, c + 1 == N_COLUMNS);
    for (int r = 0; r < n_rows; r++) {
        for (size_t c = 0; c < N_COLUMNS; c++)
            append_cell(out, cells[(size_t)r * N_COLUMNS + c], width[c], sink_columns[c].right,
                        c + 1 == N_COLUMNS);
    }
    for (size_t k = 0; k < (size_t)n_rows * N_COLUMNS; k++)
        free(cells[k]);
    free(cells);
    buf_free(&text);
}

/* A byte count with its unit, or "-" when null or missing. */
static void bytes_field(const Doc *d, int obj, const char *key, Buf *out)
{
    size_t before = out->len;

    field(d, obj, key, out);
    if (strcmp(out->data + before, "-") != 0)
        buf_append_str(out, " bytes");
}

/* The slot monitor's line(s), when the daemon sends them (slot_health, heartbeat). */
static void render_slot_health(const Doc *d, Buf *out)
{
    int slot = obj_get(d, 0, "slot_health");
    int hb = obj_get(d, 0, "heartbeat");
    Buf warning = BUF_INIT;

    if (slot < 0 || d->tok[slot].type != JSMN_OBJECT)
        return;
    buf_append_str(out, "slot wal_status ");
    field(d, slot, "wal_status", out);
    buf_append_str(out, "  safe_wal_size ");
    bytes_field(d, slot, "safe_wal_size", out);
    buf_append_str(out, "  retained ");
    bytes_field(d, slot, "retained_bytes", out);
    buf_append_str(out, "  monitor ");
    field(d, slot, "monitor", out);
    if (hb >= 0 && d->tok[hb].type == JSMN_OBJECT) {
        buf_append_str(out, "  heartbeat lag ");
        field(d, hb, "lag_seconds", out);
        buf_append_str(out, " s");
    }
    buf_append_char(out, '\n');
    field(d, slot, "warning", &warning);
    if (strcmp(warning.data, "-") != 0)
        buf_printf(out, "slot warning: %s\n", warning.data);
    buf_free(&warning);
}

/* The initial snapshot's progress, when the daemon sends it: one line, then one per table. */
static void render_snapshot(const Doc *d, Buf *out)
{
    int snap = obj_get(d, 0, "snapshot");
    int tables = obj_get(d, snap, "tables");
    int i;

    if (snap < 0 || d->tok[snap].type != JSMN_OBJECT)
        return;
    buf_append_str(out, "snapshot ");
    field(d, snap, "state", out);
    buf_append_str(out, ": ");
    field(d, snap, "rows", out);
    buf_append_str(out, " of ~");
    field(d, snap, "estimated_rows", out);
    buf_append_str(out, " rows, ");
    field(d, snap, "rows_per_second", out);
    buf_append_str(out, " rows/s, ETA ");
    field(d, snap, "eta_seconds", out);
    buf_append_str(out, " s, ");
    field(d, snap, "elapsed_seconds", out);
    buf_append_str(out, " s elapsed, consistent point ");
    field(d, snap, "consistent_lsn", out);
    buf_append_char(out, '\n');
    if (tables < 0 || d->tok[tables].type != JSMN_ARRAY)
        return;
    i = tables + 1;
    for (int k = 0; k < d->tok[tables].size; k++) {
        Buf done = BUF_INIT;

        buf_append_str(out, "  ");
        field(d, i, "table", out);
        buf_append_str(out, "  ");
        field(d, i, "rows", out);
        field(d, i, "done", &done);
        if (strcmp(done.data, "true") == 0) {
            buf_append_str(out, " rows, done");
        } else {
            buf_append_str(out, " of ~");
            field(d, i, "estimated_rows", out);
            buf_append_str(out, " rows, ranges ");
            field(d, i, "ranges_done", out);
            buf_append_char(out, '/');
            field(d, i, "ranges", out);
        }
        buf_append_char(out, '\n');
        buf_free(&done);
        i = tok_skip(d, i);
    }
}

static void render_table(const Doc *d, Buf *out)
{
    Buf last = BUF_INIT;

    buf_append_str(out, "pgfan ");
    field(d, 0, "version", out);
    buf_append_str(out, " (pid ");
    field(d, 0, "pid", out);
    buf_append_str(out, ")  state: ");
    field(d, 0, "state", out);
    buf_append_str(out, "  slot: ");
    field(d, 0, "slot", out);
    buf_append_str(out, "  database: ");
    field(d, 0, "database", out);

    buf_append_str(out, "\nreceived ");
    field(d, 0, "received_lsn", out);
    buf_append_str(out, "  confirmed ");
    field(d, 0, "confirmed_lsn", out);
    buf_append_str(out, "  server end ");
    field(d, 0, "server_wal_end", out);

    buf_append_str(out, "\nlag ");
    field(d, 0, "lag_bytes", out);
    buf_append_str(out, " bytes, ");
    field(d, 0, "lag_seconds", out);
    buf_append_str(out, " s   in flight: ");
    field(d, 0, "inflight_transactions", out);
    buf_append_str(out, " transactions   up ");
    format_uptime(d, 0, out);
    buf_append_char(out, '\n');
    render_slot_health(d, out);
    render_snapshot(d, out);

    field(d, 0, "last_error", &last);
    if (strcmp(last.data, "-") != 0)
        buf_printf(out, "last error: %s\n", last.data);
    buf_free(&last);

    render_sinks(d, 0, out);
}

/* ---- command ----------------------------------------------------------- */

static void report(FILE *errout, const PfError *err)
{
    fprintf(errout, "%s\n", err->msg);
    if (err->hint[0])
        fprintf(errout, "HINT: %s\n", err->hint);
    fflush(errout);
}

/* Number at key of obj, or fallback when missing or not a number. */
static double num_field(const Doc *d, int obj, const char *key, double fallback)
{
    int i = obj_get(d, obj, key);
    char text[64];
    char *end;
    double v;
    size_t len;

    if (i < 0 || d->tok[i].type != JSMN_PRIMITIVE)
        return fallback;
    len = (size_t)(d->tok[i].end - d->tok[i].start);
    if (len == 0 || len >= sizeof text)
        return fallback;
    memcpy(text, d->js + d->tok[i].start, len);
    text[len] = '\0';
    v = strtod(text, &end);
    return *end == '\0' ? v : fallback;
}

/*
 * --check: a slot whose wal_status is unreserved (the next checkpoint may
 * invalidate it) or lost is unhealthy; appends the verdict line's text.
 */
static bool slot_unhealthy(const Doc *d, Buf *out)
{
    int slot = obj_get(d, 0, "slot_health");
    Buf status = BUF_INIT, why = BUF_INIT;
    bool bad;

    if (slot < 0 || d->tok[slot].type != JSMN_OBJECT)
        return false;
    field(d, slot, "wal_status", &status);
    bad = strcmp(status.data, "unreserved") == 0 || strcmp(status.data, "lost") == 0;
    if (bad) {
        field(d, slot, "warning", &why);
        buf_printf(out, "UNHEALTHY: slot wal_status is %s", status.data);
        if (strcmp(why.data, "-") != 0)
            buf_printf(out, ": %s", why.data);
    }
    buf_free(&status);
    buf_free(&why);
    return bad;
}

/* The health verdict of `pgfan status --check`: one line into out. */
static int check_document(const Doc *d, const StatusCheck *check, Buf *out)
{
    Buf state = BUF_INIT, detail = BUF_INIT;
    double lag_s = num_field(d, 0, "lag_seconds", 0);
    double lag_b = num_field(d, 0, "lag_bytes", 0);
    int sinks = obj_get(d, 0, "sinks");
    int code = STATUS_EXIT_UNHEALTHY;
    bool snapshot;

    field(d, 0, "state", &state);
    /* The initial snapshot is healthy work; lag limits are for the stream, which waits. */
    snapshot = strcmp(state.data, "snapshot") == 0;
    if (!snapshot && strcmp(state.data, "streaming") != 0) {
        field(d, 0, "last_error", &detail);
        buf_printf(out, "UNHEALTHY: state is %s", state.data);
        if (strcmp(detail.data, "-") != 0)
            buf_printf(out, ": %s", detail.data);
        goto done;
    }
    if (slot_unhealthy(d, out))
        goto done;
    if (sinks >= 0 && d->tok[sinks].type == JSMN_ARRAY) {
        int i = sinks + 1;
        for (int k = 0; k < d->tok[sinks].size; k++) {
            Buf name = BUF_INIT, sstate = BUF_INIT;
            bool failed;

            field(d, i, "name", &name);
            field(d, i, "state", &sstate);
            failed = strcmp(sstate.data, "failed") == 0;
            if (failed) {
                buf_reset(&detail);
                field(d, i, "last_error", &detail);
                buf_printf(out, "UNHEALTHY: sink %s failed: %s", name.data, detail.data);
            }
            buf_free(&name);
            buf_free(&sstate);
            if (failed)
                goto done;
            i = tok_skip(d, i);
        }
    }
    if (snapshot) {
        int snap = obj_get(d, 0, "snapshot");
        buf_append_str(out, "OK: initial snapshot, ");
        field(d, snap, "rows", out);
        buf_append_str(out, " of ~");
        field(d, snap, "estimated_rows", out);
        buf_append_str(out, " rows");
        code = STATUS_EXIT_OK;
        goto done;
    }
    if (check->max_lag_seconds >= 0 && lag_s > check->max_lag_seconds) {
        buf_printf(out, "UNHEALTHY: lag %.3f s exceeds --max-lag-seconds %g", lag_s,
                   check->max_lag_seconds);
        goto done;
    }
    if (check->max_lag_bytes >= 0 && lag_b > check->max_lag_bytes) {
        buf_printf(out, "UNHEALTHY: lag %.0f bytes exceeds --max-lag-bytes %.0f", lag_b,
                   check->max_lag_bytes);
        goto done;
    }
    buf_printf(out, "OK: streaming, lag %.3f s, %.0f bytes", lag_s, lag_b);
    code = STATUS_EXIT_OK;
done:
    buf_append_char(out, '\n');
    buf_free(&state);
    buf_free(&detail);
    return code;
}

/* Validates the document and renders what the mode asks for into out. */
int status_client_format(const char *path, const Buf *doc, bool json, const StatusCheck *check,
                         Buf *out, PfError *err)
{
    size_t len = doc->len;
    size_t where = 0;
    jsmn_parser parser;
    Doc d = {doc->data, NULL, 0};
    int n;

    while (len > 0 && strchr(" \t\r\n", doc->data[len - 1]))
        len--;
    if (len == 0) {
        err_set(err, ERR_FATAL,
                "could not parse status document from \"%s\": the daemon closed the connection "
                "without sending one",
                path);
        err_hint(err, "the daemon serves at most %d clients at once; try again",
                 STATUS_MAX_CLIENTS);
        return STATUS_EXIT_BAD_DOCUMENT;
    }
    if (!json_valid(doc->data, len, &where)) {
        err_set(err, ERR_FATAL, "could not parse status document from \"%s\": invalid JSON at byte %zu",
                path, where);
        return STATUS_EXIT_BAD_DOCUMENT;
    }
    jsmn_init(&parser);
    n = jsmn_parse(&parser, doc->data, len, NULL, 0);
    if (n > 0) {
        d.tok = xcalloc((size_t)n, sizeof *d.tok);
        jsmn_init(&parser);
        d.n = jsmn_parse(&parser, doc->data, len, d.tok, (unsigned)n);
    }
    if (d.n <= 0 || d.tok[0].type != JSMN_OBJECT) {
        free(d.tok);
        err_set(err, ERR_FATAL, "could not parse status document from \"%s\": not a JSON object",
                path);
        return STATUS_EXIT_BAD_DOCUMENT;
    }
    if (check) {
        int code = check_document(&d, check, out);
        free(d.tok);
        return code;
    }
    if (json) {
        buf_append(out, doc->data, len);
        buf_append_char(out, '\n');
    } else {
        render_table(&d, out);
    }
    free(d.tok);
    return STATUS_EXIT_OK;
}

int status_client_run_timeout(const char *path, bool json, const StatusCheck *check,
                              TimeUs timeout, FILE *out, FILE *errout)
{
    PfError err;
    Buf doc = BUF_INIT;
    Buf text = BUF_INIT;
    int code = STATUS_EXIT_OK;
    int fd;

    err_clear(&err);
    fd = connect_socket(path, timeout, &err);
    if (fd < 0) {
        report(errout, &err);
        return STATUS_EXIT_UNREACHABLE;
    }
    if (read_document(fd, path, timeout, &doc, &code, &err))
        code = status_client_format(path, &doc, json, check, &text, &err);
    close(fd);
    if (text.len > 0) {
        if (fwrite(text.data, 1, text.len, out) != text.len || fflush(out) != 0) {
            err_set(&err, ERR_FATAL, "could not write status output: %s", strerror(errno));
            code = STATUS_EXIT_BAD_DOCUMENT;
        }
    }
    if (code != STATUS_EXIT_OK && err.msg[0])
        report(errout, &err);
    buf_free(&doc);
    buf_free(&text);
    return code;
}

int status_client_run(const char *path, bool json, const StatusCheck *check, FILE *out,
                      FILE *errout)
{
    return status_client_run_timeout(path, json, check, STATUS_CLIENT_TIMEOUT, out, errout);
}
