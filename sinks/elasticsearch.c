/*
 * elasticsearch.c - the Elasticsearch sink.
 *
 * Every row change becomes one bulk action on the document whose _id is the
 * row's primary key, in the index the table's setting names (a fixed one,
 * or prefix + the UTC date of an immutable column). Writes are versioned
 * externally with the change's own LSN: a replayed or retried older write
 * is a 409 (counted as done), so replays after a crash and retries that
 * overtake each other can never move a document backwards. Deletes are
 * soft by default: the document is written again, marked
 * pgfan.deleted = true, with the delete's LSN as version, so a late older
 * write cannot resurrect it whatever index.gc_deletes says; the alias the
 * template defines filters such documents out. With deletes = hard, a
 * versioned delete is sent and Elasticsearch only remembers its version for
 * index.gc_deletes (60 s by default): a retry of an older write that comes
 * later than that recreates the document.
 *
 * An UPDATE that moves a row to another index (its routing column changed)
 * deletes it in the old index and writes it in the new one. An UPDATE that
 * left a TOASTed column alone does not carry it: it is taken from the old
 * row, which REPLICA IDENTITY FULL makes complete (prepare() refuses tables
 * that could need it without FULL).
 *
 * A TRUNCATE is a barrier: once every action before it is done, a
 * _delete_by_query removes the table's documents whose pgfan.lsn is below
 * the TRUNCATE's LSN (later ones stay), and nothing after it starts before
 * that is done.
 *
 * Start-up: the catalog (prepare) gives the column types; the ILM policy
 * and one index template per table are installed before the first bulk
 * request. Bulk requests are bounded by actions, bytes and linger time; up
 * to max_in_flight are on the wire. Per item: 2xx, 409 and 404 (delete) are
 * done; 429 and 5xx items are sent again, in a new bulk ahead of everything
 * queued, after a backoff; other 4xx (mapping errors) go to the dead-letter
 * file. Whole requests that fail with 429, 5xx, a timeout or a broken
 * connection are sent again as they were; 401/403 stop pgfan. A
 * transaction is durable when all its actions are done or dead-lettered.
 */
#include "../common/backoff.h"
#include "../common/log.h"
#include "../common/mem.h"
#include "dead_letter.h"
#include "es_internal.h"
#include "http_multi.h"
#include "txn_tracker.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define LOG_COMPONENT "sink.elasticsearch"

/* Backoff after refused requests or items: from 100 ms, doubling, at most
 * 10 s between attempts (Elasticsearch's own bulk clients stay in seconds). */
#define RETRY_MIN (100 * USECS_PER_MSEC)
#define RETRY_MAX (10 * USECS_PER_SEC)
#define RESPONSE_KEEP (64 * 1024 * 1024) /* a bulk answer is small; this only bounds a rogue one */

#define APPEND_LIT(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

/* One action in a bulk body: its lines are body[off, off + len). */
typedef struct EsItem {
    uint64_t seq; /* transaction (TxnTracker) */
    Lsn lsn;
    uint32_t table;
    bool is_delete;
    size_t off, len;
} EsItem;

/*
 * A bulk request, or a barrier: a TRUNCATE's _refresh + _delete_by_query,
 * which run alone, after everything before them is done and before
 * anything after them starts (items[0] is its one action: table, lsn,
 * transaction). The refresh comes first because _delete_by_query deletes
 * what a search sees, and a search sees only refreshed documents.
 */
typedef struct Bulk {
    struct Bulk *next;
    Buf body;
    EsItem *items;
    size_t n_items, cap;
    TimeUs opened_at;
    bool barrier;
    bool refreshed; /* barrier: the refresh before its _delete_by_query is done */
} Bulk;

typedef struct EsSink EsSink;

typedef enum SlotKind { SLOT_IDLE = 0, SLOT_BULK, SLOT_CONTROL } SlotKind;

/* One request on the wire. */
typedef struct Slot {
    EsSink *sink;
    CURL *easy;
    SlotKind kind;
    Bulk *bulk;
    Buf response;
    Buf gz;
    TimeUs started_at;
    char errbuf[CURL_ERROR_SIZE];
} Slot;

typedef enum Phase {
    PHASE_WAIT_CATALOG = 0, /* open: nothing known about the tables yet */
    PHASE_SETUP,            /* installing the ILM policy and the templates */
    PHASE_READY,
} Phase;

typedef enum CtlStep { CTL_PUT_ILM, CTL_GET_TEMPLATE, CTL_PUT_TEMPLATE } CtlStep;

struct EsSink {
    const Config *cfg;
    char *base_url;  /* without a trailing slash */
    char *shown_url; /* without user:password@ */
    EsTable *tables;
    size_t n_tables;
    Buf *templates;  /* per table, from prepare */
    char (*hashes)[17];
    bool *template_changed; /* re-prepare saw other columns: our own template is replaced */

    HttpMulti http;
    struct curl_slist *bulk_headers, *json_headers;
    Slot *slots; /* bulk requests */
    size_t n_slots;
    Slot ctl;    /* start-up requests */

    Phase phase;
    CtlStep ctl_step;
    size_t ctl_table;
    TimeUs ctl_retry_at;
    Backoff ctl_backoff;

    Bulk *open;
    Bulk *ready_head, *ready_tail;
    TimeUs pause_until; /* no bulk request starts before (backoff after failures) */
    Backoff backoff;
    size_t held_bytes;  /* bodies of every bulk held (open, ready, on the wire) */

    TxnTracker txns;
    EsResponse *response;
    DeadLetter dead_letter;
    Buf doc, index, old_index, id, line;
    bool flushing;

    /* Reloadable (es_reconfigure). */
    size_t batch_actions, batch_bytes, max_buffer;
    TimeUs linger;

    bool failed;
    PfError fatal;

    uint64_t events, bytes, retries, errors, dead_letters, conflicts;
    char last_error[256];
};

/* --- small helpers --------------------------------------------------------- */

/* Copies a message into last_error, cut to fit. */
static void set_last_error(EsSink *s, const char *msg)
{
    size_t n = strnlen(msg, sizeof s->last_error - 1);

    memcpy(s->last_error, msg, n);
    s->last_error[n] = '\0';
}

static void fail(EsSink *s, const PfError *err)
{
    if (s->failed)
        return;
    s->failed = true;
    s->fatal = *err;
    set_last_error(s, err->msg);
}

static void note_error(EsSink *s, const char *msg)
{
    set_last_error(s, msg);
}

static Bulk *bulk_new(TimeUs now)
{
    Bulk *b = xcalloc(1, sizeof *b);

    b->opened_at = now;
    return b;
}

static void bulk_free(EsSink *s, Bulk *b)
{
    s->held_bytes -= b->body.len;
    buf_free(&b->body);
    free(b->items);
    free(b);
}

static void bulk_add_item(Bulk *b, const EsItem *item)
{
    if (b->n_items == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->items = xrealloc(b->items, b->cap * sizeof *b->items);
    }
    b->items[b->n_items++] = *item;
}

