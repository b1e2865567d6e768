/*
 * webhook_http.c - the webhook sink's HTTP transport.
 *
 * The sink's HttpMulti (http_multi.h: libcurl multi in the daemon's loop,
 * keep-alive through its connection cache) and one reused easy handle per
 * lane, whose CURLOPT_PRIVATE is the lane. Finished transfers are
 * classified: 2xx done; 4xx other than 408 and 429 dead-lettered;
 * everything else (429, 408, 5xx, 1xx/3xx, timeouts, connection errors)
 * retried. TLS verification stays on.
 */
#include "webhook_internal.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    Lane *lane = arg;
    size_t n = size * nmemb;

    if (lane->response.len < RESPONSE_KEEP) {
        size_t take = RESPONSE_KEEP - lane->response.len;
        buf_append(&lane->response, data, n < take ? n : take);
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    Lane *lane = arg;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";

    /* A new status line (e.g. after 100 Continue) starts a new answer. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
        lane->retry_after_s = -1;
    if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
        const char *p = data + sizeof name - 1, *end = data + n;
        int64_t v = 0;
        bool digits = false;

        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        /* Only the delay-seconds form; an HTTP-date falls back to backoff. */
        while (p < end && *p >= '0' && *p <= '9' && v < 1000000) {
            v = v * 10 + (*p - '0');
            digits = true;
            p++;
        }
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++;
        if (digits && p == end)
            lane->retry_after_s = v;
    }
    return n;
}

static void hex_hmac_sha256(const char *key, const char *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    static const char hex[] = "0123456789abcdef";

    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)data, len, md, &md_len);
    for (unsigned int i = 0; i < md_len && i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

bool webhook_http_start(Lane *lane)
{
    WebhookSink *s = lane->sink;
    Batch *b = lane->head;
    struct curl_slist *h = NULL;
    char line[256], a[LSN_TEXT_SIZE], c[LSN_TEXT_SIZE], d[LSN_TEXT_SIZE];
    PfError err;
    bool ok = true;

    for (const struct curl_slist *p = s->base_headers; p && ok; p = p->next)
        ok = http_add_header(&h, p->data);
    snprintf(line, sizeof line, "Idempotency-Key: %s-%s-%s", lsn_format(b->first_commit, a),
             lsn_format(b->first_lsn, c), lsn_format(b->last_lsn, d));
    ok = ok && http_add_header(&h, line);
    if (ok && s->secret) {
        char sig[65];

        hex_hmac_sha256(s->secret, b->body.data, b->body.len, sig);
        snprintf(line, sizeof line, "X-Pgfan-Signature: sha256=%s", sig);
        ok = http_add_header(&h, line);
    }
    if (!ok) {
        err_set(&err, ERR_FATAL, "could not build webhook request headers: out of memory");
        webhook_fail(s, &err);
        return false;
    }
    lane->req_headers = h;
    buf_reset(&lane->response);
    lane->retry_after_s = -1;
    lane->errbuf[0] = '\0';
    curl_easy_setopt(lane->easy, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(lane->easy, CURLOPT_POSTFIELDS, b->body.data);
    curl_easy_setopt(lane->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->body.len);
    if (!http_multi_add(&s->http, lane->easy, &err)) {
        curl_slist_free_all(h);
        lane->req_headers = NULL;
        webhook_fail(s, &err);
        return false;
    }
    lane->in_flight = true;
    s->bytes += b->body.len;
    return true;
}

/* HttpMulti's on_done: the lane's request finished (its easy handle is out
 * of the multi already). Once the sink failed an answer changes nothing:
 * the batch stays unconfirmed. */
static void lane_finished(void *owner, void *private_, CURL *easy, CURLcode res)
{
    WebhookSink *s = owner;
    Lane *lane = private_;
    TimeUs now = clock_mono_us();
    long status = 0;
    char cause[384];

    curl_slist_free_all(lane->req_headers);
    lane->req_headers = NULL;
    lane->in_flight = false;
    if (s->failed)
        return;

    if (res != CURLE_OK) {
        snprintf(cause, sizeof cause, "%s",
                 lane->errbuf[0] ? lane->errbuf : curl_easy_strerror(res));
        webhook_lane_retry(lane, now, cause);
        return;
    }
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status <= 299) {
        webhook_lane_done(lane);
        return;
    }
    if (status >= 400 && status <= 499 && status != 408 && status != 429) {
        if (webhook_dead_letter(lane, status))
            webhook_lane_done(lane);
        return;
    }
    snprintf(cause, sizeof cause, "HTTP %ld: %.200s", status,
             lane->response.data ? lane->response.data : "");
    webhook_lane_retry(lane, now, cause);
}

void webhook_http_run_timeouts(WebhookSink *s)
{
    http_multi_run_timeouts(&s->http);
    if (s->http.failed)
        webhook_fail(s, &s->http.error);
}

bool webhook_http_open(WebhookSink *s, const Config *cfg, PfError *err)
{
    const char *ua = cfg->webhook.user_agent ? cfg->webhook.user_agent : "pgfan/" PGFAN_VERSION;
    long timeout_ms =
        cfg->webhook.timeout > 0 ? (long)(cfg->webhook.timeout / USECS_PER_MSEC) : 10000;
    Buf line = BUF_INIT;
    bool ok;

    if (!http_multi_open(&s->http, s->loop, (long)s->n_lanes + 1, lane_finished, s, "webhook",
                         err))
        return false;

    /* Expect: no 100-continue round trip for big bodies. */
    ok = http_add_header(&s->base_headers, "Content-Type: application/json") &&
         http_add_header(&s->base_headers, "Expect:");
    for (size_t i = 0; ok && i < cfg->webhook.headers.n; i++) {
        buf_reset(&line);
        buf_printf(&line, "%s: %s", cfg->webhook.headers.items[i].key,
                   cfg->webhook.headers.items[i].value);
        ok = http_add_header(&s->base_headers, line.data);
    }
    buf_free(&line);
    if (!ok)
        return err_set(err, ERR_FATAL, "could not create webhook client: out of memory");

    for (size_t i = 0; i < s->n_lanes; i++) {
        Lane *lane = &s->lanes[i];
        CURL *e = curl_easy_init();

        if (!e)
            return err_set(err, ERR_FATAL,
                           "could not create webhook client: curl_easy_init failed");
        lane->easy = e;
        curl_easy_setopt(e, CURLOPT_URL, s->url);
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
        curl_easy_setopt(e, CURLOPT_USERAGENT, ua);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
        if (cfg->webhook.ca_file)
            curl_easy_setopt(e, CURLOPT_CAINFO, cfg->webhook.ca_file);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, lane);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, lane);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, lane->errbuf);
        curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)lane);
    }
    return true;
}

void webhook_http_close(WebhookSink *s)
{
    for (size_t i = 0; i < s->n_lanes; i++) {
        Lane *lane = &s->lanes[i];

        if (lane->easy) {
            if (lane->in_flight)
                http_multi_remove(&s->http, lane->easy);
            curl_easy_cleanup(lane->easy);
            lane->easy = NULL;
        }
        curl_slist_free_all(lane->req_headers);
        lane->req_headers = NULL;
        lane->in_flight = false;
    }
    curl_slist_free_all(s->base_headers);
    s->base_headers = NULL;
    http_multi_close(&s->http);
}
