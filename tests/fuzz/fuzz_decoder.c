/*
 * fuzz_decoder.c - libFuzzer target: one wal2json format-version 2 message.
 *
 * The input is handed over exactly as a replication message would be (not
 * NUL-terminated): the decoder must return a Change or an error, never
 * crash, never read past the end, never leak.
 */
#include "../../decoder/wal2json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static W2jDecoder *dec;
    char *copy = malloc(size ? size : 1); /* exact size: ASan catches overreads */
    Change change;
    PfError err;

    if (!dec)
        dec = w2j_new();
    memcpy(copy, data, size);
    if (w2j_decode(dec, copy, size, 0x16B3748, &change, &err)) {
        /* Touch what sinks would read. */
        for (size_t i = 0; i < change.n_new; i++)
            (void)change_kind_name(change.kind), (void)change.new_cols[i].value.text.len;
    }
    free(copy);
    return 0;
}
