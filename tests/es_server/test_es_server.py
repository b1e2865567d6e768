#!/usr/bin/env python3
"""Tests of the Elasticsearch 8 test server (tests/es_server/es_server.py)
over HTTP with http.client, one server process for the module (state reset
before each test) plus short-lived ones for auth, TLS and SIGTERM.

Expected texts are Elasticsearch 8.11's, so a change that makes the server
more lenient than Elasticsearch fails here. Waiting is done by polling with
a deadline (the gc_deletes and refresh_interval tests), never by sleeping a
fixed time.
"""

import gzip
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "es_server.py")


def start_server(*extra):
    tmp = tempfile.mkdtemp(prefix="es-test-")
    port_file = os.path.join(tmp, "port")
    with open(os.path.join(tmp, "log"), "w") as log:
        proc = subprocess.Popen([sys.executable, SERVER, "--port", "0", "--port-file", port_file]
                                + list(extra), stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if os.path.exists(port_file):
            with open(port_file) as f:
                return proc, int(f.read()), tmp
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("es_server did not start: " + open(os.path.join(tmp, "log")).read())


def stop_server(proc, tmp):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


class Client:
    def __init__(self, port, tls_context=None):
        if tls_context is not None:
            self.conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30,
                                                    context=tls_context)
        else:
            self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def req(self, method, path, body=None, ctype=None, headers=None):
        """(status, parsed JSON or None, raw bytes, response headers)."""
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        if body is not None and ctype is None:
            ctype = "application/x-ndjson" if "_bulk" in path else "application/json"
        if ctype:
            hdrs["Content-Type"] = ctype
        self.conn.request(method, path, body=body, headers=hdrs)
        resp = self.conn.getresponse()
        raw = resp.read()
        parsed = None
        if raw and (resp.getheader("Content-Type") or "").startswith("application/json"):
            parsed = json.loads(raw)
        return resp.status, parsed, raw, resp

    def close(self):
        self.conn.close()


def ndjson(*objs):
    return "".join(json.dumps(o) + "\n" for o in objs)


def index_action(index, doc_id, version=None, vtype="external", action="index"):
    meta = {"_index": index, "_id": doc_id}
    if version is not None:
        meta["version"] = version
        meta["version_type"] = vtype
    return {action: meta}


ORDERS_TEMPLATE = {
    "index_patterns": ["orders-*"], "priority": 200,
    "template": {
        "settings": {"number_of_shards": 1, "number_of_replicas": 1, "refresh_interval": "-1"},
        "mappings": {"dynamic": "strict", "properties": {
            "order_id": {"type": "keyword"}, "status": {"type": "keyword"},
            "amount": {"type": "scaled_float", "scaling_factor": 100},
            "created_at": {"type": "date"}, "lsn": {"type": "unsigned_long"},
            "qty": {"type": "long"}, "deleted": {"type": "boolean"},
            "note": {"type": "text"},
            "customer": {"properties": {"name": {"type": "keyword"}}},
            "loose": {"type": "object", "dynamic": False}}},
        "aliases": {"orders": {}}}}

_server = None


def setUpModule():
    global _server
    _server = start_server()


def tearDownModule():
    stop_server(_server[0], _server[2])


class EsTestCase(unittest.TestCase):
    def setUp(self):
        self.port = _server[1]
        self.c = Client(self.port)
        status, _, _, _ = self.c.req("POST", "/_test/reset")
        self.assertEqual(status, 200)

    def tearDown(self):
        self.c.close()

    def ok(self, method, path, body=None, **kw):
        status, parsed, raw, _ = self.c.req(method, path, body, **kw)
        self.assertIn(status, (200, 201), raw)
        return parsed

    def bulk(self, *lines, path="/_bulk", expect=200):
        status, parsed, raw, _ = self.c.req("POST", path, ndjson(*lines))
        self.assertEqual(status, expect, raw)
        return parsed

    def orders_template(self, **settings):
        t = json.loads(json.dumps(ORDERS_TEMPLATE))
        t["template"]["settings"].update(settings)
        self.ok("PUT", "/_index_template/orders", t)

    def error(self, method, path, body=None, status=400, **kw):
        st, parsed, raw, _ = self.c.req(method, path, body, **kw)
        self.assertEqual(st, status, raw)
        return parsed

    def count(self, expr):
        return self.ok("GET", "/%s/_count" % expr)["count"]


class TestCluster(EsTestCase):
    def test_root_answers_like_es_8(self):
        st, body, _, resp = self.c.req("GET", "/")
        self.assertEqual(st, 200)
        self.assertEqual(body["version"]["number"], "8.11.0")
        self.assertEqual(body["tagline"], "You Know, for Search")
        self.assertEqual(resp.getheader("X-elastic-product"), "Elasticsearch")

    def test_health_is_yellow_with_replicas_and_never_green_on_request(self):
        self.assertEqual(self.ok("GET", "/_cluster/health")["status"], "green")
        self.ok("PUT", "/solo", {"settings": {"number_of_replicas": 0}})
        self.assertEqual(self.ok("GET", "/_cluster/health")["status"], "green")
        self.ok("PUT", "/replicated", {"settings": {"number_of_replicas": 1}})
        self.assertEqual(self.ok("GET", "/_cluster/health")["status"], "yellow")
        body = self.error("GET", "/_cluster/health?wait_for_status=green&timeout=100ms",
                          status=408)
        self.assertTrue(body["timed_out"])
        self.assertEqual(body["status"], "yellow")
        self.ok("GET", "/_cluster/health?wait_for_status=yellow&timeout=1s")

    def test_unknown_query_parameter_is_rejected(self):
        body = self.error("POST", "/_bulk?refrsh=true", ndjson(index_action("a", "1"), {"x": 1}))
        self.assertEqual(body["error"]["reason"],
                         "request [/_bulk] contains unrecognized parameter: [refrsh]")

    def test_unknown_endpoint_and_wrong_method(self):
        body = self.error("GET", "/_nope")
        self.assertEqual(body["error"], "no handler found for uri [/_nope] and method [GET]")
        body = self.error("GET", "/_bulk", status=405)
        self.assertIn("Incorrect HTTP method for uri [/_bulk] and method [GET]", body["error"])


