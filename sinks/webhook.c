/*
 * webhook.c - the HTTP webhook sink ([sink.webhook]).
 *
 * Output: POST requests whose body is a JSON array of envelopes
 * (envelope.h), at most batch_size per request, Content-Type
 * application/json. Every request carries
 *   Idempotency-Key: <first commit_lsn>-<first lsn>-<last lsn>   (LSNs as X/X)
 *   X-Pgfan-Signature: sha256=<hex HMAC-SHA256 of the body>      (when secret is set)
 *   User-Agent: <user_agent>
 * plus the configured header.<Name> lines. A retried batch is the same
 * bytes, so its key and signature do not change.
 *
 * Ordering: every row event goes to one of max_in_flight "lanes", chosen by
 * a hash of schema.table and the event's key (envelope_append_key), so all
 * events of one row use the same lane. A lane has at most one request in
 * flight and retries its head batch until it is done before sending the
 * next: per-key order holds with several requests in flight. A TRUNCATE
 * hashes on its table alone (no cross-lane barrier), and an UPDATE that
 * changes the key moves to the new key's lane.
 *
 * Outcomes: 2xx: the batch is done. 408, 429, 5xx, any other non-4xx
 * status, timeouts and connection errors: the same batch is retried after
 * an exponential backoff with jitter (RETRY_MIN .. RETRY_MAX, per lane),
 * never sooner than a Retry-After (seconds form) allows. Other 4xx: the
 * endpoint refuses the content, retrying cannot help: the batch is written
 * as one line to the dead-letter NDJSON file,
 *   {"status":400,"response":"<first 1 kB>","url":"...","events":[...]}
 * fsynced, counted, and then done.
 *
 * Durability: a FIFO of transactions {end_lsn, events not yet done}. An
 * event is done when its batch got a 2xx or was dead-lettered; the durable
 * position is the end_lsn of the last transaction of the longest done
 * prefix (a transaction without events is done once everything before it
 * is). Batches span transactions; each batch records how many of its
 * events belong to which transaction.
 *
 * I/O is webhook_http.c: one reused easy handle per lane on the shared
 * libcurl multi handle (http_multi.h) driven by the daemon's loop; libcurl's
 * timer only sets a deadline that poll() returns and acts on.
 *
 * Memory: can_accept() is false once batch_size * max_in_flight * 4 events
 * or MAX_QUEUED_BYTES are queued.
 */
#include "webhook_internal.h"

#include "../common/log.h"
#include "../common/mem.h"
#include "envelope.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LOG_COMPONENT "sink.webhook"

#define MAX_QUEUED_BYTES ((size_t)16 * 1024 * 1024)
/* A batch is sealed early once its body is this big: one huge row set must
 * not make one huge request. */
#define MAX_BODY_BYTES ((size_t)1024 * 1024)

static void record_error(WebhookSink *s, const char *msg)
{
    /* Cut to the status field's size on purpose: the full text is logged. */
    size_t n = strnlen(msg, sizeof s->last_error - 1);

    s->errors++;
    memcpy(s->last_error, msg, n);
    s->last_error[n] = '\0';
}

void webhook_fail(WebhookSink *s, const PfError *err)
{
    if (s->failed)
        return;
    record_error(s, err->msg);
    s->failed = true;
    s->fatal = *err;
    log_error(LOG_COMPONENT, "%s", err->msg);
}

/* Batches ------------------------------------------------------------------ */

static void batch_free(Batch *b)
{
    buf_free(&b->body);
    free(b->spans);
    free(b);
}

static void batch_seal(WebhookSink *s, Batch *b)
{
    if (!b->sealed) {
        buf_append_char(&b->body, ']');
        b->sealed = true;
        s->queued_bytes++;
    }
}

static void batch_add_span(Batch *b, uint64_t seq)
{
    if (b->n_spans > 0 && b->spans[b->n_spans - 1].seq == seq) {
        b->spans[b->n_spans - 1].count++;
        return;
    }
    b->spans = xrealloc(b->spans, (b->n_spans + 1) * sizeof *b->spans);
    b->spans[b->n_spans++] = (TxnSpan){seq, 1};
}

void webhook_lane_done(Lane *lane)
{
    WebhookSink *s = lane->sink;
    Batch *b = lane->head;

    for (size_t i = 0; i < b->n_spans; i++)
        txn_tracker_acked_n(&s->txns, b->spans[i].seq, b->spans[i].count);
    s->queued_events -= b->n_events;
    s->queued_bytes -= b->body.len;
    lane->head = b->next;
    if (!lane->head)
        lane->tail = NULL;
    batch_free(b);
    if (lane->retrying) {
        log_info(LOG_COMPONENT, "delivering to %s again after %u failed attempts", s->shown_url,
                 lane->backoff.attempts);
        lane->retrying = false;
    }
    backoff_reset(&lane->backoff);
    txn_tracker_advance(&s->txns);
}