static void queue_back(EsSink *s, Bulk *b)
{
    b->next = NULL;
    if (s->ready_tail)
        s->ready_tail->next = b;
    else
        s->ready_head = b;
    s->ready_tail = b;
}

static void queue_front(EsSink *s, Bulk *b)
{
    b->next = s->ready_head;
    s->ready_head = b;
    if (!s->ready_tail)
        s->ready_tail = b;
}

static void seal_open(EsSink *s)
{
    if (s->open && s->open->n_items > 0) {
        queue_back(s, s->open);
        s->open = NULL;
    }
}

/* Backs off after a failure: nothing new is sent before the delay is over. */
static void pause_after_failure(EsSink *s, TimeUs now, const char *what, const char *cause)
{
    TimeUs delay = backoff_next(&s->backoff);

    s->pause_until = now + delay;
    s->retries++;
    note_error(s, cause);
    log_warning(LOG_COMPONENT, "%s at %s failed (%s); sending again in %.1f s", what, s->shown_url,
                cause, (double)delay / USECS_PER_SEC);
}

/* --- actions --------------------------------------------------------------- */

/*
 * Appends one action to the open bulk: {"index"|"delete":{"_index",
 * "_id","version","version_type":"external"}} and, for index, the document.
 */
static void add_action(EsSink *s, uint32_t table, bool is_delete, const Buf *index,
                       const Buf *id, Lsn version, const Buf *doc, TimeUs now)
{
    Bulk *b;
    EsItem item = {.table = table, .is_delete = is_delete, .lsn = version};
    size_t before;

    if (!s->open)
        s->open = bulk_new(now);
    b = s->open;
    before = b->body.len;
    item.off = before;
    buf_append_str(&b->body, is_delete ? "{\"delete\":{\"_index\":" : "{\"index\":{\"_index\":");
    buf_append_json_string(&b->body, index->data, index->len);
    APPEND_LIT(&b->body, ",\"_id\":");
    buf_append(&b->body, id->data, id->len);
    buf_printf(&b->body, ",\"version\":%llu,\"version_type\":\"external\"}}\n",
               (unsigned long long)version);
    if (!is_delete) {
        buf_append(&b->body, doc->data, doc->len);
        buf_append_char(&b->body, '\n');
    }
    item.len = b->body.len - before;
    item.seq = txn_tracker_current(&s->txns);
    txn_tracker_sent(&s->txns, item.seq);
    bulk_add_item(b, &item);
    s->held_bytes += item.len;
    s->events++;
    if (b->n_items >= s->batch_actions || b->body.len >= s->batch_bytes)
        seal_open(s);
}

/* A TRUNCATE: a barrier after everything queued (see Bulk). */
static void add_barrier(EsSink *s, uint32_t table, Lsn lsn)
{
    Bulk *b = bulk_new(clock_mono_us());
    EsItem item = {.table = table, .lsn = lsn};

    seal_open(s);
    b->barrier = true;
    item.seq = txn_tracker_current(&s->txns);
    txn_tracker_sent(&s->txns, item.seq);
    bulk_add_item(b, &item);
    queue_back(s, b);
    s->events++;
}

/* A change pgfan cannot turn into a document goes to the dead letters. */
static bool dead_letter_change(EsSink *s, const EsTable *t, const Change *c, const char *why)
{
    Buf line = BUF_INIT;
    PfError err;
    char lsn[LSN_TEXT_SIZE];
    bool ok;

    APPEND_LIT(&line, "{\"table\":");
    buf_append_json_string(&line, t->qualified, strlen(t->qualified));
    buf_printf(&line, ",\"lsn\":\"%s\",\"op\":\"%s\",\"error\":{\"type\":\"pgfan\",\"reason\":",
               lsn_format(c->lsn, lsn), change_kind_name(c->kind));
    buf_append_json_string(&line, why, strlen(why));
    APPEND_LIT(&line, "},\"document\":");
    if (c->n_new)
        es_append_doc(&line, c->new_cols, c->n_new, NULL, 0, c->lsn, false, c->commit_time);
    else
        es_append_doc(&line, c->old_cols, c->n_old, NULL, 0, c->lsn, true, c->commit_time);
    APPEND_LIT(&line, "}\n");
    ok = dead_letter_write(&s->dead_letter, line.data, line.len, true, &err);
    buf_free(&line);
    if (!ok) {
        fail(s, &err);
        return false;
    }
    s->dead_letters++;
    log_warning(LOG_COMPONENT, "a %s change of %s at %s cannot be written (%s); written to the "
                               "dead-letter file \"%s\"",
                change_kind_name(c->kind), t->qualified, lsn, why, s->dead_letter.path);
    note_error(s, why);
    return true;
}

static int find_table(const EsSink *s, const Change *c)
{
    for (size_t i = 0; i < s->n_tables; i++) {
        if (str_eq(c->schema, s->tables[i].schema) && str_eq(c->table, s->tables[i].table))
            return (int)i;
    }
    return -1;
}

static bool submit_row(EsSink *s, const Change *c, PfError *err)
{
    int ti = find_table(s, c);
    const EsTable *t;
    const char *why = NULL;
    bool deleted = c->kind == CHANGE_DELETE;
    const Column *row = deleted ? c->old_cols : c->new_cols;
    size_t n_row = deleted ? c->n_old : c->n_new;
    TimeUs now = clock_mono_us();

    if (ti < 0)
        return true; /* not a table of ours (the stream only carries configured ones) */
    t = &s->tables[ti];

    buf_reset(&s->index);
    buf_reset(&s->id);
    if (!es_append_id(&s->id, t, row, n_row))
        return dead_letter_change(s, t, c, "the change does not carry the primary key") ||
               (*err = s->fatal, false);
    if (!es_append_index(&s->index, t, row, n_row, &why))
        return dead_letter_change(s, t, c, why) || (*err = s->fatal, false);

    if (c->kind == CHANGE_UPDATE && t->route_column && c->n_old > 0) {
        /* Moved to another day: the old document goes. */
        const char *old_why = NULL;

        buf_reset(&s->old_index);
        if (es_append_index(&s->old_index, t, c->old_cols, c->n_old, &old_why) &&
            (s->old_index.len != s->index.len ||
             memcmp(s->old_index.data, s->index.data, s->index.len) != 0)) {
            Buf old_id = BUF_INIT;

            if (es_append_id(&old_id, t, c->old_cols, c->n_old)) {
                bool hard = s->cfg->elasticsearch.deletes == ES_DELETE_HARD;

                buf_reset(&s->doc);
                if (!hard)
                    es_append_doc(&s->doc, c->old_cols, c->n_old, NULL, 0, c->lsn, true,
                                  c->commit_time);
                add_action(s, (uint32_t)ti, hard, &s->old_index, &old_id, c->lsn, &s->doc, now);
            }
            buf_free(&old_id);
        }
    }

    buf_reset(&s->doc);
    if (deleted) {
        if (s->cfg->elasticsearch.deletes == ES_DELETE_HARD) {
            add_action(s, (uint32_t)ti, true, &s->index, &s->id, c->lsn, NULL, now);
            return true;
        }
        es_append_doc(&s->doc, c->old_cols, c->n_old, NULL, 0, c->lsn, true, c->commit_time);
    } else {
        /* An UPDATE's unchanged TOAST columns come from the old row. */
        es_append_doc(&s->doc, c->new_cols, c->n_new,
                      c->kind == CHANGE_UPDATE ? c->old_cols : NULL,
                      c->kind == CHANGE_UPDATE ? c->n_old : 0, c->lsn, false, c->commit_time);
    }
    add_action(s, (uint32_t)ti, false, &s->index, &s->id, c->lsn, &s->doc, now);
    return true;
}

