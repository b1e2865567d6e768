/*
 * envelope.h - the JSON event every sink that carries whole events emits.
 *
 * Compatible with Debezium's PostgreSQL connector (JSON converter, schemas
 * disabled), so existing consumers can read pgfan's file lines and Kafka
 * values:
 *   {"before":null,"after":{"id":42,...},"source":{"version":"0.1.0",
 *    "connector":"pgfan","name":"shop","db":"shop","schema":"public",
 *    "table":"orders","lsn":351232112,"txId":4896,"ts_ms":1763632800000,
 *    "snapshot":"false"},"op":"c","ts_ms":1763632800123}
 * Rows of the initial snapshot have op "r" and source.snapshot "true"
 * ("last" on the final row of the whole snapshot), as Debezium's do.
 * Numeric values keep their exact digits; timestamps become ISO-8601 (UTC
 * for timestamptz); bytea becomes base64; a column the server did not send
 * (unchanged TOAST value) is absent, never null.
 */
#ifndef PGFAN_ENVELOPE_H
#define PGFAN_ENVELOPE_H

#include "../common/buf.h"
#include "../decoder/change.h"
#include "sink.h"

/*
 * Appends the envelope of a row change or truncate (INSERT, UPDATE, DELETE,
 * TRUNCATE) to out, without a trailing newline. now_wall is the processing
 * time (Unix-epoch microseconds) for the top-level ts_ms. Returns false for
 * other kinds (nothing appended).
 */
bool envelope_append(Buf *out, const Change *change, const SourceInfo *source, TimeUs now_wall);

/* Appends the Kafka-style key of a row change: the primary key (or, with
 * no primary key, the replica identity) as a JSON object, {"id":42}. */
bool envelope_append_key(Buf *out, const Change *change);

/*
 * Appends one column value as the envelope writes it: numbers and booleans
 * as bare tokens with their exact text, timestamps ISO-8601, bytea base64,
 * everything else a JSON string, NULL as null.
 */
void envelope_append_value(Buf *out, const Column *col);

#endif