class TestTemplates(EsTestCase):
    def test_put_get_delete_round_trip(self):
        self.orders_template()
        body = self.ok("GET", "/_index_template/orders")
        t = body["index_templates"][0]
        self.assertEqual(t["name"], "orders")
        it = t["index_template"]
        self.assertEqual(it["index_patterns"], ["orders-*"])
        self.assertEqual(it["priority"], 200)
        self.assertEqual(it["composed_of"], [])
        # settings come back normalized: nested under "index", values as strings
        self.assertEqual(it["template"]["settings"],
                         {"index": {"number_of_shards": "1", "number_of_replicas": "1",
                                    "refresh_interval": "-1"}})
        self.assertEqual(it["template"]["mappings"], ORDERS_TEMPLATE["template"]["mappings"])
        self.assertEqual(it["template"]["aliases"], {"orders": {}})
        self.ok("DELETE", "/_index_template/orders")
        body = self.error("GET", "/_index_template/orders", status=404)
        self.assertEqual(body["error"]["type"], "resource_not_found_exception")
        self.assertEqual(body["error"]["reason"], "index template matching [orders] not found")
        body = self.error("DELETE", "/_index_template/orders", status=404)
        self.assertEqual(body["error"]["type"], "index_template_missing_exception")

    def test_unknown_field_type_is_a_mapper_parsing_exception(self):
        t = {"index_patterns": ["x-*"], "template": {"mappings": {"properties": {
            "a": {"type": "strnig"}}}}}
        body = self.error("PUT", "/_index_template/x", t)
        self.assertEqual(body["error"]["type"], "mapper_parsing_exception")
        self.assertEqual(body["error"]["reason"],
                         "Failed to parse mapping: No handler for type [strnig] declared on field [a]")
        self.assertEqual(body["error"]["root_cause"][0]["reason"],
                         "No handler for type [strnig] declared on field [a]")

    def test_scaled_float_needs_scaling_factor(self):
        t = {"index_patterns": ["x-*"], "template": {"mappings": {"properties": {
            "a": {"type": "scaled_float"}}}}}
        body = self.error("PUT", "/_index_template/x", t)
        self.assertEqual(body["error"]["type"], "mapper_parsing_exception")
        self.assertEqual(body["error"]["reason"],
                         "Failed to parse mapping: Field [scaling_factor] is required")

    def test_unknown_mapping_parameter_and_setting(self):
        t = {"index_patterns": ["x-*"], "template": {"mappings": {"properties": {
            "a": {"type": "keyword", "scaling_factor": 10}}}}}
        body = self.error("PUT", "/_index_template/x", t)
        self.assertIn("unknown parameter [scaling_factor] on mapper [a] of type [keyword]",
                      body["error"]["reason"])
        t = {"index_patterns": ["x-*"], "template": {"settings": {"refresh_intervall": "1s"}}}
        body = self.error("PUT", "/_index_template/x", t)
        self.assertEqual(body["error"]["type"], "illegal_argument_exception")
        self.assertTrue(body["error"]["reason"].startswith(
            "unknown setting [index.refresh_intervall]"))

    def test_same_priority_overlap_is_refused(self):
        self.ok("PUT", "/_index_template/a", {"index_patterns": ["orders-*"], "priority": 5})
        body = self.error("PUT", "/_index_template/b",
                          {"index_patterns": ["*-2024.*"], "priority": 5})
        self.assertEqual(body["error"]["type"], "illegal_argument_exception")
        self.assertEqual(
            body["error"]["reason"],
            "index template [b] has index patterns [*-2024.*] matching patterns from existing "
            "templates [a] with patterns (a => [orders-*]) that have the same priority [5], "
            "multiple index templates may not match during index creation, please use a "
            "different priority")
        # another priority, or patterns that cannot match the same name, are fine
        self.ok("PUT", "/_index_template/b", {"index_patterns": ["*-2024.*"], "priority": 6})
        self.ok("PUT", "/_index_template/c", {"index_patterns": ["customers-*"], "priority": 5})

    def test_highest_priority_template_wins_on_auto_creation(self):
        self.ok("PUT", "/_index_template/low", {
            "index_patterns": ["orders-*"], "priority": 100,
            "template": {"settings": {"refresh_interval": "7s"},
                         "mappings": {"properties": {"a": {"type": "keyword"}}}}})
        self.ok("PUT", "/_index_template/high", {
            "index_patterns": ["orders-special-*"], "priority": 200,
            "template": {"mappings": {"properties": {"a": {"type": "long"}}},
                         "aliases": {"special": {}}}})
        self.bulk(index_action("orders-special-1", "1"), {"a": 5},
                  index_action("orders-plain-1", "1"), {"a": "x"})
        m = self.ok("GET", "/orders-special-1,orders-plain-1/_mapping")
        self.assertEqual(m["orders-special-1"]["mappings"]["properties"]["a"]["type"], "long")
        self.assertEqual(m["orders-plain-1"]["mappings"]["properties"]["a"]["type"], "keyword")
        s = self.ok("GET", "/orders-plain-1/_settings")
        self.assertEqual(s["orders-plain-1"]["settings"]["index"]["refresh_interval"], "7s")
        self.assertIn("orders-special-1", self.ok("GET", "/_alias/special"))
        body = self.bulk(index_action("orders-special-1", "2"), {"a": "not a number"})
        self.assertEqual(body["items"][0]["index"]["status"], 400)

    def test_ilm_policy_crud(self):
        policy = {"policy": {"phases": {"delete": {"min_age": "400d",
                                                   "actions": {"delete": {}}}}}}
        self.ok("PUT", "/_ilm/policy/orders-retention", policy)
        self.ok("PUT", "/_ilm/policy/orders-retention", policy)
        got = self.ok("GET", "/_ilm/policy/orders-retention")["orders-retention"]
        self.assertEqual(got["version"], 2)
        self.assertEqual(got["policy"], policy["policy"])
        body = self.error("PUT", "/_ilm/policy/bad",
                          {"policy": {"phases": {"hot": {"actions": {"delete": {}}}}}})
        self.assertEqual(body["error"]["reason"], "invalid action [delete] defined in phase [hot]")
        self.ok("DELETE", "/_ilm/policy/orders-retention")
        body = self.error("GET", "/_ilm/policy/orders-retention", status=404)
        self.assertEqual(body["error"]["reason"], "Lifecycle policy not found: orders-retention")


