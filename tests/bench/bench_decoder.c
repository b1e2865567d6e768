/*
 * bench_decoder.c - decode throughput of one typical wal2json v2 INSERT line.
 *
 * Not part of the test suite. Build and run:
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -o /tmp/bench_decoder tests/bench/bench_decoder.c \
 *       decoder/{change,json,values,wal2json}.c common/{buf,clock,error,lsn,mem}.c
 *   /tmp/bench_decoder [iterations]
 * The line is the 8-column orders INSERT of baseline.md section 6 (~670 bytes,
 * types and pk included), the hot path of the daemon (~40k messages/s).
 */
#include "../../common/clock.h"
#include "../../decoder/wal2json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time of this process: less disturbed than wall time on a shared machine. */
static double cpu_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char line[] =
    "{\"action\":\"I\",\"xid\":4896,\"timestamp\":\"2026-11-24 00:03:27.990693+00\",\"lsn\":\"0/"
    "14EA7070\",\"schema\":\"public\",\"table\":\"orders\",\"columns\":[{\"name\":\"id\",\"type\":"
    "\"bigint\",\"value\":9000001},{\"name\":\"store_id\",\"type\":\"integer\",\"value\":7},{"
    "\"name\":\"customer_id\",\"type\":\"bigint\",\"value\":42},{\"name\":\"status\",\"type\":"
    "\"text\",\"value\":\"pending\"},{\"name\":\"total_amount\",\"type\":\"numeric(12,2)\","
    "\"value\":129.90},{\"name\":\"currency\",\"type\":\"character(3)\",\"value\":\"EUR\"},{"
    "\"name\":\"created_at\",\"type\":\"timestamp with time zone\",\"value\":\"2026-11-20 "
    "10:00:00+00\"},{\"name\":\"updated_at\",\"type\":\"timestamp with time zone\",\"value\":"
    "\"2026-11-20 10:00:00+00\"}],\"pk\":[{\"name\":\"id\",\"type\":\"bigint\"}]}";

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 1000000;
    size_t len = strlen(line);
    W2jDecoder *dec = w2j_new();
    uint64_t check = 0;
    TimeUs start, elapsed;
    double cpu_start, cpu;
    Change ch;
    PfError err;

    /* Warm up: the first call sizes the decoder's reusable memory. */
    if (!w2j_decode(dec, line, len, 0, &ch, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    start = clock_mono_us();
    cpu_start = cpu_seconds();
    for (long i = 0; i < iterations; i++) {
        if (!w2j_decode(dec, line, len, 0, &ch, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        check += ch.n_new + ch.new_cols[3].value.text.len;
    }
    elapsed = clock_mono_us() - start;
    cpu = cpu_seconds() - cpu_start;
    printf("line %zu bytes, %ld decodes: wall %.3f s = %.0f ns/message; cpu %.3f s = %.0f "
           "ns/message, %.0f messages/s, %.1f MB/s (check %llu)\n",
           len, iterations, (double)elapsed / 1e6, (double)elapsed * 1000.0 / (double)iterations,
           cpu, cpu * 1e9 / (double)iterations, (double)iterations / cpu,
           (double)len * (double)iterations / cpu / 1e6, (unsigned long long)check);
    w2j_free(dec);
    return 0;
}