/* --- requests -------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    Slot *slot = arg;
    size_t n = size * nmemb;

    if (slot->response.len + n > RESPONSE_KEEP)
        return 0; /* aborts the transfer: retried */
    buf_append(&slot->response, data, n);
    return n;
}

static bool gzip_body(Buf *out, const char *data, size_t len)
{
    z_stream z;
    int rc;

    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return false;
    buf_reset(out);
    buf_reserve(out, deflateBound(&z, (uLong)len) + 1);
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out->data;
    z.avail_out = (uInt)(out->cap - 1);
    rc = deflate(&z, Z_FINISH);
    out->len = z.total_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END;
}

static bool start_request(EsSink *s, Slot *slot, const char *method, const char *path,
                          const char *body, size_t len, struct curl_slist *headers)
{
    Buf url = BUF_INIT;
    PfError err;

    buf_printf(&url, "%s%s", s->base_url, path);
    curl_easy_setopt(slot->easy, CURLOPT_URL, url.data);
    buf_free(&url);
    buf_reset(&slot->response);
    slot->errbuf[0] = '\0';
    curl_easy_setopt(slot->easy, CURLOPT_HTTPHEADER, headers);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(slot->easy, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(slot->easy, CURLOPT_HTTPGET, 1L);
    } else {
        /* libcurl reads the body while the request runs: a bulk's stays in
         * its Bulk; anything else is copied into the slot. */
        if (s->cfg->elasticsearch.gzip && slot->kind == SLOT_BULK && gzip_body(&slot->gz, body, len)) {
            body = slot->gz.data;
            len = slot->gz.len;
        } else if (slot->kind != SLOT_BULK) {
            buf_reset(&slot->gz);
            buf_append(&slot->gz, body, len);
            body = slot->gz.data ? slot->gz.data : "";
        }
        curl_easy_setopt(slot->easy, CURLOPT_POST, 1L);
        curl_easy_setopt(slot->easy, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(slot->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(slot->easy, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") ? method : NULL);
    }
    if (!http_multi_add(&s->http, slot->easy, &err)) {
        fail(s, &err);
        return false;
    }
    slot->started_at = clock_mono_us();
    s->bytes += len;
    return true;
}

static bool barrier_in_flight(const EsSink *s)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        if (s->slots[i].bulk && s->slots[i].bulk->barrier)
            return true;
    }
    return false;
}

/* True when no bulk request is on the wire. */
static bool bulks_idle(const EsSink *s)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        if (s->slots[i].kind != SLOT_IDLE)
            return false;
    }
    return true;
}

/*
 * Starts the barrier at the queue's head once nothing else is on the wire:
 * deletes the table's documents written before the TRUNCATE (pgfan.lsn
 * below its LSN); documents written after it stay. False when it has to
 * wait (or the request could not start).
 */
static bool start_barrier(EsSink *s, Slot *slot)
{
    Bulk *b = s->ready_head;
    const EsTable *t = &s->tables[b->items[0].table];
    Buf path = BUF_INIT;
    bool ok;

    if (!bulks_idle(s))
        return false;
    s->ready_head = b->next;
    if (!s->ready_head)
        s->ready_tail = NULL;
    b->next = NULL;
    slot->kind = SLOT_BULK;
    slot->bulk = b;
    s->held_bytes -= b->body.len;
    buf_reset(&b->body);
    buf_printf(&b->body, "{\"query\":{\"range\":{\"" ES_META_FIELD ".lsn\":{\"lt\":%llu}}}}",
               (unsigned long long)b->items[0].lsn);
    s->held_bytes += b->body.len;
    buf_printf(&path, "/%s%s%s/%s", t->index_prefix, t->route_column ? "*" : "",
               t->route_column ? t->index_suffix : "",
               b->refreshed ? "_delete_by_query?conflicts=proceed&refresh=true" : "_refresh");
    if (b->refreshed)
        ok = start_request(s, slot, "POST", path.data, b->body.data, b->body.len, s->json_headers);
    else
        ok = start_request(s, slot, "POST", path.data, "", 0, s->json_headers);
    buf_free(&path);
    return ok;
}

static void start_bulks(EsSink *s, TimeUs now)
{
    if (s->phase != PHASE_READY || now < s->pause_until)
        return;
    for (size_t i = 0; i < s->n_slots && s->ready_head && !s->failed; i++) {
        Slot *slot = &s->slots[i];
        Bulk *b;

        if (slot->kind != SLOT_IDLE)
            continue;
        if (barrier_in_flight(s))
            return;
        b = s->ready_head;
        if (b->barrier) {
            start_barrier(s, slot);
            return;
        }
        s->ready_head = b->next;
        if (!s->ready_head)
            s->ready_tail = NULL;
        b->next = NULL;
        slot->kind = SLOT_BULK;
        slot->bulk = b;
        if (!start_request(s, slot, "POST", "/_bulk?filter_path=errors,items.*.status,items.*.error",
                           b->body.data, b->body.len, s->bulk_headers))
            return;
    }
}

/* The answer's text for a message: one line, bounded. */
static const char *answer_text(const Slot *slot, char *out, size_t size)
{
    size_t n = 0;

    for (size_t i = 0; i < slot->response.len && n + 1 < size && n < 300; i++) {
        char c = slot->response.data[i];
        out[n++] = (c == '\n' || c == '\r') ? ' ' : c;
    }
    out[n] = '\0';
    return out;
}

static bool auth_refused(EsSink *s, long status, const Slot *slot)
{
    PfError err;
    char text[512];

    if (status != 401 && status != 403)
        return false;
    err_set(&err, ERR_FATAL, "Elasticsearch at %s refused pgfan's credentials (HTTP %ld: %s)",
            s->shown_url, status, answer_text(slot, text, sizeof text));
    err_hint(&err, status == 401
                       ? "set a valid api_key (or username and password) in [sink.elasticsearch]"
                       : "give pgfan's user the privileges create_index, index, write and "
                         "manage_index_templates (and manage_ilm with retention_days) on its "
                         "indices");
    fail(s, &err);
    return true;
}