class TestVersioning(EsTestCase):
    IDX = "orders-2024.05.01"

    def item(self, body, i=0):
        return next(iter(body["items"][i].values()))

    def test_external_versions(self):
        self.orders_template()
        b = self.bulk(index_action(self.IDX, "42", 10), {"order_id": "42"},
                      index_action(self.IDX, "42", 5), {"order_id": "42"},
                      index_action(self.IDX, "42", 10), {"order_id": "42"},
                      index_action(self.IDX, "42", 11), {"order_id": "42"},
                      index_action(self.IDX, "42", 11, "external_gte"), {"order_id": "42"})
        self.assertTrue(b["errors"])
        first = self.item(b, 0)
        self.assertEqual((first["status"], first["result"], first["_version"]),
                         (201, "created", 10))
        self.assertEqual(first["_shards"], {"total": 2, "successful": 1, "failed": 0})
        self.assertEqual(first["_primary_term"], 1)
        conflict = self.item(b, 1)
        self.assertEqual(conflict["status"], 409)
        self.assertNotIn("_version", conflict)
        self.assertEqual(conflict["error"]["type"], "version_conflict_engine_exception")
        self.assertEqual(conflict["error"]["reason"],
                         "[42]: version conflict, current version [10] is higher or equal to the "
                         "one provided [5]")
        self.assertEqual(conflict["error"]["index"], self.IDX)
        self.assertEqual(self.item(b, 2)["status"], 409)
        self.assertEqual((self.item(b, 3)["status"], self.item(b, 3)["result"]), (200, "updated"))
        self.assertEqual(self.item(b, 4)["status"], 200)
        doc = self.ok("GET", "/%s/_doc/42" % self.IDX)
        self.assertEqual(doc["_version"], 11)

    def test_create_on_existing_document_conflicts(self):
        b = self.bulk({"create": {"_index": "plain", "_id": "1"}}, {"a": 1},
                      {"create": {"_index": "plain", "_id": "1"}}, {"a": 2})
        self.assertEqual(self.item(b, 0)["status"], 201)
        err = self.item(b, 1)
        self.assertEqual(err["status"], 409)
        self.assertEqual(err["error"]["reason"],
                         "[1]: version conflict, document already exists (current version [1])")

    def test_delete_of_missing_document_is_not_an_error(self):
        self.bulk(index_action("plain", "1"), {"a": 1})
        b = self.bulk({"delete": {"_index": "plain", "_id": "nope"}},
                      {"delete": {"_index": "plain", "_id": "1"}})
        self.assertFalse(b["errors"])
        self.assertEqual((self.item(b, 0)["status"], self.item(b, 0)["result"]),
                         (404, "not_found"))
        self.assertEqual((self.item(b, 1)["status"], self.item(b, 1)["result"]), (200, "deleted"))
        # ... but a delete into an index that does not exist is (internal versioning)
        b = self.bulk({"delete": {"_index": "missing-index", "_id": "1"}})
        self.assertTrue(b["errors"])
        self.assertEqual(self.item(b)["error"]["type"], "index_not_found_exception")

    def test_internal_versions_count_through_tombstones(self):
        b = self.bulk(index_action("plain", "1"), {"a": 1}, index_action("plain", "1"), {"a": 2},
                      {"delete": {"_index": "plain", "_id": "1"}},
                      index_action("plain", "1"), {"a": 3})
        self.assertEqual([self.item(b, i)["_version"] for i in range(4)], [1, 2, 3, 4])
        self.assertEqual([self.item(b, i)["_seq_no"] for i in range(4)], [0, 1, 2, 3])

    def _poll_until_created(self, index, doc_id, version, deadline_s):
        deadline = time.monotonic() + deadline_s
        while True:
            b = self.bulk(index_action(index, doc_id, version), {"order_id": doc_id})
            st = self.item(b)["status"]
            if st != 409 or time.monotonic() > deadline:
                return st, self.item(b)

    def test_gc_deletes_forgets_tombstones_and_resurrects_old_versions(self):
        self.orders_template(**{"index.gc_deletes": "300ms"})
        self.ok("PUT", "/_index_template/longgc", {
            "index_patterns": ["keep-*"], "priority": 10,
            "template": {"mappings": {"dynamic": "strict",
                                      "properties": {"order_id": {"type": "keyword"}}}}})
        for idx in (self.IDX, "keep-1"):
            b = self.bulk(index_action(idx, "7", 5), {"order_id": "7"},
                          {"delete": {"_index": idx, "_id": "7", "version": 10,
                                      "version_type": "external"}},
                          index_action(idx, "7", 7), {"order_id": "7"})
            self.assertEqual(self.item(b, 1)["result"], "deleted")
            self.assertEqual(self.item(b, 1)["_version"], 10)
            # the tombstone (version 10) refuses the replayed older write
            self.assertEqual(self.item(b, 2)["status"], 409)
            self.assertIn("current version [10] is higher or equal to the one provided [7]",
                          self.item(b, 2)["error"]["reason"])
        status, item = self._poll_until_created(self.IDX, "7", 7, 10)
        self.assertEqual(status, 201, item)
        self.assertEqual(item["_version"], 7)
        # the default gc_deletes (60s) still remembers its tombstone
        b = self.bulk(index_action("keep-1", "7", 7), {"order_id": "7"})
        self.assertEqual(self.item(b)["status"], 409)

    def test_delete_with_external_version_of_missing_doc_leaves_a_tombstone(self):
        b = self.bulk({"delete": {"_index": "plain", "_id": "9", "version": 50,
                                  "version_type": "external"}},
                      index_action("plain", "9", 40), {"a": 1},
                      index_action("plain", "9", 51), {"a": 1})
        self.assertEqual((self.item(b, 0)["status"], self.item(b, 0)["_version"]), (404, 50))
        self.assertFalse(b["items"][0]["delete"].get("error"))
        self.assertEqual(self.item(b, 1)["status"], 409)
        self.assertEqual(self.item(b, 2)["status"], 201)

    def test_if_seq_no_compare_and_set(self):
        b = self.bulk(index_action("plain", "1"), {"a": 1})
        seq = self.item(b)["_seq_no"]
        b = self.bulk({"index": {"_index": "plain", "_id": "1", "if_seq_no": seq + 5,
                                 "if_primary_term": 1}}, {"a": 2},
                      {"index": {"_index": "plain", "_id": "1", "if_seq_no": seq,
                                 "if_primary_term": 1}}, {"a": 3})
        self.assertEqual(self.item(b, 0)["status"], 409)
        self.assertIn("required seqNo [%d], primary term [1]. current document has seqNo [%d]"
                      % (seq + 5, seq), self.item(b, 0)["error"]["reason"])
        self.assertEqual(self.item(b, 1)["status"], 200)

    def test_update_with_version_fails_the_whole_request(self):
        body = self.error("POST", "/_bulk", ndjson(
            index_action("plain", "1"), {"a": 1},
            {"update": {"_index": "plain", "_id": "1", "version": 3,
                        "version_type": "external"}}, {"doc": {"a": 2}}))
        self.assertEqual(body["error"]["type"], "illegal_argument_exception")
        self.assertEqual(body["error"]["reason"],
                         "Update requests do not support versioning. Please use `if_seq_no` and "
                         "`if_primary_term` instead")
        self.error("GET", "/plain/_doc/1", status=404)

    def test_request_validation_fails_the_whole_request(self):
        cases = [
            ({"create": {"_index": "p", "_id": "1", "version": 2, "version_type": "external"}},
             "Validation Failed: 1: create operations only support internal versioning. use "
             "index instead;"),
            ({"index": {"_index": "p", "_id": "1", "version_type": "external"}},
             "Validation Failed: 1: illegal version value [-3] for version type [EXTERNAL];"),
            ({"index": {"_index": "p", "_id": "1", "version": -1, "version_type": "external"}},
             "Validation Failed: 1: illegal version value [-1] for version type [EXTERNAL];"),
            ({"index": {"_id": "1"}}, "Validation Failed: 1: index is missing;"),
            ({"index": {"_index": "p", "_id": "1", "version": 4}},
             "Validation Failed: 1: internal versioning can not be used for optimistic "
             "concurrency control. Please use `if_seq_no` and `if_primary_term` instead;"),
        ]
        for action, reason in cases:
            body = self.error("POST", "/_bulk", ndjson(action, {"a": 1}))
            self.assertEqual(body["error"]["type"], "action_request_validation_exception")
            self.assertEqual(body["error"]["reason"], reason)
        body = self.error("POST", "/_bulk", ndjson(
            {"index": {"_index": "p", "_id": "1", "version": "x", "version_type": "external"}},
            {"a": 1}))
        self.assertEqual(body["status"], 400)

    def test_update_actions(self):
        self.bulk(index_action("plain", "1"), {"a": 1, "o": {"x": 1}})
        b = self.bulk({"update": {"_index": "plain", "_id": "1"}}, {"doc": {"o": {"y": 2}}},
                      {"update": {"_index": "plain", "_id": "1"}}, {"doc": {"a": 1}},
                      {"update": {"_index": "plain", "_id": "2"}}, {"doc": {"a": 1}},
                      {"update": {"_index": "plain", "_id": "3"}},
                      {"doc": {"a": 3}, "doc_as_upsert": True},
                      {"update": {"_index": "plain", "_id": "4"}},
                      {"doc": {"a": 4}, "upsert": {"a": 0}})
        self.assertEqual((self.item(b, 0)["result"], self.item(b, 0)["_version"]),
                         ("updated", 2))
        self.assertEqual(self.item(b, 1)["result"], "noop")
        self.assertEqual(self.item(b, 2)["status"], 404)
        self.assertEqual(self.item(b, 2)["error"]["type"], "document_missing_exception")
        self.assertEqual(self.item(b, 2)["error"]["reason"], "[2]: document missing")
        self.assertEqual((self.item(b, 3)["status"], self.item(b, 3)["result"]), (201, "created"))
        self.assertEqual(self.ok("GET", "/plain/_doc/1")["_source"], {"a": 1, "o": {"x": 1, "y": 2}})
        self.assertEqual(self.ok("GET", "/plain/_doc/4")["_source"], {"a": 0})


