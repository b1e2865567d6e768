/*
 * values.h - value conversions shared by the decoder and the sinks.
 *
 * Plugin-neutral helpers on the text forms PostgreSQL produces with the
 * session settings pgfan pins (DateStyle ISO, TimeZone UTC, bytea_output hex).
 */
#ifndef PGFAN_VALUES_H
#define PGFAN_VALUES_H

#include "../common/buf.h"
#include "change.h"

/* Classifies a type name as wal2json prints it ("timestamp with time zone",
 * "numeric(12,2)", "integer[]", "character varying(40)"). */
TypeClass value_type_class(Str type_name);

/*
 * Appends the ISO-8601 form of a PostgreSQL timestamp/timestamptz text:
 * "2026-11-20 10:00:00.5+00" -> "2026-11-20T10:00:00.5Z",
 * "2026-11-20 10:00:00+05:30" -> "2026-11-20T10:00:00+05:30",
 * "2026-11-20 10:00:00" (without time zone) -> "2026-11-20T10:00:00".
 * Values it cannot reshape ("infinity", BC dates) are appended unchanged.
 * Appends raw text, no quotes.
 */
void value_append_iso_timestamp(Buf *out, Str text);

/*
 * Parses a timestamptz text as above into Unix-epoch microseconds.
 * Returns false when the text is not of that form.
 */
bool value_parse_timestamptz(Str text, TimeUs *out);

/* Appends base64 (RFC 4648, with padding) of the bytes whose hex digits are
 * given (wal2json's bytea form). Returns false on odd length or a non-hex digit. */
bool value_append_base64_from_hex(Buf *out, Str hex);

#endif
