/*
 * json.h - JSON layer of the wal2json decoder: tokens, validation, strings.
 *
 * The decoder's JSON layer; besides the decoder's own .c files only the
 * Elasticsearch sink's bulk-response reader (sinks/es_response.c) uses it.
 * Everything else goes through wal2json.h.
 *
 * json_parse() tokenizes and validates one message in a single pass (strict
 * RFC 8259: one top-level object and nothing but whitespace around it), so a
 * caller walking the tokens only ever sees well-formed JSON. The tokens have
 * jsmn's layout and values (jsmntok_t with parent links: a string token spans
 * the text between its quotes, a key's size is 1 and its value's parent is
 * the key, an object's size counts its keys), in document order: the first
 * child of token p is p + 1, and a sibling's whole subtree precedes the next
 * sibling (json_skip()).
 *
 * Owns: the token array and the scratch buffer that holds unescaped strings,
 * both reused from message to message (grown, never shrunk) and released by
 * json_doc_free().
 * Borrows: the input text given to json_parse(); it must stay untouched while
 * the tokens or strings from json_string() are in use.
 * Lifetimes: a Str from json_string() points into the input or into the
 * scratch buffer and is valid until the next json_parse() or json_doc_free().
 *
 * Errors are a byte position in the input and a fixed description
 * (JsonError); the caller words the message, since it knows which message
 * it was decoding. json_snippet() quotes the input around that position.
 */
#ifndef PGFAN_DECODER_JSON_H
#define PGFAN_DECODER_JSON_H

#include "../common/buf.h"
#include "change.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * jsmn's token type only: pgfan's own tokenizer (json.c) fills it, and jsmn's
 * parser is compiled nowhere but into the differential fuzz target, as the
 * reference (tests/fuzz/json_reference.c, which includes jsmn.h itself first).
 */
#ifndef JSMN_H
#define JSMN_HEADER
#define JSMN_PARENT_LINKS
#include <jsmn.h>
#endif
#ifndef JSMN_PARENT_LINKS
#error "jsmn.h was included without JSMN_PARENT_LINKS: the token layout would not match json.c"
#endif

/* Bytes of input quoted on each side of an error position. */
#define JSON_SNIPPET_HALF 20

/* Room for json_snippet(): every byte may be written as \xNN, plus the NUL. */
#define JSON_SNIPPET_SIZE (4 * 2 * JSON_SNIPPET_HALF + 8)

typedef struct JsonDoc {
    const char *js; /* borrowed: the text of the last json_parse() */
    size_t len;
    jsmntok_t *toks; /* owned; toks[0..ntok) describe js after a successful json_parse() */
    int ntok;

    /* Private to json.c. */
    bool has_escapes; /* some string of js has a backslash: json_string() must look */
    unsigned int tok_cap;
    Buf scratch; /* unescaped strings of the current message */
} JsonDoc;

/* Where the input is wrong and how; what is a static string. */
typedef struct JsonError {
    size_t pos;
    const char *what; /* "invalid JSON", "truncated JSON", ... */
} JsonError;

void json_doc_init(JsonDoc *doc);

/*
 * Tokenizes and validates js[0..len) (not NUL-terminated; a NUL byte is
 * refused; so is a len of INT_MAX or more: tokens hold positions in int). On
 * success the tokens describe exactly one JSON object (toks[0]) and the
 * scratch buffer is emptied and sized so that json_string() never moves it.
 * Strings are checked for valid escapes here, for paired surrogates only by
 * json_string(); raw control bytes inside them other than NUL are accepted.
 */
bool json_parse(JsonDoc *doc, const char *js, size_t len, JsonError *err);

/*
 * Index of the token after token i's whole subtree. Inline because the walk
 * calls it for every member and element (a measurable share of a decode).
 */
static inline int json_skip(const JsonDoc *doc, int i)
{
    const jsmntok_t *toks = doc->toks;
    int end = toks[i].end;
    int j = i + 1;

    while (j < doc->ntok && toks[j].start < end)
        j++;
    return j;
}

/*
 * The text of string token i: a span of the input when it has no escapes,
 * otherwise unescaped (\uXXXX to UTF-8, surrogate pairs joined) into the
 * scratch buffer. Fails on an invalid escape or an unpaired surrogate.
 */
bool json_string(JsonDoc *doc, int i, Str *out, JsonError *err);

/*
 * Writes into out (JSON_SNIPPET_SIZE bytes is enough) at most
 * 2 * JSON_SNIPPET_HALF bytes of js[0..len) around pos, never cutting a UTF-8
 * sequence and writing control bytes as \xNN so a log line stays one
 * printable line.
 */
void json_snippet(const char *js, size_t len, size_t pos, char *out, size_t out_size);

void json_doc_free(JsonDoc *doc);

#endif