class TestBulkProtocol(EsTestCase):
    def test_body_must_end_with_newline(self):
        body = self.error("POST", "/_bulk", ndjson(index_action("p", "1"), {"a": 1})[:-1])
        self.assertEqual(body["error"]["type"], "illegal_argument_exception")
        self.assertEqual(body["error"]["reason"],
                         "The bulk request must be terminated by a newline [\\n]")

    def test_last_action_without_source_is_dropped(self):
        b = self.bulk(index_action("p", "1"), {"a": 1}, index_action("p", "2"))
        self.assertEqual(len(b["items"]), 1)
        body = self.error("POST", "/_bulk", ndjson(index_action("p", "1")))
        self.assertEqual(body["error"]["reason"], "Validation Failed: 1: no requests added;")

    def test_content_type_is_checked(self):
        body = self.error("POST", "/_bulk", ndjson(index_action("p", "1"), {"a": 1}),
                          ctype="text/plain", status=406)
        self.assertEqual(body, {"error": "Content-Type header [text/plain] is not supported",
                                "status": 406})
        self.ok("POST", "/_bulk", ndjson(index_action("p", "1"), {"a": 1}),
                ctype="application/json; charset=UTF-8")
        st, _, _, _ = self.c.req("POST", "/_bulk", ndjson(index_action("p", "2"), {"a": 1}),
                                 ctype="application/x-ndjson")
        self.assertEqual(st, 200)

    def test_gzip_bodies(self):
        data = gzip.compress(ndjson(index_action("p", "1"), {"a": 1}).encode())
        st, body, raw, _ = self.c.req("POST", "/_bulk", data,
                                      headers={"Content-Encoding": "gzip"})
        self.assertEqual(st, 200, raw)
        self.assertFalse(body["errors"])
        self.assertEqual(self.ok("GET", "/_test/stats")["gzip_requests"], 1)
        st, _, _, _ = self.c.req("POST", "/_bulk", b"not gzip\n",
                                 headers={"Content-Encoding": "gzip"})
        self.assertEqual(st, 400)

    def test_filter_path(self):
        self.bulk(index_action("p", "1", 5), {"a": 1})
        lines = ndjson(index_action("p", "1", 3), {"a": 1}, index_action("p", "2", 3), {"a": 1})
        body = self.ok("POST", "/_bulk?filter_path=errors,items.*.status,items.*.error.type",
                       lines)
        self.assertEqual(body, {"errors": True, "items": [
            {"index": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
            {"index": {"status": 201}}]})
        body = self.ok("POST", "/_bulk?filter_path=items.*.error", lines)
        self.assertEqual(len(body["items"]), 2)  # both conflict now; successes would vanish
        body = self.ok("POST", "/_bulk?filter_path=-items,took", ndjson(
            index_action("p", "9"), {"a": 1}))
        self.assertEqual(list(body), ["took"])
        body = self.ok("POST", "/_bulk?filter_path=items.*.error", ndjson(
            index_action("p", "10"), {"a": 1}))
        self.assertEqual(body, {})

    def test_exact_numbers_and_source_text_round_trip(self):
        line = ('{"big":12345678901234567890123.45,"cents":1.10,"u":18446744073709551615,'
                '"e":1E+2, "spaced" : [ 1 , 2 ] ,"s":"\\u00e9"}')
        self.ok("PUT", "/nums", {"mappings": {"properties": {"u": {"type": "unsigned_long"}}}})
        body = ndjson(index_action("nums", "1")) + line + "\n"
        st, b, raw, _ = self.c.req("POST", "/_bulk?refresh=true", body)
        self.assertFalse(b["errors"], raw)
        st, _, raw, _ = self.c.req("GET", "/nums/_doc/1")
        self.assertIn(('"_source":' + line).encode(), raw)
        st, _, raw, _ = self.c.req("GET", "/nums/_search")
        self.assertIn(('"_source":' + line).encode(), raw)
        st, _, raw, _ = self.c.req("GET", "/_test/docs/nums")
        self.assertIn(('"_source":' + line).encode(), raw)

    def test_duplicate_keys_and_malformed_sources_are_item_errors(self):
        b = self.c.req("POST", "/_bulk", ndjson(index_action("p", "1")) + '{"a":1,"a":2}\n'
                       + ndjson(index_action("p", "2")) + '{"a":\n')[1]
        self.assertEqual(b["items"][0]["index"]["error"]["type"], "document_parsing_exception")
        self.assertIn("Duplicate field 'a'", b["items"][0]["index"]["error"]["reason"])
        self.assertEqual(b["items"][1]["index"]["status"], 400)

    def test_index_name_rules(self):
        names = {"Orders": "must be lowercase", "_x": "must not start with '_', '-', or '+'",
                 "a b": "must not contain the following characters",
                 "a#b": "must not contain '#'"}
        for name, why in names.items():
            b = self.bulk({"index": {"_index": name, "_id": "1"}}, {"a": 1})
            err = b["items"][0]["index"]["error"]
            self.assertEqual(err["type"], "invalid_index_name_exception")
            self.assertTrue(err["reason"].startswith("Invalid index name [%s], %s" % (name, why)),
                            err["reason"])

    def test_alias_with_two_indices_has_no_write_index(self):
        self.ok("PUT", "/_index_template/t", {"index_patterns": ["d-*"],
                                              "template": {"aliases": {"d": {}}}})
        self.bulk(index_action("d-1", "1"), {"a": 1}, index_action("d", "2"), {"a": 1})
        self.assertEqual(self.ok("GET", "/d-1/_doc/2")["found"], True)
        self.bulk(index_action("d-2", "1"), {"a": 1})
        b = self.bulk(index_action("d", "3"), {"a": 1})
        self.assertIn("no write index is defined for alias [d]",
                      b["items"][0]["index"]["error"]["reason"])

    def test_test_docs_lists_live_documents_in_order(self):
        self.bulk(index_action("docs-b", "2"), {"v": 2}, index_action("docs-a", "9"), {"v": 9},
                  index_action("docs-a", "10"), {"v": 10},
                  {"delete": {"_index": "docs-a", "_id": "9"}})
        st, _, raw, resp = self.c.req("GET", "/_test/docs/docs-*")
        self.assertEqual(resp.getheader("Content-Type"), "application/x-ndjson")
        lines = [json.loads(x) for x in raw.decode().splitlines()]
        self.assertEqual([(x["_index"], x["_id"], x["_source"]["v"]) for x in lines],
                         [("docs-a", "10", 10), ("docs-b", "2", 2)])
        self.assertEqual(lines[0]["_version"], 1)

    def test_stats_count_bulks_items_and_bodies(self):
        body = ndjson(index_action("p", "1", 2), {"a": 1}, index_action("p", "1", 1), {"a": 1},
                      {"delete": {"_index": "p", "_id": "x"}})
        self.ok("POST", "/_bulk", body)
        s = self.ok("GET", "/_test/stats")
        self.assertEqual(s["bulk_requests"], 1)
        self.assertEqual(s["bulk_items"], {"201": 1, "409": 1, "404": 1})
        self.assertEqual(s["max_items_per_bulk"], 3)
        self.assertEqual(s["max_bulk_body_bytes"], len(body.encode()))
        self.assertEqual(s["requests"]["bulk"], {"200": 1})

    def test_too_large_body_is_413(self):
        proc, port, tmp = start_server("--max-content-length", "100")
        try:
            c = Client(port)
            st, _, _, _ = c.req("POST", "/_bulk", ndjson(index_action("p", "1"), {"a": "x" * 200}))
            self.assertEqual(st, 413)
            c.close()
        finally:
            stop_server(proc, tmp)


class TestMappingChecks(EsTestCase):
    IDX = "orders-2024.05.01"

    def setUp(self):
        super().setUp()
        self.orders_template()

    def one(self, source, doc_id="1"):
        b = self.c.req("POST", "/_bulk", ndjson(index_action(self.IDX, doc_id))
                       + (source if isinstance(source, str) else json.dumps(
                           source, separators=(",", ":"))) + "\n")[1]
        return b["items"][0]["index"]

    def assertRefused(self, source, etype, reason):
        item = self.one(source)
        self.assertEqual(item["status"], 400, item)
        self.assertEqual(item["error"]["type"], etype)
        self.assertEqual(item["error"]["reason"], reason)

    def test_strict_dynamic_at_root_and_inherited(self):
        self.assertRefused({"order_id": "1", "extra": 1}, "strict_dynamic_mapping_exception",
                           "[1:25] mapping set to strict, dynamic introduction of [extra] within "
                           "[_doc] is not allowed")
        self.assertRefused({"customer": {"name": "a", "age": 3}},
                           "strict_dynamic_mapping_exception",
                           "[1:31] mapping set to strict, dynamic introduction of [age] within "
                           "[customer] is not allowed")
        self.assertEqual(self.one({"order_id": "1", "customer": {"name": "x"}})["status"], 201)

    def test_dynamic_false_keeps_unmapped_fields_in_source_only(self):
        item = self.one({"order_id": "1", "loose": {"anything": [1, "two"]}})
        self.assertEqual(item["status"], 201)
        self.ok("POST", "/%s/_refresh" % self.IDX)
        doc = self.ok("GET", "/%s/_doc/1" % self.IDX)
        self.assertEqual(doc["_source"]["loose"], {"anything": [1, "two"]})
        body = self.ok("POST", "/orders/_count", {"query": {"term": {"loose.anything": 1}}})
        self.assertEqual(body["count"], 0)
        self.assertNotIn("anything",
                         json.dumps(self.ok("GET", "/%s/_mapping" % self.IDX)))

    def test_field_type_errors(self):
        self.assertRefused({"qty": "abc"}, "document_parsing_exception",
                           "[1:8] failed to parse field [qty] of type [long] in document with id "
                           "'1'. Preview of field's value: 'abc'")
        self.assertRefused({"qty": 9223372036854775808}, "document_parsing_exception",
                           "[1:8] failed to parse field [qty] of type [long] in document with id "
                           "'1'. Preview of field's value: '9223372036854775808'")
        self.assertRefused({"order_id": {"a": 1}}, "document_parsing_exception",
                           "[1:13] failed to parse field [order_id] of type [keyword] in document "
                           "with id '1'. Preview of field's value: '{a=1}'")
        self.assertRefused({"deleted": "yes"}, "document_parsing_exception",
                           "[1:12] failed to parse field [deleted] of type [boolean] in document "
                           "with id '1'. Preview of field's value: 'yes'")
        self.assertRefused({"lsn": 18446744073709551616}, "document_parsing_exception",
                           "[1:8] failed to parse field [lsn] of type [unsigned_long] in document "
                           "with id '1'. Preview of field's value: '18446744073709551616'")
        self.assertRefused({"lsn": -1}, "document_parsing_exception",
                           "[1:8] failed to parse field [lsn] of type [unsigned_long] in document "
                           "with id '1'. Preview of field's value: '-1'")
        self.assertRefused({"customer": "bob"}, "document_parsing_exception",
                           "[1:13] object mapping for [customer] tried to parse field [customer] as "
                           "object, but found a concrete value")
        self.assertRefused({"qty": [1, "x"]}, "document_parsing_exception",
                           "[1:11] failed to parse field [qty] of type [long] in document with id "
                           "'1'. Preview of field's value: 'x'")

    def test_accepted_coercions(self):
        accepted = [{"qty": "12"}, {"qty": 12.7}, {"qty": "12.7"}, {"qty": ""}, {"qty": None},
                    {"order_id": 42}, {"order_id": True}, {"deleted": "true"}, {"deleted": ""},
                    {"lsn": 18446744073709551615}, {"lsn": "18446744073709551615"},
                    {"amount": 20.5}, {"amount": "20.50"}, {"note": 5}, {"qty": [1, 2, None]},
                    {"customer": [{"name": "a"}, {"name": "b"}]}]
        for i, src in enumerate(accepted):
            self.assertEqual(self.one(src, str(i))["status"], 201, src)
        self.assertEqual(self.one({"lsn": 1.5})["status"], 400)

    def test_date_formats(self):
        good = ["2024-05-01T10:00:00.123456Z", "2024-05-01T10:00:00+02:00", "2024-05-01",
                "2024-05-01T10:00Z", "2024-05-01T10:00:00.1Z", "2024-05-01T10:00:00+00",
                "2024-05-01T10:00:00+0200", 1714557600000, "1714557600000"]
        for i, v in enumerate(good):
            self.assertEqual(self.one({"created_at": v}, str(i))["status"], 201, v)
        bad = ["2024-05-01 10:00:00+00", "2024-05-01 10:00:00", "01/05/2024", "2024-02-30",
               "2024-05-01T24:00:00Z", "2024-5-1"]
        for v in bad:
            item = self.one({"created_at": v})
            self.assertEqual(item["status"], 400, v)
            self.assertEqual(item["error"]["caused_by"]["reason"],
                             "failed to parse date field [%s] with format "
                             "[strict_date_optional_time||epoch_millis]" % v)

    def test_custom_date_formats(self):
        self.ok("PUT", "/dates", {"mappings": {"properties": {
            "d": {"type": "date", "format": "yyyy-MM-dd"},
            "s": {"type": "date", "format": "epoch_second"},
            "o": {"type": "date", "format": "date_optional_time||epoch_millis"}}}})
        cases = [({"d": "2024-05-01"}, 201), ({"d": "2024-05-01T10:00:00Z"}, 400),
                 ({"s": 1714557600}, 201), ({"s": "x"}, 400), ({"o": "2024-5-1"}, 201)]
        for i, (src, status) in enumerate(cases):
            b = self.bulk(index_action("dates", str(i)), src)
            self.assertEqual(b["items"][0]["index"]["status"], status, src)
        body = self.error("PUT", "/dates2", {"mappings": {"properties": {
            "d": {"type": "date", "format": "no_such_format"}}}})
        self.assertEqual(body["error"]["type"], "mapper_parsing_exception")

    def test_dynamic_mapping_without_template(self):
        self.bulk(index_action("dyn", "1"), {"s": "text", "d": "2024-05-01T10:00:00Z", "i": 5,
                                             "f": 1.5, "b": True, "o": {"x": "y"}})
        props = self.ok("GET", "/dyn/_mapping")["dyn"]["mappings"]["properties"]
        self.assertEqual(props["s"], {"type": "text", "fields": {
            "keyword": {"type": "keyword", "ignore_above": 256}}})
        self.assertEqual(props["d"], {"type": "date"})
        self.assertEqual(props["i"], {"type": "long"})
        self.assertEqual(props["f"], {"type": "float"})
        self.assertEqual(props["b"], {"type": "boolean"})
        self.assertEqual(props["o"]["properties"]["x"]["type"], "text")
        b = self.bulk(index_action("dyn", "2"), {"i": "not a number"})
        self.assertEqual(b["items"][0]["index"]["status"], 400)

    def test_put_mapping_adds_fields_and_refuses_type_changes(self):
        self.ok("PUT", "/m", {"mappings": {"properties": {"a": {"type": "keyword"}}}})
        self.ok("PUT", "/m/_mapping", {"properties": {"b": {"type": "long"}}})
        body = self.error("PUT", "/m/_mapping", {"properties": {"a": {"type": "long"}}})
        self.assertEqual(body["error"]["reason"],
                         "mapper [a] cannot be changed from type [keyword] to [long]")
        props = self.ok("GET", "/m/_mapping")["m"]["mappings"]["properties"]
        self.assertEqual(props, {"a": {"type": "keyword"}, "b": {"type": "long"}})


class TestSearch(EsTestCase):
    def setUp(self):
        super().setUp()
        self.orders_template()
        self.ok("PUT", "/_index_template/filtered", {
            "index_patterns": ["f-*"], "priority": 1,
            "template": {"mappings": {"properties": {"status": {"type": "keyword"},
                                                     "qty": {"type": "long"}}},
                         "aliases": {"paid-only": {"filter": {"term": {"status": "paid"}}}}}})
        docs = []
        for i in range(1, 8):
            docs += [index_action("orders-2024.05.0%d" % (1 + i % 2), str(i)),
                     {"order_id": str(i), "status": "paid" if i % 2 else "new", "qty": i,
                      "created_at": "2024-05-0%dT10:00:00Z" % i, "note": "Fast Delivery %d" % i,
                      "deleted": i == 7}]
        docs += [index_action("f-1", "a"), {"status": "paid", "qty": 1},
                 index_action("f-1", "b"), {"status": "new", "qty": 2}]
        self.ok("POST", "/_bulk?refresh=wait_for", ndjson(*docs))

    def ids(self, body, expr="orders"):
        res = self.ok("POST", "/%s/_search" % expr, body)
        return sorted(h["_id"] for h in res["hits"]["hits"])

    def test_queries(self):
        q = lambda query: self.ids({"query": query, "size": 100})  # noqa: E731
        self.assertEqual(q({"match_all": {}}), ["1", "2", "3", "4", "5", "6", "7"])
        self.assertEqual(q({"term": {"status": "paid"}}), ["1", "3", "5", "7"])
        self.assertEqual(q({"term": {"status": {"value": "new"}}}), ["2", "4", "6"])
        self.assertEqual(q({"terms": {"order_id": ["1", "2", "99"]}}), ["1", "2"])
        self.assertEqual(q({"match": {"note": "delivery"}}), ["1", "2", "3", "4", "5", "6", "7"])
        self.assertEqual(q({"match": {"note": "3"}}), ["3"])
        self.assertEqual(q({"term": {"note": "Fast"}}), [])  # text is analyzed
        self.assertEqual(q({"range": {"qty": {"gt": 2, "lte": 4}}}), ["3", "4"])
        self.assertEqual(q({"range": {"created_at": {"gte": "2024-05-06"}}}), ["6", "7"])
        self.assertEqual(q({"exists": {"field": "customer"}}), [])
        self.assertEqual(q({"ids": {"values": ["2", "5"]}}), ["2", "5"])
        self.assertEqual(q({"bool": {"filter": [{"term": {"status": "paid"}}],
                                     "must_not": [{"term": {"deleted": True}}]}}),
                         ["1", "3", "5"])
        self.assertEqual(q({"bool": {"should": [{"term": {"qty": 1}}, {"term": {"qty": 2}}]}}),
                         ["1", "2"])
        self.assertEqual(q({"bool": {"should": [{"term": {"qty": 1}}, {"term": {"status": "paid"}}],
                                     "minimum_should_match": 2}}), ["1"])
        body = self.error("POST", "/orders/_search", {"query": {"nope": {}}})
        self.assertEqual(body["error"]["type"], "parsing_exception")

    def test_paging_sorting_and_search_after(self):
        res = self.ok("POST", "/orders/_search", {"sort": [{"qty": "desc"}], "size": 3})
        self.assertEqual([h["_id"] for h in res["hits"]["hits"]], ["7", "6", "5"])
        self.assertEqual(res["hits"]["hits"][0]["sort"], [7])
        self.assertIsNone(res["hits"]["hits"][0]["_score"])
        res2 = self.ok("POST", "/orders/_search", {"sort": [{"qty": "desc"}], "size": 3,
                                                  "search_after": [5]})
        self.assertEqual([h["_id"] for h in res2["hits"]["hits"]], ["4", "3", "2"])
        res3 = self.ok("POST", "/orders/_search", {"sort": ["order_id"], "from": 5, "size": 5})
        self.assertEqual([h["_id"] for h in res3["hits"]["hits"]], ["6", "7"])
        res4 = self.ok("GET", "/orders/_search?size=2&sort=created_at:asc")
        self.assertEqual([h["_id"] for h in res4["hits"]["hits"]], ["1", "2"])
        self.assertEqual(res4["hits"]["total"], {"value": 7, "relation": "eq"})

    def test_sorting_on_id_or_text_is_refused_like_es_8(self):
        body = self.error("POST", "/orders/_search", {"sort": ["_id"]})
        self.assertEqual(body["error"]["type"], "search_phase_execution_exception")
        self.assertIn("Fielddata access on the _id field is disallowed",
                      body["error"]["root_cause"][0]["reason"])
        body = self.error("POST", "/orders/_search", {"sort": ["note"]})
        self.assertIn("Text fields are not optimised", body["error"]["root_cause"][0]["reason"])

    def test_hit_options(self):
        res = self.ok("POST", "/orders/_search", {"query": {"ids": {"values": ["3"]}},
                                                  "version": True, "seq_no_primary_term": True,
                                                  "_source": False})
        hit = res["hits"]["hits"][0]
        self.assertEqual(hit["_version"], 1)
        self.assertIn("_seq_no", hit)
        self.assertEqual(hit["_primary_term"], 1)
        self.assertNotIn("_source", hit)
        res = self.ok("POST", "/orders/_search", {"track_total_hits": 2, "size": 0})
        self.assertEqual(res["hits"]["total"], {"value": 2, "relation": "gte"})
        res = self.ok("POST", "/orders/_search", {"track_total_hits": False})
        self.assertNotIn("total", res["hits"])

    def test_index_expressions_and_alias_filters(self):
        self.assertEqual(self.count("orders-2024.05.01,orders-2024.05.02"), 7)
        self.assertEqual(self.count("orders-*"), 7)
        self.assertEqual(self.count("orders"), 7)
        self.assertEqual(self.count("paid-only"), 1)
        self.assertEqual(self.count("f-1"), 2)
        self.assertEqual(self.ok("GET", "/nothing-*/_count")["count"], 0)
        body = self.error("GET", "/nothing/_count", status=404)
        self.assertEqual(body["error"]["type"], "index_not_found_exception")

    def test_max_result_window(self):
        body = self.error("POST", "/orders/_search", {"from": 10000, "size": 1})
        self.assertEqual(body["error"]["type"], "search_phase_execution_exception")
        self.assertEqual(body["error"]["root_cause"][0]["reason"],
                         "Result window is too large, from + size must be less than or equal "
                         "to: [10000] but was [10001]. See the scroll api for a more efficient "
                         "way to request large data sets. This limit can be set by changing the "
                         "[index.max_result_window] index level setting.")
        self.ok("POST", "/orders/_search", {"from": 9999, "size": 1})
        self.ok("PUT", "/small", {"settings": {"index.max_result_window": 5}})
        self.error("GET", "/small/_search?size=6")

    def test_refresh_visibility(self):
        self.bulk(index_action("orders-2024.06.01", "x"), {"order_id": "x"})
        self.assertEqual(self.count("orders-2024.06.01"), 0)  # refresh_interval -1
        self.assertTrue(self.ok("GET", "/orders-2024.06.01/_doc/x")["found"])  # real-time
        self.ok("POST", "/orders-2024.06.01/_refresh")
        self.assertEqual(self.count("orders-2024.06.01"), 1)
        b = self.ok("POST", "/_bulk?refresh=true",
                    ndjson(index_action("orders-2024.06.01", "y"), {"order_id": "y"}))
        self.assertTrue(b["items"][0]["index"]["forced_refresh"])
        self.assertEqual(self.count("orders-2024.06.01"), 2)
        # without a template: the default refresh_interval (1s) shows it by itself
        self.bulk(index_action("plain", "1"), {"a": 1})
        self.assertEqual(self.count("plain"), 0)
        deadline = time.monotonic() + 5
        while self.count("plain") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.count("plain"), 1)

    def test_index_apis(self):
        st, _, raw, _ = self.c.req("HEAD", "/orders-2024.05.01")
        self.assertEqual((st, raw), (200, b""))
        self.assertEqual(self.c.req("HEAD", "/nope")[0], 404)
        cat = self.ok("GET", "/_cat/indices?format=json")
        rows = {r["index"]: r for r in cat}
        self.assertEqual(rows["orders-2024.05.02"]["docs.count"], "4")
        self.assertEqual(rows["orders-2024.05.02"]["health"], "yellow")
        aliases = self.ok("GET", "/orders-2024.05.01/_alias")
        self.assertEqual(aliases["orders-2024.05.01"]["aliases"], {"orders": {}})
        self.ok("DELETE", "/orders-2024.05.01")
        self.assertEqual(self.count("orders"), 4)
        body = self.error("DELETE", "/orders-*")
        self.assertEqual(body["error"]["reason"],
                         "Wildcard expressions or all indices are not allowed")
        body = self.error("GET", "/orders-2024.05.01/_doc/1", status=404)
        self.assertEqual(body["error"]["type"], "index_not_found_exception")
        st, body, _, _ = self.c.req("GET", "/orders-2024.05.02/_doc/nope")
        self.assertEqual((st, body["found"]), (404, False))