/* Writes the refused items of a bulk to the dead-letter file. */
static bool dead_letter_item(EsSink *s, const Bulk *b, const EsItem *item,
                             const EsItemResult *res, Buf *lines)
{
    const char *action = b->body.data + item->off;
    const char *nl = memchr(action, '\n', item->len);
    size_t action_len = nl ? (size_t)(nl - action) : item->len;
    char lsn[LSN_TEXT_SIZE];
    const EsTable *t = &s->tables[item->table];

    APPEND_LIT(lines, "{\"table\":");
    buf_append_json_string(lines, t->qualified, strlen(t->qualified));
    buf_printf(lines, ",\"lsn\":\"%s\",\"status\":%d,\"error\":", lsn_format(item->lsn, lsn),
               res->status);
    if (res->error.len)
        buf_append(lines, res->error.ptr, res->error.len);
    else
        APPEND_LIT(lines, "null");
    APPEND_LIT(lines, ",\"action\":");
    buf_append(lines, action, action_len);
    APPEND_LIT(lines, ",\"document\":");
    if (item->is_delete || !nl)
        APPEND_LIT(lines, "null");
    else
        buf_append(lines, nl + 1, item->len - action_len - 2);
    APPEND_LIT(lines, "}\n");
    s->dead_letters++;
    s->errors++;
    log_warning(LOG_COMPONENT, "Elasticsearch refused a document of %s at %s (HTTP %d %.*s); "
                               "written to the dead-letter file \"%s\"",
                t->qualified, lsn, res->status, (int)res->error_type.len, res->error_type.ptr,
                s->dead_letter.path);
    return true;
}

static bool item_retryable(int status)
{
    return status == 0 || status == 408 || status == 429 || status >= 500;
}

/* "deleted":N of a _delete_by_query answer, -1 when absent. */
static long long deleted_count(const Slot *slot)
{
    const char *p = strstr(slot->response.data, "\"deleted\":");

    return p ? strtoll(p + 10, NULL, 10) : -1;
}

static void bulk_done(EsSink *s, Slot *slot, CURLcode result, long status, TimeUs now)
{
    Bulk *b = slot->bulk;
    char cause[512], text[320];

    log_debug(LOG_COMPONENT, "%s of %zu action%s (%zu bytes) answered in %.1f ms: %s %ld",
              b->barrier ? (b->refreshed ? "_delete_by_query" : "_refresh") : "bulk request",
              b->n_items,
              b->n_items == 1 ? "" : "s", b->body.len,
              (double)(now - slot->started_at) / USECS_PER_MSEC,
              result == CURLE_OK ? "HTTP" : curl_easy_strerror(result), status);
    slot->bulk = NULL;
    slot->kind = SLOT_IDLE;
    if (result != CURLE_OK) {
        snprintf(cause, sizeof cause, "%s", slot->errbuf[0] ? slot->errbuf : curl_easy_strerror(result));
        queue_front(s, b);
        pause_after_failure(s, now, "a bulk request", cause);
        return;
    }
    if (auth_refused(s, status, slot)) {
        queue_front(s, b);
        return;
    }
    if (b->barrier && !b->refreshed && (status == 200 || status == 404)) {
        b->refreshed = true; /* now the _delete_by_query */
        queue_front(s, b);
        return;
    }
    if (b->barrier && status == 404) {
        /* a fixed index that does not exist (yet): nothing to delete */
        txn_tracker_acked(&s->txns, b->items[0].seq);
        bulk_free(s, b);
        return;
    }
    if (b->barrier && status == 200 && slot->response.data &&
        strstr(slot->response.data, "\"failures\":[]")) {
        log_info(LOG_COMPONENT, "TRUNCATE of %s applied: %lld documents deleted",
                 s->tables[b->items[0].table].qualified, deleted_count(slot));
        txn_tracker_acked(&s->txns, b->items[0].seq);
        backoff_reset(&s->backoff);
        bulk_free(s, b);
        return;
    }
    if (b->barrier && (status == 200 || status == 408 || status == 429 || status >= 500)) {
        snprintf(cause, sizeof cause, "HTTP %ld: %s", status, answer_text(slot, text, sizeof text));
        queue_front(s, b);
        pause_after_failure(s, now, "deleting the documents of a TRUNCATE", cause);
        return;
    }
    if (status == 200) {
        const EsItemResult *items;
        const char *why;
        Bulk *again = NULL;
        Buf lines = BUF_INIT;
        PfError err;
        size_t n_retry = 0, n_dead = 0;

        if (!es_response_parse(s->response, slot->response.data ? slot->response.data : "",
                               slot->response.len, b->n_items, &items, &why)) {
            snprintf(cause, sizeof cause, "unreadable bulk answer: %s: %s", why,
                     answer_text(slot, text, sizeof text));
            queue_front(s, b);
            pause_after_failure(s, now, "a bulk request", cause);
            return;
        }
        for (size_t i = 0; i < b->n_items; i++) {
            const EsItem *item = &b->items[i];
            int st = items[i].status;

            if ((st >= 200 && st <= 299) || st == 409 || (st == 404 && item->is_delete)) {
                if (st == 409)
                    s->conflicts++;
                continue;
            }
            if (item_retryable(st)) {
                EsItem copy = *item;

                if (!again)
                    again = bulk_new(now);
                copy.off = again->body.len;
                buf_append(&again->body, b->body.data + item->off, item->len);
                bulk_add_item(again, &copy);
                s->held_bytes += item->len;
                n_retry++;
                continue;
            }
            dead_letter_item(s, b, item, &items[i], &lines);
            n_dead++;
        }
        if (lines.len && !dead_letter_write(&s->dead_letter, lines.data, lines.len, true, &err)) {
            buf_free(&lines);
            if (again)
                bulk_free(s, again);
            queue_front(s, b);
            fail(s, &err);
            return;
        }
        buf_free(&lines);
        /* Everything not sent again is done: acknowledge it. */
        for (size_t i = 0; i < b->n_items; i++) {
            int st = items[i].status;

            if (!item_retryable(st))
                txn_tracker_acked(&s->txns, b->items[i].seq);
        }
        if (again) {
            snprintf(cause, sizeof cause, "%zu of %zu items refused for now (HTTP %d)", n_retry,
                     b->n_items, items[0].status);
            for (size_t i = 0; i < b->n_items; i++) {
                if (item_retryable(items[i].status)) {
                    snprintf(cause, sizeof cause, "%zu of %zu items refused for now (HTTP %d)",
                             n_retry, b->n_items, items[i].status);
                    break;
                }
            }
            queue_front(s, again);
            pause_after_failure(s, now, "part of a bulk request", cause);
        } else if (n_dead == 0) {
            backoff_reset(&s->backoff);
        }
        bulk_free(s, b);
        return;
    }
    if (status == 413) {
        PfError err;

        err_set(&err, ERR_FATAL, "Elasticsearch at %s refused a bulk request of %zu bytes as too "
                                 "large (HTTP 413)",
                s->shown_url, b->body.len);
        err_hint(&err, "lower batch_bytes in [sink.elasticsearch] below the cluster's "
                       "http.max_content_length");
        queue_front(s, b);
        fail(s, &err);
        return;
    }
    if (status == 408 || status == 429 || status >= 500) {
        snprintf(cause, sizeof cause, "HTTP %ld: %s", status, answer_text(slot, text, sizeof text));
        queue_front(s, b);
        pause_after_failure(s, now, "a bulk request", cause);
        return;
    }
    {
        PfError err;

        err_set(&err, ERR_FATAL, "Elasticsearch at %s refused a whole bulk request (HTTP %ld: %s)",
                s->shown_url, status, answer_text(slot, text, sizeof text));
        err_hint(&err, "nothing of it is confirmed; check the cluster's version (8.x) and the "
                       "url in [sink.elasticsearch], then restart pgfan");
        queue_front(s, b);
        fail(s, &err);
    }
}

