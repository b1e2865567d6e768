/*
 * test_es_harness.c - self-test of the Elasticsearch test-server helper
 * (tests/harness/es_server.h): start, request, count, stop, and the
 * failure messages of a server that cannot start.
 *
 * Needs PGFAN_TEST_ES_SERVER (tests/meson.build sets it) and python3.
 */
#include "../harness/es_server.h"

#include <check.h>
#include <curl/curl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- nested runs (as in test_harness.c) ---------------------------------- */

static int nested_run(const TTest *t, char *msg, size_t size)
{
    static const char *const vars[] = {"CK_RUN_SUITE",    "CK_RUN_CASE",          "CK_INCLUDE_TAGS",
                                       "CK_EXCLUDE_TAGS", "CK_LOG_FILE_NAME",     "CK_TAP_LOG_FILE_NAME",
                                       "CK_XML_LOG_FILE_NAME", "CK_VERBOSITY", "CK_FORK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);

    Suite *s = suite_create("nested");
    TCase *tc = tcase_create("nested");
    tcase_add_test(tc, t);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_SILENT);
    TestResult **results = srunner_results(sr);
    int type = tr_rtype(results[0]);
    snprintf(msg, size, "%s", tr_msg(results[0]) != NULL ? tr_msg(results[0]) : "");
    free(results);
    srunner_free(sr);
    return type;
}

static void expect_failure_parts(const TTest *t, const char *prefix, const char *part)
{
    char msg[8192];
    int type = nested_run(t, msg, sizeof msg);

    ck_assert_msg(type == CK_FAILURE, "%s: expected a failure, got result type %d: %s", t->name,
                  type, msg);
    ck_assert_msg(strncmp(msg, prefix, strlen(prefix)) == 0, "%s: message \"%s\" lacks prefix \"%s\"",
                  t->name, msg, prefix);
    ck_assert_msg(part == NULL || strstr(msg, part) != NULL, "%s: message \"%s\" lacks \"%s\"",
                  t->name, msg, part);
}

/* --- tests ------------------------------------------------------------------ */

