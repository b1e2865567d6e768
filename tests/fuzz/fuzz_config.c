/*
 * fuzz_config.c - libFuzzer target: a configuration file.
 *
 * config_load reads a path, so the input goes to a memfd and is loaded
 * through /proc/self/fd. Valid configs are printed too (check-config),
 * which exercises every formatter and the DSN redaction.
 */
#include "../../config/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    char path[64];
    Config *cfg = NULL;
    PfError err;
    int fd = memfd_create("pgfan-fuzz", MFD_CLOEXEC);

    if (fd < 0)
        abort();
    if (!sink)
        sink = fopen("/dev/null", "w");
    if (size && write(fd, data, size) != (ssize_t)size)
        abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (config_load(path, &cfg, &err)) {
        config_print(cfg, sink);
        config_free(cfg);
    }
    close(fd);
    return 0;
}