/* --- start-up: ILM policy and templates ------------------------------------ */

static void ctl_start(EsSink *s);

static void setup_done(EsSink *s)
{
    s->phase = PHASE_READY;
    backoff_reset(&s->ctl_backoff);
    log_info(LOG_COMPONENT, "index templates ready for %zu table%s at %s", s->n_tables,
             s->n_tables == 1 ? "" : "s", s->shown_url);
}

static void ctl_next_table(EsSink *s)
{
    s->ctl_table++;
    s->ctl_step = CTL_GET_TEMPLATE;
    if (s->ctl_table >= s->n_tables)
        setup_done(s);
    else
        ctl_start(s);
}

static void ctl_start(EsSink *s)
{
    Buf path = BUF_INIT;
    Slot *slot = &s->ctl;
    const Buf *body = NULL;
    Buf ilm = BUF_INIT;

    slot->kind = SLOT_CONTROL;
    switch (s->ctl_step) {
    case CTL_PUT_ILM:
        APPEND_LIT(&path, "/_ilm/policy/");
        es_ilm_policy_name(&path, s->cfg->elasticsearch.retention_days);
        es_ilm_policy_body(&ilm, s->cfg->elasticsearch.retention_days);
        body = &ilm;
        start_request(s, slot, "PUT", path.data, body->data, body->len, s->json_headers);
        break;
    case CTL_GET_TEMPLATE:
        buf_printf(&path, "/_index_template/%s", s->tables[s->ctl_table].template_name);
        start_request(s, slot, "GET", path.data, NULL, 0, s->json_headers);
        break;
    case CTL_PUT_TEMPLATE:
        buf_printf(&path, "/_index_template/%s", s->tables[s->ctl_table].template_name);
        body = &s->templates[s->ctl_table];
        start_request(s, slot, "PUT", path.data, body->data, body->len, s->json_headers);
        break;
    }
    buf_free(&path);
    buf_free(&ilm);
}

static void ctl_done(EsSink *s, Slot *slot, CURLcode result, long status, TimeUs now)
{
    const EsTable *t = s->ctl_table < s->n_tables ? &s->tables[s->ctl_table] : NULL;
    char text[512], cause[600];
    PfError err;

    slot->kind = SLOT_IDLE;
    if (result != CURLE_OK || status == 408 || status == 429 || status >= 500) {
        TimeUs delay = backoff_next(&s->ctl_backoff);

        if (result != CURLE_OK)
            snprintf(cause, sizeof cause, "%s",
                     slot->errbuf[0] ? slot->errbuf : curl_easy_strerror(result));
        else
            snprintf(cause, sizeof cause, "HTTP %ld: %s", status,
                     answer_text(slot, text, sizeof text));
        s->ctl_retry_at = now + delay;
        s->retries++;
        note_error(s, cause);
        log_warning(LOG_COMPONENT, "could not set up index templates at %s (%s); trying again "
                                   "in %.1f s",
                    s->shown_url, cause, (double)delay / USECS_PER_SEC);
        return;
    }
    if (auth_refused(s, status, slot))
        return;

    switch (s->ctl_step) {
    case CTL_PUT_ILM:
        if (status != 200) {
            err_set(&err, ERR_CONFIG, "Elasticsearch refused the ILM policy for retention_days "
                                      "(HTTP %ld: %s)",
                    status, answer_text(slot, text, sizeof text));
            err_hint(&err, "set retention_days = 0 on clusters without ILM, or fix the policy");
            fail(s, &err);
            return;
        }
        s->ctl_step = CTL_GET_TEMPLATE;
        ctl_start(s);
        return;
    case CTL_GET_TEMPLATE: {
        char want[64];

        if (status == 404) {
            s->ctl_step = CTL_PUT_TEMPLATE;
            ctl_start(s);
            return;
        }
        snprintf(want, sizeof want, "\"pgfan_hash\":\"%s\"", s->hashes[s->ctl_table]);
        if (status == 200 && slot->response.data && strstr(slot->response.data, want)) {
            ctl_next_table(s);
            return;
        }
        if (status == 200 && (s->cfg->elasticsearch.template_overwrite ||
                              s->template_changed[s->ctl_table])) {
            log_info(LOG_COMPONENT, "replacing index template %s (it differs from the mapping of "
                                    "%s)",
                     t->template_name, t->qualified);
            s->ctl_step = CTL_PUT_TEMPLATE;
            ctl_start(s);
            return;
        }
        if (status == 200) {
            err_set(&err, ERR_CONFIG, "index template %s already exists in Elasticsearch and "
                                      "differs from the one pgfan generates for %s",
                    t->template_name, t->qualified);
            err_hint(&err, "set template_overwrite = yes in [sink.elasticsearch] to replace it "
                           "(new indices get the new mapping), or delete it: curl -X DELETE "
                           "'%s/_index_template/%s'",
                     s->shown_url, t->template_name);
        } else {
            err_set(&err, ERR_FATAL, "could not read index template %s (HTTP %ld: %s)",
                    t->template_name, status, answer_text(slot, text, sizeof text));
        }
        fail(s, &err);
        return;
    }
    case CTL_PUT_TEMPLATE:
        if (status != 200) {
            err_set(&err, ERR_CONFIG, "Elasticsearch refused the index template %s for %s "
                                      "(HTTP %ld: %s)",
                    t->template_name, t->qualified, status, answer_text(slot, text, sizeof text));
            err_hint(&err, "an overlapping template of the same priority (200) or a setting the "
                           "cluster does not accept: fix it, or change index.%s",
                     t->qualified);
            fail(s, &err);
            return;
        }
        s->template_changed[s->ctl_table] = false;
        log_info(LOG_COMPONENT, "installed index template %s for %s", t->template_name,
                 t->qualified);
        ctl_next_table(s);
        return;
    }
}

static void on_done(void *owner, void *priv, CURL *easy, CURLcode result)
{
    EsSink *s = owner;
    Slot *slot = priv;
    long status = 0;
    TimeUs now = clock_mono_us();

    if (result == CURLE_OK)
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    buf_append_char(&slot->response, '\0'); /* for strstr; not counted */
    slot->response.len--;
    if (slot->kind == SLOT_CONTROL)
        ctl_done(s, slot, result, status, now);
    else if (slot->kind == SLOT_BULK)
        bulk_done(s, slot, result, status, now);
}

/* --- SinkOps --------------------------------------------------------------- */

