/*
 * json_reference.h - the JSON layer's former parser (jsmn, then
 * check_structure()), kept for the differential fuzz target fuzz_json.c only.
 *
 * It is the code decoder/json.c used before its own tokenizer replaced it,
 * verbatim but for names: json_parse() must accept exactly what it accepts
 * and produce exactly its tokens. Nothing in pgfan links it.
 *
 * Owns: its token and cursor arrays (grown, never shrunk), released by
 * json_ref_free(). Borrows the input like json_parse().
 */
#ifndef PGFAN_FUZZ_JSON_REFERENCE_H
#define PGFAN_FUZZ_JSON_REFERENCE_H

#include "../../decoder/json.h"

typedef struct JsonRef {
    const char *js; /* borrowed */
    size_t len;
    jsmntok_t *toks; /* owned; toks[0..ntok) after a successful json_ref_parse() */
    int ntok;
    int *cursor;
    unsigned int tok_cap;
} JsonRef;

void json_ref_init(JsonRef *ref);

/* The former json_parse() without its scratch-buffer step. */
bool json_ref_parse(JsonRef *ref, const char *js, size_t len, JsonError *err);

void json_ref_free(JsonRef *ref);

#endif
