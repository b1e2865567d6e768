/*
 * mock_broker.c - librdkafka's mock Kafka cluster as a process of its own.
 *
 *   mock_broker BOOTSTRAP_FILE [BROKERS [TOPIC:PARTITIONS ...]]
 *
 * Starts a mock cluster of BROKERS (default 1) brokers on 127.0.0.1,
 * creates the listed topics, writes the bootstrap list ("host:port,...")
 * to BOOTSTRAP_FILE (atomically: a temporary file renamed into place, so a
 * reader never sees half of it), then serves until SIGTERM or SIGINT.
 * Integration tests use it so that what pgfan produced survives pgfan's
 * kill -9 (a mock inside pgfan dies with it). Exits 0 after a signal,
 * 1 on a start failure (reason on stderr).
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *why)
{
    fprintf(stderr, "mock_broker: could not %s: %s\n", what, why);
    return 1;
}

int main(int argc, char **argv)
{
    char why[512];
    char tmp[4096];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    sigset_t set;
    int sig, brokers = 1;
    FILE *f;

    if (argc < 2) {
        fprintf(stderr, "usage: mock_broker BOOTSTRAP_FILE [BROKERS [TOPIC:PARTITIONS ...]]\n");
        return 2;
    }
    if (argc >= 3)
        brokers = atoi(argv[2]);
    if (brokers < 1)
        return fail("start the mock cluster", "BROKERS must be at least 1");

    /* Signals are taken synchronously by sigwait below, not by handlers. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", why, sizeof why);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (rk == NULL)
        return fail("create the host handle", why);
    mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL)
        return fail("start the mock cluster", "rd_kafka_mock_cluster_new failed");
    for (int i = 3; i < argc; i++) {
        char *colon = strrchr(argv[i], ':');
        rd_kafka_resp_err_t err;

        if (colon == NULL)
            return fail("create a topic", "expected TOPIC:PARTITIONS");
        *colon = '\0';
        err = rd_kafka_mock_topic_create(mc, argv[i], atoi(colon + 1), 1);
        if (err)
            return fail("create a topic", rd_kafka_err2str(err));
    }

    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%s\n", rd_kafka_mock_cluster_bootstraps(mc)) < 0 ||
        fclose(f) != 0 || rename(tmp, argv[1]) != 0)
        return fail("write the bootstrap file", argv[1]);
    fprintf(stderr, "mock_broker: %d broker(s) at %s\n", brokers,
            rd_kafka_mock_cluster_bootstraps(mc));

    sigwait(&set, &sig);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
