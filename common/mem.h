/*
 * mem.h - allocation that cannot fail.
 *
 * pgfan does not try to limp on after running out of memory: these abort
 * with a message instead of returning NULL. Memory is bounded by design
 * (backpressure), so an allocation failure is a bug or a misconfiguration.
 */
#ifndef PGFAN_MEM_H
#define PGFAN_MEM_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t len);

#endif