def compact(*objs):
    """NDJSON as pgfan writes it (no spaces): the bulk fast path's input."""
    return "".join(json.dumps(o, separators=(",", ":"), ensure_ascii=False) + "\n"
                   for o in objs)


def fast_action(index, doc_id, version, action="index"):
    return {action: {"_index": index, "_id": doc_id, "version": version,
                     "version_type": "external"}}


def order_doc(i, **over):
    d = {"order_id": str(i), "status": "paid", "amount": 12.5, "created_at":
         "2024-05-%02dT10:00:00.123456Z" % (1 + i % 28), "lsn": 1000 + i, "qty": i % 7,
         "deleted": False, "note": "n", "customer": {"name": "c%d" % i}}
    d.update(over)
    return d


def _normalized_items(body):
    """Items without what differs between a compact and a spaced bulk: index
    names and uuids, and the [1:column] of document errors."""
    text = json.dumps(body["items"])
    text = re.sub(r'"(_index|index|index_uuid)": "[^"]*"', r'"\1": "X"', text)
    return json.loads(re.sub(r"\[1:[0-9]+\] ", "[1:N] ", text))


class TestBulkFastPath(EsTestCase):
    """pgfan's compact bulks take a fast path (es_bulk.parse_bulk's patterns,
    text shapes of the mapping, BulkItems): it must answer exactly what the
    general path answers for the same bulk written with spaces."""

    def setUp(self):
        super().setUp()
        self.orders_template()

    def _both(self, lines, path="/_bulk"):
        """(fast answer, general answer) of lines sent compact to orders-f-*
        and spaced to orders-g-*, items normalized."""
        def rename(prefix):
            out = []
            for o in lines:
                o = json.loads(json.dumps(o))
                for meta in o.values():
                    if isinstance(meta, dict) and "_index" in meta:
                        meta["_index"] = meta["_index"].replace("orders-", prefix)
                out.append(o)
            return out
        fast = self.ok("POST", path, compact(*rename("orders-f-")))
        general = self.ok("POST", path, ndjson(*rename("orders-g-")))
        return fast, general

    def test_fast_path_answers_like_the_general_path(self):
        lines = []
        for i in range(40):  # enough documents to learn text shapes
            lines += [fast_action("orders-1", str(i), 10), order_doc(i)]
        lines += [fast_action("orders-1", "3", 9), order_doc(3),  # older: 409
                  fast_action("orders-1", "3", 11), order_doc(3, status="shipped"),  # 200
                  fast_action("orders-1", "4", 10), order_doc(4),  # equal: 409
                  fast_action("orders-1", "50", 1), order_doc(50, qty=1 << 63),
                  fast_action("orders-1", "51", 1), order_doc(51, qty="seven"),
                  fast_action("orders-1", "52", 1), order_doc(52, created_at="2023-02-29"),
                  fast_action("orders-1", "53", 1), order_doc(53, created_at="2024-02-29"),
                  fast_action("orders-1", "54", 1), order_doc(54, created_at="2024-04-31"),
                  fast_action("orders-1", "55", 1), order_doc(55, extra=1),
                  fast_action("orders-1", "56", 1), order_doc(56, status='a "quoted" one'),
                  fast_action("orders-1", "57", 1), order_doc(57, amount=1e400),
                  fast_action("orders-1", "58", 1), order_doc(58, lsn=-1),
                  fast_action("orders-1", "59", 1), order_doc(59, customer=None, note=None),
                  fast_action("orders-1", "60", 1), order_doc(60, customer="flat"),
                  fast_action("orders-1", "1", 20, "delete"),
                  fast_action("orders-1", "nope", 20, "delete"),
                  fast_action("Bad", "61", 1), order_doc(61)]
        fast, general = self._both(lines)
        self.assertTrue(fast["errors"])
        self.assertEqual(_normalized_items(fast), _normalized_items(general))
        statuses = [next(iter(i.values()))["status"] for i in fast["items"]]
        self.assertEqual(statuses, [201] * 40 + [409, 200, 409, 400, 400, 400, 201, 400, 400,
                                                 201, 400, 400, 201, 400, 200, 404, 400])
        self.assertEqual(self.count("orders-f-1"), 0)  # refresh_interval -1
        self.ok("POST", "/orders-f-1/_refresh")
        self.assertEqual(self.count("orders-f-1"), 42)

    def test_duplicate_keys_are_refused_on_the_fast_path(self):
        good = compact(fast_action("orders-1", "1", 1), order_doc(1))
        dup = compact(fast_action("orders-1", "2", 1)).rstrip("\n") + "\n" + \
            compact(order_doc(2))[:-2] + ',"qty":3}\n'
        body = self.ok("POST", "/_bulk", good + dup)
        err = body["items"][1]["index"]["error"]
        self.assertEqual(err["type"], "document_parsing_exception")
        self.assertIn("Duplicate field 'qty'", err["reason"])

    def test_filter_path_on_fast_path_items(self):
        lines = []
        for i in range(5):
            lines += [fast_action("orders-1", str(i), 5), order_doc(i)]
        lines += [fast_action("orders-1", "0", 4), order_doc(0)]
        body = compact(*lines)
        st, parsed, raw, _ = self.c.req(
            "POST", "/_bulk?filter_path=errors,items.*.status,items.*.error", body)
        self.assertEqual(st, 200)
        self.assertTrue(parsed["errors"])
        self.assertEqual([i["index"]["status"] for i in parsed["items"]], [201] * 5 + [409])
        self.assertEqual(parsed["items"][0], {"index": {"status": 201}})
        self.assertEqual(parsed["items"][5]["index"]["error"]["type"],
                         "version_conflict_engine_exception")
        lines = [line if "index" not in line else fast_action("orders-2", line["index"]["_id"], 6)
                 for line in lines]
        parsed = self.ok("POST", "/_bulk?filter_path=items.*._id,items.*._version",
                         compact(*lines))
        self.assertEqual([i["index"]["_id"] for i in parsed["items"]],
                         ["0", "1", "2", "3", "4", "0"])
        self.assertEqual(parsed["items"][0]["index"]["_version"], 6)
        lines = [line if "index" not in line else fast_action("orders-3", line["index"]["_id"], 6)
                 for line in lines[:-2]]
        parsed = self.ok("POST", "/_bulk?filter_path=-took,-items.*._shards", compact(*lines))
        self.assertEqual(set(parsed), {"errors", "items"})
        self.assertEqual(set(parsed["items"][0]["index"]),
                         {"_index", "_id", "_version", "result", "_seq_no", "_primary_term",
                          "status"})
        parsed = self.ok("POST", "/_bulk?filter_path=items.*.error",
                         compact(fast_action("orders-1", "9", 1), order_doc(9)))
        self.assertEqual(parsed, {})


