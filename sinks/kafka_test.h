/*
 * kafka_test.h - test seam of the Kafka sink (kafka.c). Tests only.
 *
 * Fatal producer errors (fenced or broken idempotent producer) cannot be
 * provoked on demand through the mock cluster; librdkafka offers
 * rd_kafka_test_fatal_error() for that, which needs the sink's producer.
 */
#ifndef PGFAN_KAFKA_TEST_H
#define PGFAN_KAFKA_TEST_H

#include <librdkafka/rdkafka.h>

/* The sink's producer handle (borrowed, lives until the sink's close()). */
rd_kafka_t *kafka_sink_handle_for_tests(void *self);

/* "mock:N" only: the in-process mock cluster's bootstrap list, else NULL (borrowed). */
const char *kafka_sink_mock_bootstraps(const void *self);

#endif