static char *read_secret_file(const char *path, const char *what, PfError *err)
{
    FILE *f = fopen(path, "r");
    char buf[4096];
    size_t n;

    if (!f) {
        err_set(err, ERR_CONFIG, "could not read %s \"%s\": %s", what, path, strerror(errno));
        err_hint(err, "make the file readable by pgfan (under systemd: LoadCredential=)");
        return NULL;
    }
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (n == 0) {
        err_set(err, ERR_CONFIG, "%s \"%s\" is empty", what, path);
        return NULL;
    }
    return xstrdup(buf);
}

static bool table_listed(const Config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->source.n_tables; i++) {
        Buf q = BUF_INIT;
        bool same;

        buf_printf(&q, "%s.%s", cfg->source.tables[i].schema, cfg->source.tables[i].table);
        same = strcmp(q.data, name) == 0;
        buf_free(&q);
        if (same)
            return true;
    }
    return false;
}

/* index.*, alias.*, text.* must name [source] tables. */
static bool check_map_tables(const Config *cfg, const ConfigMap *map, const char *key, PfError *err)
{
    for (size_t i = 0; i < map->n; i++) {
        if (!table_listed(cfg, map->items[i].key)) {
            err_set(err, ERR_CONFIG, "%s.%s in [sink.elasticsearch] names a table that is not in "
                                     "[source] tables",
                    key, map->items[i].key);
            err_hint(err, "write %s.<schema>.<table> for one of the tables in [source] tables",
                     key);
            return false;
        }
    }
    return true;
}

static void split_columns(EsTable *t, const char *list)
{
    const char *p = list;

    while (*p) {
        size_t n;

        while (*p == ' ' || *p == ',')
            p++;
        n = strcspn(p, ",");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if (n > 0) {
            t->text_cols = xrealloc(t->text_cols, (t->n_text_cols + 1) * sizeof *t->text_cols);
            t->text_cols[t->n_text_cols++] = xstrndup(p, n);
        }
        p += n;
        while (*p && *p != ',')
            p++;
    }
}

static void lower_copy(char *dst, size_t size, const char *src)
{
    size_t i = 0;

    for (; src[i] && i + 1 < size; i++)
        dst[i] = (char)((src[i] >= 'A' && src[i] <= 'Z') ? src[i] - 'A' + 'a' : src[i]);
    dst[i] = '\0';
}

static void init_tables(EsSink *s, const Config *cfg)
{
    s->n_tables = cfg->source.n_tables;
    s->tables = xcalloc(s->n_tables, sizeof *s->tables);
    s->templates = xcalloc(s->n_tables, sizeof *s->templates);
    s->hashes = xcalloc(s->n_tables, sizeof *s->hashes);
    s->template_changed = xcalloc(s->n_tables, sizeof *s->template_changed);
    for (size_t i = 0; i < s->n_tables; i++) {
        EsTable *t = &s->tables[i];
        Buf q = BUF_INIT;
        const char *index, *alias, *text;
        char lower[256];

        t->schema = xstrdup(cfg->source.tables[i].schema);
        t->table = xstrdup(cfg->source.tables[i].table);
        buf_printf(&q, "%s.%s", t->schema, t->table);
        t->qualified = q.data;
        index = config_map_get(&cfg->elasticsearch.indices, t->qualified);
        lower_copy(lower, sizeof lower, t->table);
        es_table_set_index(t, index ? index : lower);
        alias = config_map_get(&cfg->elasticsearch.aliases, t->qualified);
        if (alias) {
            t->alias = xstrdup(alias);
        } else if (t->route_column) {
            t->alias = xstrdup(lower);
        } else {
            Buf a = BUF_INIT;
            buf_printf(&a, "%s-live", t->index_prefix);
            t->alias = a.data;
        }
        text = config_map_get(&cfg->elasticsearch.text_columns, t->qualified);
        if (text)
            split_columns(t, text);
        q = (Buf)BUF_INIT;
        buf_printf(&q, "pgfan-%s-%s", t->schema, t->table);
        lower_copy(lower, sizeof lower, q.data);
        buf_free(&q);
        t->template_name = xstrdup(lower);
    }
}

static void es_close(void *self);

static bool open_http(EsSink *s, const Config *cfg, Loop *loop, PfError *err)
{
    long timeout_ms = (long)(cfg->elasticsearch.timeout / USECS_PER_MSEC);
    char *api_key = NULL, *password = NULL;
    bool ok = true;

    if (cfg->elasticsearch.api_key_file) {
        api_key = read_secret_file(cfg->elasticsearch.api_key_file, "api_key_file", err);
        if (!api_key)
            return false;
    } else if (cfg->elasticsearch.api_key) {
        api_key = xstrdup(cfg->elasticsearch.api_key);
    }
    if (cfg->elasticsearch.password_file) {
        password = read_secret_file(cfg->elasticsearch.password_file, "password_file", err);
        if (!password) {
            free(api_key);
            return false;
        }
    } else if (cfg->elasticsearch.password) {
        password = xstrdup(cfg->elasticsearch.password);
    }
    if (api_key && cfg->elasticsearch.username) {
        free(api_key);
        free(password);
        err_set(err, ERR_CONFIG, "[sink.elasticsearch] sets both an API key and a username");
        err_hint(err, "use either api_key (or api_key_file) or username with password");
        return false;
    }
    if ((password != NULL) != (cfg->elasticsearch.username != NULL)) {
        free(api_key);
        free(password);
        err_set(err, ERR_CONFIG, "[sink.elasticsearch] needs username and password together");
        err_hint(err, "set both username and password (or password_file), or neither");
        return false;
    }

    if (!http_multi_open(&s->http, loop, (long)s->n_slots + 2, on_done, s, "Elasticsearch", err))
        ok = false;
    ok = ok && http_add_header(&s->bulk_headers, "Content-Type: application/x-ndjson") &&
         http_add_header(&s->bulk_headers, "Expect:") &&
         http_add_header(&s->json_headers, "Content-Type: application/json") &&
         http_add_header(&s->json_headers, "Expect:");
    if (ok && cfg->elasticsearch.gzip)
        ok = http_add_header(&s->bulk_headers, "Content-Encoding: gzip");
    if (ok && api_key) {
        Buf line = BUF_INIT;

        buf_printf(&line, "Authorization: ApiKey %s", api_key);
        ok = http_add_header(&s->bulk_headers, line.data) &&
             http_add_header(&s->json_headers, line.data);
        memset(line.data, 0, line.len);
        buf_free(&line);
    }
    for (size_t i = 0; ok && i <= s->n_slots; i++) {
        Slot *slot = i < s->n_slots ? &s->slots[i] : &s->ctl;
        CURL *e = curl_easy_init();

        if (!e) {
            ok = false;
            break;
        }
        slot->sink = s;
        slot->easy = e;
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000 ? timeout_ms : 10000L);
        curl_easy_setopt(e, CURLOPT_USERAGENT, "pgfan/" PGFAN_VERSION);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
        curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
        if (cfg->elasticsearch.ca_file)
            curl_easy_setopt(e, CURLOPT_CAINFO, cfg->elasticsearch.ca_file);
        if (cfg->elasticsearch.username) {
            curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
            curl_easy_setopt(e, CURLOPT_USERNAME, cfg->elasticsearch.username);
            curl_easy_setopt(e, CURLOPT_PASSWORD, password);
        }
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, slot);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, slot->errbuf);
        curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)slot);
    }
    if (api_key) {
        memset(api_key, 0, strlen(api_key));
        free(api_key);
    }
    if (password) {
        memset(password, 0, strlen(password));
        free(password);
    }
    if (!ok && !err->msg[0])
        err_set(err, ERR_FATAL, "could not create the Elasticsearch client: out of memory");
    return ok;
}