class TestLeanMode(unittest.TestCase):
    """es_server.py --lean: an index's first 1000 fast path documents, and
    then one in 64, are checked; the others are stored unchecked. Versions,
    ids, index names and statuses stay exact."""

    def setUp(self):
        self.proc, port, self.tmp = start_server("--lean")
        self.c = Client(port)
        t = json.loads(json.dumps(ORDERS_TEMPLATE))
        self.assertEqual(self.c.req("PUT", "/_index_template/orders", t)[0], 200)

    def tearDown(self):
        self.c.close()
        stop_server(self.proc, self.tmp)

    def bulk(self, lines):
        st, parsed, raw, _ = self.c.req("POST", "/_bulk?filter_path=errors,items.*.status",
                                        compact(*lines))
        self.assertEqual(st, 200, raw)
        return [i["index"]["status"] if "index" in i else i["delete"]["status"]
                for i in parsed["items"]]

    def test_lean_checks_the_first_documents_then_keeps_versions_exact(self):
        lines = []
        for i in range(999):
            lines += [fast_action("orders-1", str(i), 10), order_doc(i)]
        lines += [fast_action("orders-1", "bad", 10), order_doc(999, qty="seven")]
        self.assertEqual(self.bulk(lines), [201] * 999 + [400])  # checked: the first 1000
        lines = [fast_action("orders-1", "2000", 10), order_doc(2000, qty="seven"),  # 1001st
                 fast_action("orders-1", "5", 9), order_doc(5),
                 fast_action("orders-1", "6", 10), order_doc(6),
                 fast_action("orders-1", "7", 11), order_doc(7),
                 fast_action("orders-1", "8", 11, "delete"),
                 fast_action("orders-1", "8", 10), order_doc(8),
                 fast_action("Bad", "1", 1), order_doc(1)]
        self.assertEqual(self.bulk(lines), [201, 409, 409, 200, 200, 409, 400])
        lines = []
        for i in range(3000, 3060):  # documents 1006..1065: the 1024th is checked
            lines += [fast_action("orders-1", str(i), 1), order_doc(i, qty="x")]
        self.assertEqual(self.bulk(lines), [201] * 18 + [400] + [201] * 41)
        st, stats, _, _ = self.c.req("GET", "/_test/stats")
        self.assertEqual(stats["unchecked_documents"], 5 + 59)
        self.assertEqual(self.c.req("POST", "/orders-1/_refresh")[0], 200)
        st, body, _, _ = self.c.req("GET", "/orders-1/_search?q=order_id:7&version=true")
        self.assertEqual(st, 200)
        self.assertEqual(body["hits"]["hits"][0]["_version"], 11)
        self.assertEqual(body["hits"]["hits"][0]["_source"]["order_id"], "7")
        st, body, _, _ = self.c.req("GET", "/orders-1/_count")
        self.assertEqual(body["count"], 999 - 1 + 1 + 59)

    def test_lean_search_names_the_option_for_a_stored_non_json_document(self):
        lines = []
        for i in range(1000):
            lines += [fast_action("orders-1", str(i), 1), order_doc(i)]
        self.bulk(lines)
        body = compact(fast_action("orders-1", "x", 1)) + '{"order_id":"x",\n'
        st, parsed, raw, _ = self.c.req("POST", "/_bulk", body)
        self.assertEqual(st, 200, raw)
        self.assertEqual(parsed["items"][0]["index"]["status"], 201)
        self.c.req("POST", "/orders-1/_refresh")
        st, parsed, raw, _ = self.c.req("GET", "/orders-1/_count")
        self.assertEqual(st, 500, raw)
        self.assertIn("--lean", parsed["error"]["reason"])


