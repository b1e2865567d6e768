/*
 * dead_letter.h - the NDJSON file where a sink puts what its destination
 * refused for good (webhook batches, Elasticsearch documents), so nothing
 * silently disappears. Lines are appended and fsynced before the refused
 * records count as done.
 */
#ifndef PGFAN_DEAD_LETTER_H
#define PGFAN_DEAD_LETTER_H

#include "../common/error.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct DeadLetter {
    char *path;
    const char *what; /* the sink, for messages ("webhook"); borrowed */
    int fd;           /* -1 when closed */
} DeadLetter;

/* Opens (creates, appends to) path; what names the sink in every message
 * (a string that outlives dl). ERR_CONFIG naming the file on failure. */
bool dead_letter_open(DeadLetter *dl, const char *path, const char *what, PfError *err);

/* Appends data (whole lines); with sync, fsyncs. ERR_FATAL on failure. */
bool dead_letter_write(DeadLetter *dl, const char *data, size_t len, bool sync, PfError *err);

/* Fsyncs what was written. */
bool dead_letter_sync(DeadLetter *dl, PfError *err);

void dead_letter_close(DeadLetter *dl);

/* A copy of url without a user:password@ part, for logs (caller frees). */
char *url_without_userinfo(const char *url);

#endif