/* The reloadable options: bulk bounds, linger and the memory bound. */
static void es_reconfigure(void *self, const Config *cfg)
{
    EsSink *s = self;

    s->batch_actions = cfg->elasticsearch.batch_actions ? cfg->elasticsearch.batch_actions : 1000;
    s->batch_bytes = cfg->elasticsearch.batch_bytes ? cfg->elasticsearch.batch_bytes : 5 << 20;
    s->max_buffer = cfg->elasticsearch.max_buffer_bytes ? cfg->elasticsearch.max_buffer_bytes
                                                        : 64 << 20;
    s->linger = cfg->elasticsearch.batch_linger;
}

static void *es_open(const SinkContext *ctx, PfError *err)
{
    const Config *cfg = ctx->config;
    EsSink *s;
    size_t n;

    err->msg[0] = '\0';
    if (!check_map_tables(cfg, &cfg->elasticsearch.indices, "index", err) ||
        !check_map_tables(cfg, &cfg->elasticsearch.aliases, "alias", err) ||
        !check_map_tables(cfg, &cfg->elasticsearch.text_columns, "text", err))
        return NULL;
    s = xcalloc(1, sizeof *s);
    s->cfg = cfg;
    es_reconfigure(s, cfg);
    s->base_url = xstrdup(cfg->elasticsearch.url);
    n = strlen(s->base_url);
    while (n > 0 && s->base_url[n - 1] == '/')
        s->base_url[--n] = '\0';
    s->shown_url = url_without_userinfo(s->base_url);
    s->dead_letter.fd = -1;
    s->n_slots = cfg->elasticsearch.max_in_flight ? cfg->elasticsearch.max_in_flight : 1;
    s->slots = xcalloc(s->n_slots, sizeof *s->slots);
    s->ctl_retry_at = TIME_NEVER;
    backoff_init(&s->backoff, RETRY_MIN, RETRY_MAX);
    backoff_init(&s->ctl_backoff, RETRY_MIN, RETRY_MAX);
    txn_tracker_init(&s->txns);
    s->response = es_response_new();
    init_tables(s, cfg);
    if (!dead_letter_open(&s->dead_letter, cfg->elasticsearch.dead_letter, "Elasticsearch", err) ||
        !open_http(s, cfg, ctx->loop, err)) {
        es_close(s);
        return NULL;
    }
    log_info(LOG_COMPONENT, "writing to Elasticsearch at %s (%zu table%s, deletes %s)",
             s->shown_url, s->n_tables, s->n_tables == 1 ? "" : "s",
             cfg->elasticsearch.deletes == ES_DELETE_HARD ? "hard" : "soft");
    return s;
}

/* Column names of t that the identity does not carry although it must. */
static bool check_table(EsSink *s, EsTable *t, const CatalogTable *ct, PfError *err)
{
    Buf qname = BUF_INIT, toast = BUF_INIT;
    const CatalogColumn *route = NULL;
    int max_pk = 0;

    config_append_qualified(&qname, t->schema, t->table);
    for (size_t i = 0; i < ct->n_cols; i++) {
        if (ct->cols[i].pk_position > max_pk)
            max_pk = ct->cols[i].pk_position;
        if (ct->cols[i].toastable && ct->replica_identity != 'f')
            buf_printf(&toast, "%s%s", toast.len ? ", " : "", ct->cols[i].name);
    }
    if (max_pk == 0) {
        err_set(err, ERR_CONFIG, "table %s has no primary key: Elasticsearch documents need one "
                                 "for their _id",
                qname.data);
        err_hint(err, "add a primary key (ALTER TABLE %s ADD PRIMARY KEY (...)), or remove the "
                      "table from [source] tables",
                 qname.data);
        goto refuse;
    }
    for (size_t i = 0; i < t->n_pk; i++)
        free(t->pk[i]);
    free(t->pk);
    t->pk = xcalloc((size_t)max_pk, sizeof *t->pk);
    t->n_pk = (size_t)max_pk;
    for (size_t i = 0; i < ct->n_cols; i++) {
        if (ct->cols[i].pk_position > 0)
            t->pk[ct->cols[i].pk_position - 1] = xstrdup(ct->cols[i].name);
    }
    if (t->route_column) {
        route = catalog_column(ct, t->route_column);
        if (!route || (route->type_class != TYPE_TIMESTAMPTZ &&
                       route->type_class != TYPE_TIMESTAMP && route->type_class != TYPE_DATE)) {
            err_set(err, ERR_CONFIG, "index.%s routes by column \"%s\", which %s", t->qualified,
                    t->route_column, route ? "is not a date or timestamp" : "the table does not have");
            err_hint(err, "route by an immutable date/timestamp column, e.g. created_at");
            goto refuse;
        }
        if (!route->in_identity) {
            err_set(err, ERR_CONFIG, "table %s routes documents by \"%s\", but its replica "
                                     "identity does not carry that column, so a DELETE could not "
                                     "find the document's index",
                    qname.data, t->route_column);
            err_hint(err, "ALTER TABLE %s REPLICA IDENTITY FULL; (or REPLICA IDENTITY USING "
                          "INDEX on a unique index that includes %s)",
                     qname.data, t->route_column);
            goto refuse;
        }
    }
    if (toast.len) {
        err_set(err, ERR_CONFIG, "table %s has columns PostgreSQL leaves out of an UPDATE when "
                                 "they did not change (TOAST: %s); without REPLICA IDENTITY FULL "
                                 "pgfan could not write whole documents",
                qname.data, toast.data);
        err_hint(err, "ALTER TABLE %s REPLICA IDENTITY FULL;", qname.data);
        goto refuse;
    }
    for (size_t i = 0; i < t->n_text_cols; i++) {
        if (!catalog_column(ct, t->text_cols[i])) {
            err_set(err, ERR_CONFIG, "text.%s in [sink.elasticsearch] names column \"%s\", which "
                                     "the table does not have",
                    t->qualified, t->text_cols[i]);
            goto refuse;
        }
    }
    t->prepared = true;
    buf_free(&qname);
    buf_free(&toast);
    (void)s;
    return true;

refuse:
    buf_free(&qname);
    buf_free(&toast);
    return false;
}