class TestDeleteByQuery(EsTestCase):
    def test_deletes_what_a_search_sees(self):
        self.orders_template()
        docs = []
        for i in range(1, 6):
            docs += [index_action("orders-2024.05.01", str(i)),
                     {"order_id": str(i), "status": "new", "qty": i}]
        self.ok("POST", "/_bulk?refresh=true", ndjson(*docs))
        # written after the last refresh: a search cannot see it, so it stays
        self.ok("POST", "/_bulk", ndjson(index_action("orders-2024.05.01", "6"),
                                         {"order_id": "6", "status": "new", "qty": 0}))
        res = self.ok("POST", "/orders-*/_delete_by_query?conflicts=proceed&refresh=true",
                      {"query": {"range": {"qty": {"lt": 4}}}})
        self.assertEqual(res["deleted"], 3)
        self.assertEqual(res["failures"], [])
        self.assertEqual(self.count("orders-2024.05.01"), 3)  # 4, 5 and the unseen 6
        res = self.ok("POST", "/orders-*/_delete_by_query?refresh=true",
                      {"query": {"range": {"qty": {"lt": 4}}}})
        self.assertEqual(res["deleted"], 1)
        self.assertEqual(self.count("orders-2024.05.01"), 2)

    def test_needs_a_query_and_a_known_conflicts_mode(self):
        self.error("POST", "/orders-*/_delete_by_query", {})
        self.error("POST", "/orders-*/_delete_by_query?conflicts=ignore",
                   {"query": {"match_all": {}}})
        # no index matches a wildcard: nothing to do
        res = self.ok("POST", "/nothing-*/_delete_by_query", {"query": {"match_all": {}}})
        self.assertEqual(res["deleted"], 0)


