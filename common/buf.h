/*
 * buf.h - growable byte buffer.
 *
 * The buffer owns its memory; data is always NUL-terminated (the NUL is not
 * counted in len) so it can be handed to C string functions. buf_reset()
 * keeps the allocation for reuse (per-message scratch); buf_free() releases it.
 */
#ifndef PGFAN_BUF_H
#define PGFAN_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct Buf {
    char *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
} Buf;

#define BUF_INIT {NULL, 0, 0}

void buf_init(Buf *b);
void buf_free(Buf *b);
void buf_reset(Buf *b);

/* Grows the allocation to hold len + extra bytes plus the NUL (buf_reserve's slow path). */
void buf_grow(Buf *b, size_t extra);

/* Makes room for at least extra more bytes (plus the NUL). */
static inline void buf_reserve(Buf *b, size_t extra)
{
    if (b->len + extra + 1 > b->cap)
        buf_grow(b, extra);
}

void buf_append(Buf *b, const void *data, size_t len);
void buf_append_str(Buf *b, const char *s);

/* Inline: the envelope and the escaper append single characters per value. */
static inline void buf_append_char(Buf *b, char c)
{
    buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_append_u64(Buf *b, uint64_t v);
void buf_append_i64(Buf *b, int64_t v);

/* Drops the first n bytes, moving the rest to the front. */
void buf_consume(Buf *b, size_t n);

/*
 * Appends s[0..len) as a quoted JSON string, escaping '"', '\\' and control
 * characters. Bytes >= 0x80 are copied as they are (input is UTF-8).
 */
void buf_append_json_string(Buf *b, const char *s, size_t len);

#endif