static bool es_prepare(void *self, const Catalog *catalog, PfError *err)
{
    EsSink *s = self;
    bool changed = false;

    for (size_t i = 0; i < s->n_tables; i++) {
        EsTable *t = &s->tables[i];
        Str schema = {t->schema, strlen(t->schema)}, table = {t->table, strlen(t->table)};
        const CatalogTable *ct = catalog_find(catalog, schema, table);
        char hash[17];

        if (!ct) {
            err_set(err, ERR_CONFIG, "table %s is missing from the catalog", t->qualified);
            return false;
        }
        if (!check_table(s, t, ct, err))
            return false;
        buf_reset(&s->templates[i]);
        es_template_body(&s->templates[i], t, ct, s->cfg, hash);
        if (s->hashes[i][0] && strcmp(s->hashes[i], hash) != 0) {
            log_warning(LOG_COMPONENT, "the columns of %s changed: replacing index template %s "
                                       "(indices created from now on get the new mapping)",
                        t->qualified, t->template_name);
            s->template_changed[i] = true;
            changed = true;
        }
        memcpy(s->hashes[i], hash, sizeof hash);
    }
    if (s->phase == PHASE_WAIT_CATALOG || changed) {
        s->phase = PHASE_SETUP;
        s->ctl_table = 0;
        s->ctl_step = s->cfg->elasticsearch.retention_days > 0 ? CTL_PUT_ILM : CTL_GET_TEMPLATE;
        s->ctl_retry_at = 0; /* start in the next poll */
    }
    return true;
}

static bool es_submit(void *self, const Change *c, PfError *err)
{
    EsSink *s = self;

    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    switch (c->kind) {
    case CHANGE_BEGIN:
        txn_tracker_begin(&s->txns);
        return true;
    case CHANGE_COMMIT:
        txn_tracker_commit(&s->txns, c->end_lsn);
        return true;
    case CHANGE_INSERT:
    case CHANGE_UPDATE:
    case CHANGE_DELETE:
        return submit_row(s, c, err);
    case CHANGE_TRUNCATE: {
        int ti = find_table(s, c);

        if (ti >= 0)
            add_barrier(s, (uint32_t)ti, c->lsn);
        return true;
    }
    case CHANGE_MESSAGE:
        return true;
    }
    return true;
}

static Lsn es_durable_lsn(const void *self)
{
    const EsSink *s = self;

    return s->txns.durable;
}

static bool es_can_accept(const void *self)
{
    const EsSink *s = self;

    return !s->failed && s->phase == PHASE_READY &&
           s->held_bytes < s->max_buffer;
}

static bool es_poll(void *self, TimeUs now, TimeUs *next_deadline, PfError *err)
{
    EsSink *s = self;
    TimeUs next = TIME_NEVER;

    http_multi_run_timeouts(&s->http);
    if (s->http.failed)
        fail(s, &s->http.error);
    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    if (s->phase == PHASE_SETUP && s->ctl.kind == SLOT_IDLE) {
        if (now >= s->ctl_retry_at) {
            s->ctl_retry_at = TIME_NEVER;
            ctl_start(s);
        } else {
            next = s->ctl_retry_at;
        }
    }
    if (s->open && s->open->n_items > 0 &&
        (s->flushing || now - s->open->opened_at >= s->linger))
        seal_open(s);
    else if (s->open && s->open->n_items > 0 &&
             s->open->opened_at + s->linger < next)
        next = s->open->opened_at + s->linger;
    start_bulks(s, now);
    if (s->ready_head && s->phase == PHASE_READY && s->pause_until > now && s->pause_until < next)
        next = s->pause_until;
    if (s->http.timer < next)
        next = s->http.timer;
    txn_tracker_advance(&s->txns);
    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    *next_deadline = next;
    return true;
}

static void es_flush(void *self)
{
    EsSink *s = self;

    s->flushing = true;
    seal_open(s);
}

static void es_status(const void *self, SinkStatus *out)
{
    const EsSink *s = self;
    TimeUs now = clock_mono_us();
    size_t queued = 0;

    for (const Bulk *b = s->ready_head; b; b = b->next)
        queued += b->n_items;
    if (s->open)
        queued += s->open->n_items;
    for (size_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].bulk)
            queued += s->slots[i].bulk->n_items;
    if (s->failed)
        out->state = "failed";
    else if ((s->phase == PHASE_SETUP && s->ctl_retry_at != TIME_NEVER && s->ctl_retry_at > now) ||
             (s->ready_head && s->pause_until > now))
        out->state = "retrying";
    else if (s->phase != PHASE_READY)
        out->state = "starting";
    else if (!es_can_accept(s))
        out->state = "backpressure";
    else
        out->state = "ok";
    out->durable_lsn = s->txns.durable;
    out->queue_depth = queued;
    out->queued_bytes = s->held_bytes;
    out->events = s->events;
    out->bytes = s->bytes;
    out->retries = s->retries;
    out->errors = s->errors;
    out->dead_letters = s->dead_letters;
    snprintf(out->last_error, sizeof out->last_error, "%s", s->last_error);
}

static void free_table(EsTable *t)
{
    free(t->schema);
    free(t->table);
    free(t->qualified);
    free(t->index_prefix);
    free(t->route_column);
    free(t->route_format);
    free(t->index_suffix);
    free(t->alias);
    free(t->template_name);
    for (size_t i = 0; i < t->n_text_cols; i++)
        free(t->text_cols[i]);
    free(t->text_cols);
    for (size_t i = 0; i < t->n_pk; i++)
        free(t->pk[i]);
    free(t->pk);
}

static void free_slot(EsSink *s, Slot *slot)
{
    if (slot->easy) {
        if (slot->kind != SLOT_IDLE)
            http_multi_remove(&s->http, slot->easy);
        curl_easy_cleanup(slot->easy);
    }
    if (slot->bulk)
        bulk_free(s, slot->bulk);
    buf_free(&slot->response);
    buf_free(&slot->gz);
}

static void es_close(void *self)
{
    EsSink *s = self;

    if (!s)
        return;
    for (size_t i = 0; i < s->n_slots; i++)
        free_slot(s, &s->slots[i]);
    free_slot(s, &s->ctl);
    free(s->slots);
    http_multi_close(&s->http);
    curl_slist_free_all(s->bulk_headers);
    curl_slist_free_all(s->json_headers);
    while (s->ready_head) {
        Bulk *b = s->ready_head;
        s->ready_head = b->next;
        bulk_free(s, b);
    }
    if (s->open)
        bulk_free(s, s->open);
    for (size_t i = 0; i < s->n_tables; i++) {
        free_table(&s->tables[i]);
        buf_free(&s->templates[i]);
    }
    free(s->tables);
    free(s->templates);
    free(s->hashes);
    free(s->template_changed);
    txn_tracker_free(&s->txns);
    es_response_free(s->response);
    dead_letter_close(&s->dead_letter);
    buf_free(&s->doc);
    buf_free(&s->index);
    buf_free(&s->old_index);
    buf_free(&s->id);
    buf_free(&s->line);
    free(s->base_url);
    free(s->shown_url);
    free(s);
}

const SinkOps sink_elasticsearch_ops = {
    .name = "elasticsearch",
    .open = es_open,
    .submit = es_submit,
    .durable_lsn = es_durable_lsn,
    .can_accept = es_can_accept,
    .poll = es_poll,
    .flush = es_flush,
    .status = es_status,
    .close = es_close,
    .prepare = es_prepare,
    .reconfigure = es_reconfigure,
};
