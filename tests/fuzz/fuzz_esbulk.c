/*
 * fuzz_esbulk.c - libFuzzer target: an Elasticsearch bulk answer as the
 * Elasticsearch sink reads it (sinks/es_response.c), for a request of 1 to
 * 8 actions (the first byte picks the count, the rest is the body).
 */
#include "../../sinks/es_internal.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static EsResponse *r;
    const EsItemResult *items;
    const char *why;
    size_t n_items;

    if (size < 1)
        return 0;
    if (!r)
        r = es_response_new();
    n_items = (size_t)(data[0] % 8) + 1;
    if (es_response_parse(r, (const char *)data + 1, size - 1, n_items, &items, &why)) {
        /* Every span must lie inside the input. */
        for (size_t i = 0; i < n_items; i++) {
            const char *lo = (const char *)data + 1, *hi = (const char *)data + size;

            if (items[i].error.len &&
                (items[i].error.ptr < lo || items[i].error.ptr + items[i].error.len > hi))
                __builtin_trap();
            if (items[i].error_type.len && (items[i].error_type.ptr < lo ||
                                            items[i].error_type.ptr + items[i].error_type.len > hi))
                __builtin_trap();
        }
    }
    return 0;
}
