/*
 * kafka_conf.h - how the Kafka sink (kafka.c) configures librdkafka.
 *
 * The producer settings pgfan's guarantees rest on (idempotence, acks=all,
 * no message timeout, Java-compatible partitioning), the [sink.kafka]
 * options translated to librdkafka properties, the user's librdkafka.*
 * properties on top, and the rules for names librdkafka does not check
 * itself (brokers = mock:N, topic names). Errors are ERR_CONFIG and never
 * show the value of a secret property.
 */
#ifndef PGFAN_KAFKA_CONF_H
#define PGFAN_KAFKA_CONF_H

#include "../config/config.h"

#include <librdkafka/rdkafka.h>

/* Largest mock cluster brokers = mock:N starts. */
#define KAFKA_MOCK_MAX_BROKERS 16

/*
 * Sets every producer property on conf: bootstrap (the brokers, or the
 * mock cluster's list), pgfan's fixed settings, the [sink.kafka] options,
 * then librdkafka.* in file order. Callbacks are the caller's business.
 */
bool kafka_conf_apply(rd_kafka_conf_t *conf, const Config *cfg, const char *bootstrap,
                      PfError *err);

/* brokers = "mock:N": *count = N (1..KAFKA_MOCK_MAX_BROKERS); other values: *count = 0. */
bool kafka_conf_mock_count(const char *brokers, int *count, PfError *err);

/* Kafka's rule: 1-249 characters of a-z, A-Z, 0-9, '.', '_', '-'; not "." or "..". */
bool kafka_topic_name_valid(const char *name);

/* librdkafka's compression.codec name ("lz4"); static. */
const char *kafka_compression_name(KafkaCompression c);

#endif