/* Requests ----------------------------------------------------------------- */

/* Appends text[0..len) as a JSON string; a response cut at RESPONSE_KEEP
 * loses its last character when the cut split it (UTF-8). */
static void append_json_text(Buf *out, const char *text, size_t len)
{
    if (!text) {
        buf_append_json_string(out, "", 0);
        return;
    }
    if (len == RESPONSE_KEEP) {
        size_t lead = len;

        while (lead > 0 && len - lead < 4 && ((unsigned char)text[lead - 1] & 0xC0) == 0x80)
            lead--;
        if (lead > 0 && ((unsigned char)text[lead - 1] & 0x80)) {
            unsigned char c = (unsigned char)text[lead - 1];
            size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;

            if (len - (lead - 1) < need)
                len = lead - 1;
        }
    }
    buf_append_json_string(out, text, len);
}

bool webhook_dead_letter(Lane *lane, long status)
{
    WebhookSink *s = lane->sink;
    Batch *b = lane->head;
    Buf line = BUF_INIT;
    PfError err;
    bool ok;

    buf_printf(&line, "{\"status\":%ld,\"response\":", status);
    append_json_text(&line, lane->response.data, lane->response.len);
    buf_append_str(&line, ",\"url\":");
    buf_append_json_string(&line, s->shown_url, strlen(s->shown_url));
    buf_append_str(&line, ",\"events\":");
    buf_append(&line, b->body.data, b->body.len);
    buf_append_str(&line, "}\n");
    ok = dead_letter_write(&s->dead_letter, line.data, line.len, true, &err);
    buf_free(&line);
    if (!ok) {
        webhook_fail(s, &err);
        return false;
    }
    s->dead_letters++;
    log_warning(LOG_COMPONENT,
                "%s refused a batch of %zu events with HTTP %ld; written to the dead-letter "
                "file \"%s\"",
                s->shown_url, b->n_events, status, s->dead_letter.path);
    return true;
}

void webhook_lane_retry(Lane *lane, TimeUs now, const char *cause)
{
    WebhookSink *s = lane->sink;
    TimeUs delay = backoff_next(&lane->backoff);
    char msg[512];

    if (lane->retry_after_s >= 0) {
        TimeUs ra = lane->retry_after_s * USECS_PER_SEC;
        if (ra > RETRY_AFTER_MAX)
            ra = RETRY_AFTER_MAX;
        if (ra > delay)
            delay = ra;
    }
    snprintf(msg, sizeof msg, "could not deliver webhook batch to %s: %s", s->shown_url, cause);
    record_error(s, msg);
    s->retries++;
    if (!lane->retrying)
        log_warning(LOG_COMPONENT, "%s; retrying in %lld ms (nothing is lost)", msg,
                    (long long)(delay / USECS_PER_MSEC));
    else
        log_debug(LOG_COMPONENT, "%s; retry %u in %lld ms", msg, lane->backoff.attempts,
                  (long long)(delay / USECS_PER_MSEC));
    lane->retrying = true;
    lane->retry_at = now + delay;
}

/* Seals lingering batches and starts every request that may start now. */
static void pump(WebhookSink *s, TimeUs now)
{
    bool started = false;

    for (size_t i = 0; i < s->n_lanes && !s->failed; i++) {
        Lane *lane = &s->lanes[i];
        Batch *b = lane->head;

        if (lane->in_flight || !b)
            continue;
        if (!b->sealed && (s->flushing || now - b->opened_at >= s->linger))
            batch_seal(s, b);
        if (!b->sealed || (lane->retrying && now < lane->retry_at))
            continue;
        if (webhook_http_start(lane))
            started = true;
    }
    /* Kick-start new transfers now rather than one loop turn later. */
    if (started)
        webhook_http_run_timeouts(s);
}

/* Open / close ------------------------------------------------------------- */

static void webhook_close(void *self);

static bool url_is_http(const char *url)
{
    return (strncasecmp(url, "http://", 7) == 0 && url[7]) ||
           (strncasecmp(url, "https://", 8) == 0 && url[8]);
}

