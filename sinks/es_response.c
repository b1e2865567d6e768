/*
 * es_response.c - the per-item outcome of a bulk response (es_internal.h).
 *
 * The body is {"took":..,"errors":bool,"items":[{"<action>":{"status":N,
 * "error":{"type":..,"reason":..},...}},...]} (or its filter_path subset);
 * items come in request order, which is how they are matched to actions.
 * The JSON layer is the decoder's (jsmn, validated, see decoder/json.h).
 */
#include "es_internal.h"

#include "../common/mem.h"
#include "../decoder/json.h"

#include <stdlib.h>
#include <string.h>

struct EsResponse {
    JsonDoc doc;
    EsItemResult *items;
    size_t cap;
};

EsResponse *es_response_new(void)
{
    EsResponse *r = xcalloc(1, sizeof *r);

    json_doc_init(&r->doc);
    return r;
}

void es_response_free(EsResponse *r)
{
    if (!r)
        return;
    json_doc_free(&r->doc);
    free(r->items);
    free(r);
}

static bool key_is(const JsonDoc *d, int i, const char *key)
{
    size_t n = strlen(key);

    return d->toks[i].type == JSMN_STRING && (size_t)(d->toks[i].end - d->toks[i].start) == n &&
           memcmp(d->js + d->toks[i].start, key, n) == 0;
}

/* {"status":N,"error":{...}} of one item. */
static void read_item(const JsonDoc *d, int obj, EsItemResult *out)
{
    int i = obj + 1;

    for (int m = 0; m < d->toks[obj].size; m++) {
        int value = i + 1;

        if (key_is(d, i, "status") && d->toks[value].type == JSMN_PRIMITIVE) {
            out->status = atoi(d->js + d->toks[value].start);
        } else if (key_is(d, i, "error")) {
            out->error = (Str){d->js + d->toks[value].start,
                               (size_t)(d->toks[value].end - d->toks[value].start)};
            if (d->toks[value].type == JSMN_OBJECT) {
                int j = value + 1;

                for (int k = 0; k < d->toks[value].size; k++) {
                    if (key_is(d, j, "type") && d->toks[j + 1].type == JSMN_STRING)
                        out->error_type = (Str){d->js + d->toks[j + 1].start,
                                                (size_t)(d->toks[j + 1].end -
                                                         d->toks[j + 1].start)};
                    j = json_skip(d, j + 1);
                }
            }
        }
        i = json_skip(d, value);
    }
}

bool es_response_parse(EsResponse *r, const char *body, size_t len, size_t n_items,
                       const EsItemResult **items, const char **why)
{
    JsonDoc *d = &r->doc;
    JsonError jerr;
    int i;
    size_t got = 0;
    bool seen_items = false;

    if (n_items > r->cap) {
        r->items = xrealloc(r->items, n_items * sizeof *r->items);
        r->cap = n_items;
    }
    memset(r->items, 0, n_items * sizeof *r->items);
    if (!json_parse(d, body, len, &jerr)) {
        *why = "the answer is not a JSON object";
        return false;
    }
    i = 1;
    for (int m = 0; m < d->toks[0].size; m++) {
        int value = i + 1;

        if (key_is(d, i, "items")) {
            int e = value + 1;

            if (d->toks[value].type != JSMN_ARRAY) {
                *why = "\"items\" is not an array";
                return false;
            }
            seen_items = true;
            for (int k = 0; k < d->toks[value].size; k++) {
                /* {"index":{...}}: one member whose value is the result */
                if (d->toks[e].type != JSMN_OBJECT || d->toks[e].size != 1 ||
                    d->toks[e + 2].type != JSMN_OBJECT) {
                    *why = "an item is not {\"<action>\":{...}}";
                    return false;
                }
                if (got < n_items)
                    read_item(d, e + 2, &r->items[got]);
                got++;
                e = json_skip(d, e);
            }
        }
        i = json_skip(d, value);
    }
    if (!seen_items) {
        *why = "the answer has no \"items\"";
        return false;
    }
    if (got != n_items) {
        *why = "the answer has another number of items than the request had actions";
        return false;
    }
    *items = r->items;
    return true;
}
