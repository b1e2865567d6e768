/*
 * fuzz_json.c - differential libFuzzer target: the JSON layer's tokenizer
 * (decoder/json.c) against the parser it replaced (jsmn plus
 * check_structure(), kept in json_reference.c).
 *
 * Every input goes through both. They must agree on accept or reject, and on
 * an accepted input produce the same token array: the count and every
 * token's type, start, end, size and parent. The rest of the decoder, the
 * Elasticsearch bulk reader and json_skip() rely on exactly that layout. On a
 * rejected input only the verdict is compared (the descriptions follow the
 * old ones, the positions may differ), but the error must lie inside the
 * input. Accepted strings also go through json_string(), which must never
 * crash and must return a span inside the input or the scratch buffer.
 *
 * No known exception: the old parser accepts nothing that is not JSON as
 * json.h defines it (a raw control byte other than NUL inside a string is
 * accepted by both, a NUL ends the text for both).
 */
#include "json_reference.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void disagree(const char *what, const JsonDoc *doc, const JsonRef *ref, int i)
{
    fprintf(stderr, "fuzz_json: %s (token %d; ntok %d vs reference %d)\n", what, i, doc->ntok,
            ref->ntok);
    if (i >= 0 && i < doc->ntok && i < ref->ntok) {
        const jsmntok_t *a = &doc->toks[i], *b = &ref->toks[i];

        fprintf(stderr, "  new: type %d start %d end %d size %d parent %d\n", a->type, a->start,
                a->end, a->size, a->parent);
        fprintf(stderr, "  ref: type %d start %d end %d size %d parent %d\n", b->type, b->start,
                b->end, b->size, b->parent);
    }
    __builtin_trap();
}

static void compare_tokens(const JsonDoc *doc, const JsonRef *ref)
{
    if (doc->ntok != ref->ntok)
        disagree("token counts differ", doc, ref, -1);
    for (int i = 0; i < doc->ntok; i++) {
        const jsmntok_t *a = &doc->toks[i], *b = &ref->toks[i];

        if (a->type != b->type || a->start != b->start || a->end != b->end ||
            a->size != b->size || a->parent != b->parent)
            disagree("tokens differ", doc, ref, i);
    }
}

static void check_strings(JsonDoc *doc, const char *js, size_t len)
{
    for (int i = 0; i < doc->ntok; i++) {
        JsonError err;
        Str s;

        if (doc->toks[i].type != JSMN_STRING || !json_string(doc, i, &s, &err)) {
            if (doc->toks[i].type == JSMN_STRING && err.pos >= len)
                __builtin_trap();
            continue;
        }
        if (s.len > 0 && !(s.ptr >= js && s.ptr + s.len <= js + len) &&
            !(s.ptr >= doc->scratch.data && s.ptr + s.len <= doc->scratch.data + doc->scratch.len))
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Reused across inputs, as the decoder reuses its JsonDoc: grown, never shrunk. */
    static JsonDoc doc;
    static JsonRef ref;
    static bool ready;
    char *copy = malloc(size ? size : 1); /* exact size: ASan catches overreads */
    JsonError err, ref_err;
    bool ok, ref_ok;

    if (!ready) {
        json_doc_init(&doc);
        json_ref_init(&ref);
        ready = true;
    }
    memcpy(copy, data, size);
    ok = json_parse(&doc, copy, size, &err);
    ref_ok = json_ref_parse(&ref, copy, size, &ref_err);
    if (ok != ref_ok) {
        fprintf(stderr, "fuzz_json: %s accepts, reference %s\n", ok ? "new" : "reference",
                ok ? "refuses" : "accepts");
        if (!ok)
            fprintf(stderr, "  new: %s at %zu\n", err.what, err.pos);
        else
            fprintf(stderr, "  reference: %s at %zu\n", ref_err.what, ref_err.pos);
        __builtin_trap();
    }
    if (ok) {
        compare_tokens(&doc, &ref);
        check_strings(&doc, copy, size);
    } else if (err.pos > size || err.what == NULL) {
        __builtin_trap();
    }
    free(copy);
    return 0;
}