static bool open_dead_letter(WebhookSink *s, const Config *cfg, PfError *err)
{
    const char *path =
        cfg->webhook.dead_letter ? cfg->webhook.dead_letter : "webhook-dead-letter.ndjson";

    if (dead_letter_open(&s->dead_letter, path, "webhook", err))
        return true;
    err_hint(err, "set dead_letter in [sink.webhook] to a file pgfan may create and write");
    return false;
}

/* The reloadable options: events per request and linger (the memory bound
 * follows the batch size). Batches already open keep their size. */
static void webhook_reconfigure(void *self, const Config *cfg)
{
    WebhookSink *s = self;

    s->batch_size = cfg->webhook.batch_size ? cfg->webhook.batch_size : 10;
    s->linger = cfg->webhook.batch_linger > 0 ? cfg->webhook.batch_linger : 0;
    s->max_events = s->batch_size * s->n_lanes * 4;
}

static void *webhook_open(const SinkContext *ctx, PfError *err)
{
    const Config *cfg = ctx->config;
    WebhookSink *s;
    size_t lanes;

    if (!cfg->webhook.url || !cfg->webhook.url[0]) {
        err_set(err, ERR_CONFIG, "could not open webhook sink: no url configured");
        err_hint(err, "set url in [sink.webhook]");
        return NULL;
    }
    if (!url_is_http(cfg->webhook.url)) {
        char *shown = url_without_userinfo(cfg->webhook.url);
        err_set(err, ERR_CONFIG,
                "could not open webhook sink: url \"%s\" is not http:// or https://", shown);
        err_hint(err, "write the full URL, e.g. https://hooks.example.com/pgfan");
        free(shown);
        return NULL;
    }
    lanes = cfg->webhook.max_in_flight ? cfg->webhook.max_in_flight : 4;

    s = xcalloc(1, sizeof *s);
    txn_tracker_init(&s->txns);
    s->dead_letter.fd = -1;
    s->url = xstrdup(cfg->webhook.url);
    s->shown_url = url_without_userinfo(s->url);
    s->secret = cfg->webhook.secret ? xstrdup(cfg->webhook.secret) : NULL;
    s->source = ctx->source;
    s->loop = ctx->loop;
    s->n_lanes = lanes;
    webhook_reconfigure(s, cfg);
    s->lanes = xcalloc(lanes, sizeof *s->lanes);
    for (size_t i = 0; i < lanes; i++) {
        s->lanes[i].sink = s;
        backoff_init(&s->lanes[i].backoff, RETRY_MIN, RETRY_MAX);
    }
    buf_init(&s->scratch);
    if (!s->loop) {
        err_set(err, ERR_FATAL, "could not open webhook sink: no event loop given");
        webhook_close(s);
        return NULL;
    }
    if (!open_dead_letter(s, cfg, err) || !webhook_http_open(s, cfg, err)) {
        webhook_close(s);
        return NULL;
    }
    return s;
}

static void webhook_close(void *self)
{
    WebhookSink *s = self;

    if (!s)
        return;
    webhook_http_close(s);
    for (size_t i = 0; i < s->n_lanes; i++) {
        Lane *lane = &s->lanes[i];

        while (lane->head) {
            Batch *b = lane->head;
            lane->head = b->next;
            batch_free(b);
        }
        buf_free(&lane->response);
    }
    dead_letter_close(&s->dead_letter);
    buf_free(&s->scratch);
    free(s->lanes);
    txn_tracker_free(&s->txns);
    free(s->url);
    free(s->shown_url);
    free(s->secret);
    free(s);
}

/* Operations --------------------------------------------------------------- */

/* FNV-1a: stable across runs, so a key keeps its lane after a restart. */
static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static Lane *lane_for(WebhookSink *s, const Change *change)
{
    uint64_t h = UINT64_C(14695981039346656037);

    h = fnv1a(h, change->schema.ptr, change->schema.len);
    h = fnv1a(h, ".", 1);
    h = fnv1a(h, change->table.ptr, change->table.len);
    buf_reset(&s->scratch);
    if (envelope_append_key(&s->scratch, change)) {
        h = fnv1a(h, "", 1);
        h = fnv1a(h, s->scratch.data, s->scratch.len);
    }
    return &s->lanes[h % s->n_lanes];
}

