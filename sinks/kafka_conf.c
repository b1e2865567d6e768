/*
 * kafka_conf.c - librdkafka settings of the Kafka sink (kafka_conf.h).
 *
 * Fixed settings, and why:
 *   enable.idempotence=true, acks=all  retries keep order and never duplicate
 *                                      within a producer session
 *   message.timeout.ms=0               a record is retried until delivered,
 *                                      never dropped (protocol-notes 3.5)
 *   partitioner=murmur2_random         the Java client's key hashing, so
 *                                      pgfan and Java producers agree
 *   log.queue=true                     logs are served by rd_kafka_poll on
 *                                      our thread, not librdkafka's
 * librdkafka.* comes last and may override them (documented in README).
 */
#include "kafka_conf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC_NAME_MAX 249

/* Index = KafkaCompression. */
static const char *const compression_names[] = {"none", "gzip", "snappy", "lz4", "zstd"};

const char *kafka_compression_name(KafkaCompression c)
{
    return compression_names[c];
}

bool kafka_topic_name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > TOPIC_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (const char *p = name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    }
    return true;
}
static bool conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, bool user,
                     PfError *err)
{
    char why[512];

    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) == RD_KAFKA_CONF_OK)
        return true;
    if (user && config_map_is_secret("sink.kafka", "librdkafka", name))
        snprintf(why, sizeof why, "invalid value (not shown: it is a secret)");
    err_set(err, ERR_CONFIG, "could not configure the Kafka producer: %s%s: %s",
            user ? "librdkafka." : "", name, why);
    if (user)
        err_hint(err, "fix librdkafka.%s in [sink.kafka]; the properties are listed in "
                      "librdkafka's CONFIGURATION.md",
                 name);
    return false;
}
bool kafka_conf_mock_count(const char *brokers, int *count, PfError *err)
{
    char *end;
    long n;

    *count = 0;
    if (strncmp(brokers, "mock:", 5) != 0)
        return true;
    errno = 0;
    n = strtol(brokers + 5, &end, 10);
    if (errno != 0 || end == brokers + 5 || *end != '\0' || n < 1 || n > KAFKA_MOCK_MAX_BROKERS) {
        err_set(err, ERR_CONFIG, "could not configure the Kafka sink: brokers = \"%s\" needs a "
                "broker count from 1 to %d after \"mock:\"", brokers, KAFKA_MOCK_MAX_BROKERS);
        err_hint(err, "write brokers = mock:3 for an in-process mock cluster of 3 brokers");
        return false;
    }
    *count = (int)n;
    return true;
}
bool kafka_conf_apply(rd_kafka_conf_t *conf, const Config *cfg, const char *bootstrap,
                      PfError *err)
{
    char num[32];

    if (!conf_set(conf, "bootstrap.servers", bootstrap, false, err) ||
        !conf_set(conf, "client.id", "pgfan", false, err) ||
        !conf_set(conf, "enable.idempotence", "true", false, err) ||
        !conf_set(conf, "acks", "all", false, err) ||
        !conf_set(conf, "message.timeout.ms", "0", false, err) ||
        !conf_set(conf, "partitioner", "murmur2_random", false, err) ||
        !conf_set(conf, "compression.codec", kafka_compression_name(cfg->kafka.compression), false,
                  err) ||
        !conf_set(conf, "socket.keepalive.enable", "true", false, err) ||
        !conf_set(conf, "log.queue", "true", false, err))
        return false;
    snprintf(num, sizeof num, "%g", (double)cfg->kafka.linger / (double)USECS_PER_MSEC);
    if (!conf_set(conf, "linger.ms", num, false, err))
        return false;
    snprintf(num, sizeof num, "%zu", cfg->kafka.queue_max_messages);
    if (!conf_set(conf, "queue.buffering.max.messages", num, false, err))
        return false;
    snprintf(num, sizeof num, "%zu", cfg->kafka.queue_max_kbytes);
    if (!conf_set(conf, "queue.buffering.max.kbytes", num, false, err))
        return false;
    /* the user's properties last: they may override ours (at their own risk) */
    for (size_t i = 0; i < cfg->kafka.librdkafka.n; i++) {
        const ConfigPair *p = &cfg->kafka.librdkafka.items[i];
        if (!conf_set(conf, p->key, p->value, true, err))
            return false;
    }
    return true;
}
