/*
 * wal2json.h - decoder for wal2json format-version 2 messages.
 *
 * Pure: no I/O, no allocation per message beyond reusable scratch owned by
 * the decoder. Each call decodes one message (one JSON object, as wal2json
 * sends one per XLogData message) into a Change whose spans point into the
 * input line or into the decoder's scratch memory; both must stay untouched
 * until the next call (see change.h).
 *
 * Numbers keep their exact text (a 40-digit numeric is passed through
 * digit for digit). A column absent from an UPDATE (unchanged TOAST) is
 * absent in the Change, never NULL.
 */
#ifndef PGFAN_WAL2JSON_H
#define PGFAN_WAL2JSON_H

#include "../common/error.h"
#include "change.h"

typedef struct W2jDecoder W2jDecoder;

/* Owned by the caller; free with w2j_free(). */
W2jDecoder *w2j_new(void);

/*
 * Decodes line[0..len) (not NUL-terminated; no trailing newline required).
 * wal_lsn is the LSN of the XLogData header that carried it, used only for
 * error context. On malformed input returns false with an ERR_FATAL error
 * whose message names the LSN and quotes a snippet of the input around the
 * problem ("could not decode wal2json message at 0/16B3748: expected ...
 * near '...'").
 */
bool w2j_decode(W2jDecoder *dec, const char *line, size_t len, Lsn wal_lsn, Change *out,
                PfError *err);

void w2j_free(W2jDecoder *dec);

#endif