class TestFaults(EsTestCase):
    BODY = ndjson(index_action("p", "1"), {"a": 1}, index_action("p", "2"), {"a": 1},
                  index_action("p", "3"), {"a": 1}, index_action("p", "4"), {"a": 1})

    def fault(self, **spec):
        self.ok("POST", "/_test/faults", spec)

    def test_whole_request_statuses(self):
        expected = {429: "es_rejected_execution_exception", 503: "cluster_block_exception",
                    500: "exception", 403: "security_exception", 401: "security_exception"}
        for status, etype in expected.items():
            self.fault(type="status", status=status, count=1)
            st, body, raw, _ = self.c.req("POST", "/_bulk", self.BODY)
            self.assertEqual(st, status, raw)
            self.assertEqual(body["error"]["type"], etype)
        self.fault(type="status", status=502)
        st, body, raw, resp = self.c.req("POST", "/_bulk", self.BODY)
        self.assertEqual((st, body), (502, None))
        self.assertIn(b"Bad Gateway", raw)
        self.assertEqual(self.c.req("POST", "/_bulk", self.BODY)[0], 200)

    def test_status_fault_counts_and_until_reset(self):
        self.fault(type="status", status=429, count=2)
        self.assertEqual([self.c.req("POST", "/_bulk", self.BODY)[0] for _ in range(3)],
                         [429, 429, 200])
        self.fault(type="status", status=503, count=-1, path="search")
        self.assertEqual(self.c.req("GET", "/p/_search")[0], 503)
        self.assertEqual(self.c.req("GET", "/p/_search")[0], 503)
        self.ok("POST", "/_test/reset")
        self.assertEqual(self.c.req("GET", "/_search")[0], 200)

    def test_item_faults(self):
        self.fault(type="item_status", status=429, every=2, count=-1)
        b = self.ok("POST", "/_bulk", self.BODY)
        self.assertTrue(b["errors"])
        self.assertEqual([i["index"]["status"] for i in b["items"]], [201, 429, 201, 429])
        self.assertEqual(b["items"][1]["index"]["error"]["type"], "es_rejected_execution_exception")
        self.ok("POST", "/_test/reset")
        self.fault(type="item_status", ids=["3"], count=1)
        b = self.ok("POST", "/_bulk", self.BODY)
        self.assertEqual([i["index"]["status"] for i in b["items"]], [201, 201, 429, 201])
        b = self.ok("POST", "/_bulk", self.BODY)
        self.assertEqual([i["index"]["status"] for i in b["items"]], [200, 200, 201, 200])

    def test_delay(self):
        self.fault(type="delay", delay_ms=300)
        t = time.monotonic()
        b = self.ok("POST", "/_bulk", self.BODY)
        self.assertGreaterEqual(time.monotonic() - t, 0.3)
        self.assertFalse(b["errors"])

    def test_drop_connection(self):
        self.fault(type="drop_connection")
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.c.req("POST", "/_bulk", self.BODY)
        self.c = Client(self.port)
        self.assertEqual(self.c.req("GET", "/_test/docs/p")[2], b"")
        self.fault(type="drop_connection", apply=True)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.c.req("POST", "/_bulk", self.BODY)
        self.c = Client(self.port)
        self.assertEqual(len(self.c.req("GET", "/_test/docs/p")[2].splitlines()), 4)
        self.assertEqual(self.ok("GET", "/_test/stats")["requests"]["bulk"], {"dropped": 2})

    def test_keep_alive_reuses_one_connection(self):
        self.c.close()
        self.c = Client(self.port)  # the reset came on the old connection
        for _ in range(5):
            self.ok("POST", "/_bulk", self.BODY)
        self.assertEqual(self.ok("GET", "/_test/stats")["connections"], 1)
        other = Client(self.port)
        other.req("GET", "/")
        other.close()
        self.assertEqual(self.ok("GET", "/_test/stats")["connections"], 2)


class TestProcess(unittest.TestCase):
    def test_auth(self):
        proc, port, tmp = start_server("--api-key", "c2VjcmV0", "--basic", "pgfan:pw")
        try:
            c = Client(port)
            st, body, _, resp = c.req("GET", "/_cluster/health")
            self.assertEqual(st, 401)
            self.assertEqual(body["error"]["type"], "security_exception")
            self.assertEqual(body["error"]["reason"],
                             "missing authentication credentials for REST request "
                             "[/_cluster/health]")
            self.assertIn("ApiKey", resp.msg.get_all("WWW-Authenticate"))
            self.assertEqual(c.req("GET", "/", headers={"Authorization": "ApiKey nope"})[0], 401)
            self.assertEqual(c.req("GET", "/", headers={"Authorization": "ApiKey c2VjcmV0"})[0],
                             200)
            basic = "Basic " + __import__("base64").b64encode(b"pgfan:pw").decode()
            self.assertEqual(c.req("GET", "/", headers={"Authorization": basic})[0], 200)
            st, body, _, _ = c.req("GET", "/", headers={"Authorization": "Basic "
                                   + __import__("base64").b64encode(b"pgfan:no").decode()})
            self.assertEqual(body["error"]["reason"],
                             "unable to authenticate user [pgfan] for REST request [/]")
            self.assertEqual(c.req("GET", "/_test/stats")[0], 200)
            c.close()
        finally:
            stop_server(proc, tmp)

    def test_sigterm_exits_cleanly(self):
        proc, port, tmp = start_server()
        c = Client(port)
        self.assertEqual(c.req("GET", "/")[0], 200)
        c.close()
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=10), 0)
        shutil.rmtree(tmp, ignore_errors=True)

    @unittest.skipUnless(shutil.which("openssl"), "openssl is needed to make a test certificate")
    def test_tls(self):
        tmp = tempfile.mkdtemp(prefix="es-tls-")
        cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                       capture_output=True)
        proc, port, stmp = start_server("--tls-cert", cert, "--tls-key", key)
        try:
            ctx = ssl.create_default_context(cafile=cert)
            c = Client(port, ctx)
            self.assertEqual(c.req("GET", "/")[0], 200)
            c.close()
            plain = socket.create_connection(("127.0.0.1", port), timeout=5)
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertFalse(plain.recv(100).startswith(b"HTTP/1.1 200"))
            plain.close()
        finally:
            stop_server(proc, stmp)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=1)
