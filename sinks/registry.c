/*
 * registry.c - the table of implemented sinks (sink.h).
 *
 * Adding a sink means one file that defines its `const SinkOps` and one row
 * here. Each sink exports exactly that one symbol, so it is declared here
 * rather than in a header per sink.
 */
#include "sink.h"

#include <string.h>

extern const SinkOps sink_aggregates_ops;
extern const SinkOps sink_file_ops;
extern const SinkOps sink_kafka_ops;
extern const SinkOps sink_webhook_ops;
extern const SinkOps sink_elasticsearch_ops;

static const SinkOps *const sink_table[] = {
    &sink_file_ops,
    &sink_kafka_ops,
    &sink_webhook_ops,
    &sink_elasticsearch_ops,
    &sink_aggregates_ops,
};

#define N_SINKS (sizeof sink_table / sizeof sink_table[0])

const SinkOps *sink_lookup(const char *name)
{
    for (size_t i = 0; i < N_SINKS; i++) {
        if (strcmp(sink_table[i]->name, name) == 0)
            return sink_table[i];
    }
    return NULL;
}

const char *const *sink_names(void)
{
    /* Filled from the table on first use so a name lives in one place. */
    static const char *names[N_SINKS + 1];

    if (!names[0]) {
        for (size_t i = 0; i < N_SINKS; i++)
            names[i] = sink_table[i]->name;
        names[N_SINKS] = NULL;
    }
    return names;
}