static void take_row(WebhookSink *s, const Change *change)
{
    Lane *lane = lane_for(s, change);
    Batch *b = lane->tail;
    size_t before;
    uint64_t seq;

    /* A row without BEGIN (not sent by the pipeline) gets a transaction of
     * its own that its COMMIT will close. */
    seq = txn_tracker_current(&s->txns);
    if (!b || b->sealed) {
        b = xcalloc(1, sizeof *b);
        buf_append_char(&b->body, '[');
        b->opened_at = clock_mono_us();
        b->first_commit = change->end_lsn;
        b->first_lsn = change->lsn;
        if (lane->tail)
            lane->tail->next = b;
        else
            lane->head = b;
        lane->tail = b;
        s->queued_bytes += b->body.len;
    }
    before = b->body.len;
    if (b->n_events > 0)
        buf_append_char(&b->body, ',');
    envelope_append(&b->body, change, s->source, clock_wall_us());
    s->queued_bytes += b->body.len - before;
    b->n_events++;
    b->last_lsn = change->lsn;
    batch_add_span(b, seq);
    txn_tracker_sent(&s->txns, seq);
    s->queued_events++;
    s->events++;
    if (b->n_events >= s->batch_size || b->body.len >= MAX_BODY_BYTES)
        batch_seal(s, b);
}

static bool webhook_submit(void *self, const Change *change, PfError *err)
{
    WebhookSink *s = self;

    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    switch (change->kind) {
    case CHANGE_BEGIN:
        /* A transaction still open is abandoned (see sink.h). */
        txn_tracker_begin(&s->txns);
        return true;
    case CHANGE_INSERT:
    case CHANGE_UPDATE:
    case CHANGE_DELETE:
    case CHANGE_TRUNCATE:
        take_row(s, change);
        return true;
    case CHANGE_COMMIT:
        txn_tracker_commit(&s->txns, change->end_lsn);
        txn_tracker_advance(&s->txns);
        return true;
    case CHANGE_MESSAGE:
        return true;
    }
    return true;
}

static Lsn webhook_durable_lsn(const void *self)
{
    const WebhookSink *s = self;

    return s->txns.durable;
}

static bool webhook_can_accept(const void *self)
{
    const WebhookSink *s = self;

    return !s->failed && s->queued_events < s->max_events && s->queued_bytes < MAX_QUEUED_BYTES;
}

static bool webhook_poll(void *self, TimeUs now, TimeUs *next_deadline, PfError *err)
{
    WebhookSink *s = self;
    TimeUs deadline;

    *next_deadline = TIME_NEVER;
    if (!s->failed)
        webhook_http_run_timeouts(s);
    if (!s->failed)
        pump(s, now);
    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    deadline = s->http.timer;
    for (size_t i = 0; i < s->n_lanes; i++) {
        const Lane *lane = &s->lanes[i];
        const Batch *b = lane->head;
        TimeUs want = TIME_NEVER;

        if (lane->in_flight || !b)
            continue;
        if (lane->retrying && b->sealed)
            want = lane->retry_at;
        else if (!b->sealed)
            want = b->opened_at + s->linger;
        if (lane->retrying && want < lane->retry_at)
            want = lane->retry_at;
        if (want < deadline)
            deadline = want;
    }
    *next_deadline = deadline;
    return true;
}

static void webhook_flush(void *self)
{
    WebhookSink *s = self;

    /* Failures are kept in the sink's state and returned by the next poll. */
    if (s->failed)
        return;
    s->flushing = true;
    for (size_t i = 0; i < s->n_lanes; i++) {
        if (s->lanes[i].tail && !s->lanes[i].tail->sealed) {
            batch_seal(s, s->lanes[i].tail);
        }
    }
    pump(s, clock_mono_us());
}

static void webhook_status(const void *self, SinkStatus *out)
{
    const WebhookSink *s = self;
    bool retrying = false;

    for (size_t i = 0; i < s->n_lanes; i++)
        retrying = retrying || s->lanes[i].retrying;
    memset(out, 0, sizeof *out);
    if (s->failed)
        out->state = "failed";
    else if (retrying)
        out->state = "retrying";
    else if (!webhook_can_accept(s))
        out->state = "backpressure";
    else
        out->state = "ok";
    out->durable_lsn = s->txns.durable;
    out->queue_depth = s->queued_events;
    out->queued_bytes = s->queued_bytes;
    out->events = s->events;
    out->bytes = s->bytes;
    out->retries = s->retries;
    out->errors = s->errors;
    out->dead_letters = s->dead_letters;
    snprintf(out->last_error, sizeof out->last_error, "%s", s->last_error);
}

const SinkOps sink_webhook_ops = {
    .name = "webhook",
    .open = webhook_open,
    .submit = webhook_submit,
    .durable_lsn = webhook_durable_lsn,
    .can_accept = webhook_can_accept,
    .poll = webhook_poll,
    .flush = webhook_flush,
    .status = webhook_status,
    .close = webhook_close,
    .reconfigure = webhook_reconfigure,
};
