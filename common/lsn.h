/*
 * lsn.h - WAL positions.
 *
 * A PostgreSQL log sequence number is a 64-bit byte position in the WAL.
 * This is the one place that knows its text form "X/X" (two hex halves);
 * nothing else shifts or prints LSNs by hand.
 */
#ifndef PGFAN_LSN_H
#define PGFAN_LSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t Lsn;

/* 0/0: "no position". PostgreSQL ignores a flush position of 0. */
#define LSN_INVALID ((Lsn)0)

/* Room for "FFFFFFFF/FFFFFFFF" and the terminating NUL. */
#define LSN_TEXT_SIZE 18

/*
 * Parses "X/X" (1-8 hex digits each side) from text[0..len). Returns false,
 * leaving *out untouched, on anything else (no trailing characters allowed).
 */
bool lsn_parse(const char *text, size_t len, Lsn *out);

/* Writes the "X/X" form of lsn into buf and returns buf. */
const char *lsn_format(Lsn lsn, char buf[LSN_TEXT_SIZE]);

#endif
