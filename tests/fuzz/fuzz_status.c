/*
 * fuzz_status.c - libFuzzer target: a status document as `pgfan status`
 * reads it from the socket, rendered in all three modes (JSON, table, check).
 */
#include "../../daemon/status_client.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    StatusCheck check = {1.5, 4096};
    Buf doc = BUF_INIT, out = BUF_INIT;
    PfError err;

    buf_append(&doc, data, size);
    for (int mode = 0; mode < 3; mode++) {
        buf_reset(&out);
        err_clear(&err);
        (void)status_client_format("fuzz", &doc, mode == 0, mode == 2 ? &check : NULL, &out, &err);
    }
    buf_free(&doc);
    buf_free(&out);
    return 0;
}