START_TEST(start_request_stop)
{
    EsServer *es = h_es_start(NULL);
    long status = 0;

    ck_assert_msg(strncmp(h_es_url(es), "http://127.0.0.1:", 17) == 0, "url %s", h_es_url(es));
    char *body = h_es_request(es, "GET", "/", NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_msg(strstr(body, "\"number\":\"8.11.0\"") != NULL, "root answer: %s", body);
    free(body);

    /* any status comes back as a value, not a test failure */
    body = h_es_request(es, "GET", "/missing/_doc/1", NULL, &status);
    ck_assert_int_eq(status, 404);
    ck_assert_msg(strstr(body, "index_not_found_exception") != NULL, "answer: %s", body);
    free(body);
    body = h_es_request(es, "HEAD", "/missing", NULL, &status);
    ck_assert_int_eq(status, 404);
    ck_assert_str_eq(body, "");
    free(body);

    char url[64];
    snprintf(url, sizeof url, "%s/", h_es_url(es));
    h_es_stop(es);

    /* the port is closed once h_es_stop returns */
    CURL *curl = curl_easy_init();
    ck_assert_ptr_nonnull(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 5L);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_cleanup(curl);
    ck_assert_int_eq(rc, CURLE_COULDNT_CONNECT);
}
END_TEST

START_TEST(bulk_then_count)
{
    EsServer *es = h_es_start(NULL);
    long status = 0;

    char *body = h_es_request(
        es, "PUT", "/_index_template/orders",
        "{\"index_patterns\":[\"orders-*\"],\"template\":{\"settings\":{\"refresh_interval\":\"-1\"},"
        "\"mappings\":{\"dynamic\":\"strict\",\"properties\":{\"id\":{\"type\":\"long\"}}}}}",
        &status);
    ck_assert_msg(status == 200, "template: %ld %s", status, body);
    free(body);

    body = h_es_request(es, "POST", "/_bulk",
                        "{\"index\":{\"_index\":\"orders-1\",\"_id\":\"1\",\"version\":5,"
                        "\"version_type\":\"external\"}}\n{\"id\":1}\n"
                        "{\"index\":{\"_index\":\"orders-2\",\"_id\":\"2\"}}\n{\"id\":2}\n"
                        "{\"index\":{\"_index\":\"orders-2\",\"_id\":\"3\"}}\n{\"id\":\"x\"}\n",
                        &status);
    ck_assert_int_eq(status, 200);
    ck_assert_msg(strstr(body, "\"errors\":true") != NULL, "bulk: %s", body);
    ck_assert_msg(strstr(body, "document_parsing_exception") != NULL, "bulk: %s", body);
    free(body);

    /* refresh_interval -1: only h_es_count's refresh makes them visible */
    body = h_es_request(es, "GET", "/orders-*/_count", NULL, &status);
    ck_assert_msg(strstr(body, "\"count\":0") != NULL, "before refresh: %s", body);
    free(body);
    ck_assert_int_eq(h_es_count(es, "orders-*"), 2);
    ck_assert_int_eq(h_es_count(es, "orders-1"), 1);
    ck_assert_int_eq(h_es_count(es, "nothing-*"), 0);
    h_es_stop(es);
}
END_TEST

START_TEST(authenticated_server)
{
    const char *const args[] = {"--api-key", "dGVzdDprZXk=", NULL};
    EsServer *es = h_es_start(args);
    long status = 0;

    char *body = h_es_request(es, "GET", "/_cluster/health", NULL, &status);
    ck_assert_msg(status == 200, "with the key: %ld %s", status, body);
    ck_assert_msg(strstr(body, "\"status\":\"green\"") != NULL, "health: %s", body);
    free(body);

    /* the same request without the key is refused: the server checks */
    char url[128];
    snprintf(url, sizeof url, "%s/_cluster/health", h_es_url(es));
    CURL *curl = curl_easy_init();
    ck_assert_ptr_nonnull(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    ck_assert_int_eq(curl_easy_perform(curl), CURLE_OK);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    ck_assert_int_eq(status, 401);

    const char *const basic[] = {"--basic", "pgfan:secret", NULL};
    EsServer *es2 = h_es_start(basic);
    body = h_es_request(es2, "GET", "/", NULL, &status);
    ck_assert_msg(status == 200, "basic auth: %ld %s", status, body);
    free(body);
    h_es_stop(es2);
    h_es_stop(es);
}
END_TEST

START_TEST(count_of_missing_index_fails)
{
    EsServer *es = h_es_start(NULL);
    h_es_count(es, "missing");
}
END_TEST

START_TEST(start_with_bad_script)
{
    setenv("PGFAN_TEST_ES_SERVER", "/nonexistent/es_server.py", 1);
    h_es_start(NULL);
}
END_TEST

START_TEST(start_with_bad_argument)
{
    const char *const args[] = {"--no-such-option", NULL};
    h_es_start(args);
}
END_TEST

START_TEST(start_without_env)
{
    unsetenv("PGFAN_TEST_ES_SERVER");
    h_es_start(NULL);
}
END_TEST

START_TEST(failure_messages)
{
    expect_failure_parts(count_of_missing_index_fails,
                         "h_es_count: could not refresh missing: HTTP 404 ",
                         "index_not_found_exception");
    expect_failure_parts(start_with_bad_script,
                         "h_es_start: could not read the Elasticsearch test server "
                         "/nonexistent/es_server.py: ",
                         "No such file");
    expect_failure_parts(start_with_bad_argument,
                         "h_es_start: could not start the Elasticsearch test server: it exited "
                         "with status 2 before listening",
                         "unrecognized arguments: --no-such-option");
    expect_failure_parts(start_without_env,
                         "h_es_start: could not find the Elasticsearch test server: "
                         "PGFAN_TEST_ES_SERVER is not set",
                         NULL);
}
END_TEST

static Suite *es_harness_suite(void)
{
    Suite *s = suite_create("es_harness");
    TCase *tc = tcase_create("server");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, start_request_stop);
    tcase_add_test(tc, bulk_then_count);
    tcase_add_test(tc, authenticated_server);
    tcase_add_test(tc, failure_messages);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(es_harness_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
