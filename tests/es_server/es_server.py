#!/usr/bin/env python3
"""An Elasticsearch 8 test server for pgfan's tests (Python standard library only).

    python3 tests/es_server/es_server.py --port 0 --port-file PATH [--host 127.0.0.1]
        [--tls-cert F --tls-key F] [--api-key KEY] [--basic USER:PASS]
        [--max-content-length BYTES] [--lean] [--verbose]

It answers the subset of the REST API pgfan uses (_bulk, _index_template,
_ilm/policy, _refresh, _search, _count, _doc, mappings, settings, aliases,
_cat/indices, _cluster/health) as strictly as Elasticsearch 8.11 does, and a
test-control API under /_test/ (faults, reset, stats, docs). The bound port
is written to --port-file (atomically) once the server listens; SIGTERM
stops it cleanly. See tests/es_server/README.md for the details.

Bulks shaped like pgfan's (compact index/delete lines with external
versions) take a fast path that answers exactly what the general path
answers (README.md, "Throughput"). --lean is for benchmarks only: after an index's first 1000 documents, 63 in
64 are stored without being parsed or checked against the mapping (action
lines, versions and 409s, ids, index names, statuses stay exact); a bad
document then gets a 201 instead of its 400 (README.md, "Lean mode").
"""

import argparse
import base64
import gc
import gzip
import http.server
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from es_cluster import Cluster, CLUSTER_NAME, NODE_NAME  # noqa: E402
from es_faults import Faults, Stats  # noqa: E402
from es_util import EsError, apply_filter_path, dumps, illegal_argument, loads  # noqa: E402

VERSION = "8.11.0"
_GLOBAL_PARAMS = {"pretty", "human", "error_trace", "filter_path"}
_IDX_OPTS = {"ignore_unavailable", "allow_no_indices", "expand_wildcards"}
_SEARCH_PARAMS = {"q", "size", "from", "sort", "version", "seq_no_primary_term",
                  "track_total_hits", "_source", "_source_includes", "_source_excludes",
                  "timeout", "rest_total_hits_as_int", "typed_keys", "preference", "routing",
                  "request_cache", "search_type", "track_scores", "allow_partial_search_results",
                  "batched_reduce_size", "default_operator", "df", "analyzer", "lenient",
                  "explain", "stored_fields", "terminate_after", "ccs_minimize_roundtrips"} | _IDX_OPTS
_COUNT_PARAMS = {"q", "default_operator", "df", "analyzer", "lenient", "routing", "preference",
                 "min_score", "terminate_after"} | _IDX_OPTS
_DBQ_PARAMS = {"conflicts", "refresh", "q", "default_operator", "df", "analyzer", "lenient",
               "routing", "preference", "max_docs", "scroll_size", "slices", "timeout",
               "wait_for_completion", "wait_for_active_shards", "requests_per_second",
               "search_timeout", "request_cache"} | _IDX_OPTS
_BULK_PARAMS = {"refresh", "routing", "pipeline", "require_alias", "require_data_stream",
                "wait_for_active_shards", "timeout", "_source", "_source_includes",
                "_source_excludes", "list_executed_pipelines"}
_ADMIN_PARAMS = {"master_timeout", "timeout", "wait_for_active_shards", "flat_settings",
                 "include_defaults", "local", "create", "cause", "write_index_only",
                 "preserve_existing", "reopen"} | _IDX_OPTS
_HEALTH_PARAMS = {"wait_for_status", "timeout", "level", "local", "master_timeout",
                  "wait_for_nodes", "wait_for_events", "wait_for_no_relocating_shards",
                  "wait_for_no_initializing_shards", "wait_for_active_shards"}
_CAT_PARAMS = {"format", "h", "s", "v", "help", "bytes", "health", "pri", "local",
               "master_timeout", "time", "include_unloaded_segments"} | _IDX_OPTS
_DOC_PARAMS = {"_source", "_source_includes", "_source_excludes", "realtime", "refresh",
               "routing", "preference", "stored_fields", "version", "version_type"}


class Route:
    def __init__(self, methods, pattern, func, kind, params):
        self.methods = set(methods.split("|"))
        self.regex = re.compile("^" + pattern + "$")
        self.func = func
        self.kind = kind
        self.params = params | _GLOBAL_PARAMS


def _routes():
    idx = r"/(?P<index>[^/_][^/]*)"
    return [
        Route("GET|HEAD", r"/", "h_root", "root", set()),
        Route("GET", r"/_cluster/health(?:/(?P<index>[^/]+))?", "h_health", "health",
              _HEALTH_PARAMS),
        Route("PUT|POST", r"/_index_template/(?P<name>[^/]+)", "h_put_template", "template",
              _ADMIN_PARAMS),
        Route("GET|HEAD", r"/_index_template(?:/(?P<name>[^/]+))?", "h_get_template", "template",
              _ADMIN_PARAMS),
        Route("DELETE", r"/_index_template/(?P<name>[^/]+)", "h_delete_template", "template",
              _ADMIN_PARAMS),
        Route("PUT", r"/_ilm/policy/(?P<name>[^/]+)", "h_put_policy", "ilm", _ADMIN_PARAMS),
        Route("GET", r"/_ilm/policy(?:/(?P<name>[^/]+))?", "h_get_policy", "ilm", _ADMIN_PARAMS),
        Route("DELETE", r"/_ilm/policy/(?P<name>[^/]+)", "h_delete_policy", "ilm", _ADMIN_PARAMS),
        Route("POST|PUT", r"/_bulk", "h_bulk", "bulk", _BULK_PARAMS),
        Route("POST|PUT", idx + r"/_bulk", "h_bulk", "bulk", _BULK_PARAMS),
        Route("POST|GET", r"/_refresh", "h_refresh", "refresh", _IDX_OPTS),
        Route("POST|GET", r"/(?P<index>[^/]+)/_refresh", "h_refresh", "refresh", _IDX_OPTS),
        Route("GET|POST", r"/_search", "h_search", "search", _SEARCH_PARAMS),
        Route("GET|POST", r"/(?P<index>[^/]+)/_search", "h_search", "search", _SEARCH_PARAMS),
        Route("POST", r"/(?P<index>[^/]+)/_delete_by_query", "h_delete_by_query",
              "delete_by_query", _DBQ_PARAMS),
        Route("GET|POST", r"/_count", "h_count", "count", _COUNT_PARAMS),
        Route("GET|POST", r"/(?P<index>[^/]+)/_count", "h_count", "count", _COUNT_PARAMS),
        Route("GET|HEAD", idx + r"/_doc/(?P<id>[^/]+)", "h_get_doc", "doc", _DOC_PARAMS),
        Route("GET", idx + r"/_source/(?P<id>[^/]+)", "h_get_source", "doc", _DOC_PARAMS),
        Route("GET", r"/_alias(?:/(?P<name>[^/]+))?", "h_alias", "alias", _IDX_OPTS | {"local"}),
        Route("GET", r"/(?P<index>[^/]+)/_alias(?:/(?P<name>[^/]+))?", "h_alias", "alias",
              _IDX_OPTS | {"local"}),
        Route("GET|PUT", r"/(?P<index>[^/]+)/_mapping", "h_mapping", "mapping", _ADMIN_PARAMS),
        Route("GET|PUT", r"/(?P<index>[^/]+)/_settings", "h_settings", "settings",
              _ADMIN_PARAMS),
        Route("GET", r"/_cat/indices(?:/(?P<index>[^/]+))?", "h_cat_indices", "cat",
              _CAT_PARAMS),
        Route("POST", r"/_test/faults", "h_test_faults", "test", set()),
        Route("POST", r"/_test/reset", "h_test_reset", "test", set()),
        Route("GET", r"/_test/stats", "h_test_stats", "test", set()),
        Route("GET", r"/_test/docs/(?P<pattern>[^/]+)", "h_test_docs", "test", set()),
        Route("PUT|HEAD|GET|DELETE", idx, "h_index", "index", _ADMIN_PARAMS),
    ]


ROUTES = _routes()


class Response:
    def __init__(self, status, body=None, ctype="application/json", headers=None, raw=None):
        self.status = status
        self.body = body
        self.ctype = ctype
        self.headers = headers or {}
        self.raw = raw


class DropConnection(Exception):
    pass


def _error_response(e):
    if getattr(e, "simple", False):
        body = {"error": e.reason, "status": e.status}
    else:
        body = e.body()
    return Response(e.status, body, headers=dict(e.headers))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pgfan-es-test"
    sys_version = ""

    def setup(self):
        # answers go out as one write; without NODELAY a second segment would
        # wait for the client's delayed ACK (40 ms)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self.close_connection = True
                raise
            self.request.settimeout(None)
        self.server.stats.connection()

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("es_server: %s\n" % (fmt % args))

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_HEAD(self):
        self.dispatch("HEAD")

    # --- request ------------------------------------------------------------------------

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        if n > self.server.max_content_length:
            return None
        return self.rfile.read(n) if n else b""

    def dispatch(self, method):
        started = time.monotonic()
        url = urllib.parse.urlsplit(self.path)
        path = url.path or "/"
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query,
                                                             keep_blank_values=True).items()}
        body = self._read_body()
        kind = "unknown"
        try:
            if body is None:
                self._send(Response(413, None), close=True)
                self.server.stats.request("too_large", 413)
                return
            wire_bytes = len(body)
            if not path.startswith("/_test/"):
                self._check_auth(path, url)  # security runs before routing in ES
            route, groups = self._route(method, path)
            kind = route.kind
            if kind != "test":
                body = self._decode_body(body)
                if kind == "bulk":
                    self.server.stats.bulk_body(wire_bytes, len(body))
                self._check_params(route, path, params)
                self._check_content_type(body, kind)
                fault = self.server.faults.request_fault(kind)
                if fault is not None:
                    resp = self._apply_fault(fault, kind, method, route, groups, params, body)
                else:
                    resp = getattr(self, route.func)(method, groups, params, body)
            else:
                resp = getattr(self, route.func)(method, groups, params, body)
        except DropConnection:
            self.server.stats.request(kind, "dropped")
            self.close_connection = True
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        except EsError as e:
            resp = _error_response(e)
        except Exception as e:  # a bug of the test server: say so loudly
            traceback.print_exc()
            resp = Response(500, {"error": {"root_cause": [{"type": "exception", "reason": repr(e)}],
                                            "type": "exception", "reason": repr(e)},
                                  "status": 500})
        if kind != "test":
            self.server.stats.request(kind, resp.status)
        if "filter_path" in params and isinstance(resp.body, (dict, list)) and resp.raw is None:
            resp.body = apply_filter_path(resp.body, params["filter_path"])
        self._send(resp, head=method == "HEAD")
        if self.server.verbose:
            sys.stderr.write("es_server: %s %s -> %s (%.1f ms)\n" % (
                method, self.path, resp.status, (time.monotonic() - started) * 1000))

    def _route(self, method, path):
        allowed = []
        for r in ROUTES:
            m = r.regex.match(path)
            if not m:
                continue
            # like RestController, HEAD is served by the GET handler
            if method in r.methods or (method == "HEAD" and "GET" in r.methods):
                groups = {k: urllib.parse.unquote(v) if v is not None else None
                          for k, v in m.groupdict().items()}
                return r, groups
            allowed.extend(sorted(r.methods))
        if allowed:
            e = EsError(405, "", "Incorrect HTTP method for uri [%s] and method [%s], allowed: [%s]"
                        % (self.path, method, ", ".join(sorted(set(allowed)))))
            e.simple = True
            raise e
        e = EsError(400, "", "no handler found for uri [%s] and method [%s]" % (self.path, method))
        e.simple = True
        raise e

    def _decode_body(self, body):
        enc = (self.headers.get("Content-Encoding") or "").strip().lower()
        if not enc or enc == "identity" or not body:
            return body
        self.server.stats.gzip()
        try:
            if enc in ("gzip", "x-gzip"):
                return gzip.decompress(body)
            if enc == "deflate":
                return zlib.decompress(body)
        except (OSError, zlib.error, EOFError) as e:
            raise EsError(400, "illegal_argument_exception",
                          "could not decompress the request body: %s" % e)
        raise EsError(400, "illegal_argument_exception",
                      "unsupported Content-Encoding [%s]" % enc)

    def _check_params(self, route, path, params):
        unknown = sorted(p for p in params if p not in route.params)
        if unknown:
            if len(unknown) == 1:
                msg = "request [%s] contains unrecognized parameter: [%s]" % (path, unknown[0])
            else:
                msg = "request [%s] contains unrecognized parameters: %s" % (
                    path, ", ".join("[%s]" % p for p in unknown))
            raise illegal_argument(msg)

    def _check_content_type(self, body, kind):
        if not body:
            return
        header = self.headers.get("Content-Type")
        if header is None:
            e = EsError(406, "", "Content-Type header is missing")
            e.simple = True
            raise e
        mime = header.split(";")[0].strip().lower()
        ok = {"application/json", "application/x-ndjson",
              "application/vnd.elasticsearch+json", "application/vnd.elasticsearch+x-ndjson"}
        if mime not in ok:
            e = EsError(406, "", "Content-Type header [%s] is not supported" % header)
            e.simple = True
            raise e

    def _check_auth(self, path, url):
        srv = self.server
        if not srv.api_key and not srv.basic:
            return
        uri = url.path + ("?" + url.query if url.query else "")
        header = self.headers.get("Authorization")
        if header is None:
            raise _auth_error("missing authentication credentials for REST request [%s]" % uri)
        scheme, _, cred = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "apikey" and srv.api_key and cred.strip() == srv.api_key:
            return
        if scheme == "basic" and srv.basic:
            try:
                decoded = base64.b64decode(cred.strip()).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            if decoded == srv.basic:
                return
            raise _auth_error("unable to authenticate user [%s] for REST request [%s]"
                              % (decoded.partition(":")[0], uri))
        raise _auth_error("unable to authenticate with provided credentials and anonymous access "
                          "is not allowed for this request")

    def _send(self, resp, head=False, close=False):
        if resp.raw is not None:
            data = resp.raw
        elif resp.body is None:
            data = b""
        else:
            data = dumps(resp.body).encode("utf-8")
        self.send_response(resp.status)
        if resp.body is not None or resp.raw is not None:
            self.send_header("Content-Type", resp.ctype)
        if resp.status not in (401, 502):
            self.send_header("X-elastic-product", "Elasticsearch")
        for name, value in resp.headers.items():
            for v in value if isinstance(value, list) else [value]:
                self.send_header(name, v)
        accept = self.headers.get("Accept-Encoding", "") or ""
        if data and "gzip" in accept.lower() and not head:
            data = gzip.compress(data, compresslevel=3)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", "0" if head else str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self._headers_buffer.append(b"\r\n")
        if not head and data:
            self._headers_buffer.append(data)
        self.flush_headers()

    def _json(self, body):
        if not body:
            return None
        try:
            return loads(body)
        except ValueError as e:
            raise EsError(400, "x_content_parse_exception", "[%d:%d] %s" % (
                getattr(e, "lineno", 1), getattr(e, "colno", 1), getattr(e, "msg", str(e))))

    # --- faults ---------------------------------------------------------------------------

    def _apply_fault(self, fault, kind, method, route, groups, params, body):
        ftype = fault["type"]
        if ftype == "delay":
            resp = getattr(self, route.func)(method, groups, params, body)
            time.sleep(fault.get("ms", 0) / 1000.0)
            return resp
        if ftype == "drop_connection":
            if fault.get("apply"):
                getattr(self, route.func)(method, groups, params, body)
            raise DropConnection()
        return _fault_status(fault, self.path)

    # --- handlers ---------------------------------------------------------------------------

    def h_root(self, method, g, params, body):
        return Response(200, {
            "name": NODE_NAME, "cluster_name": CLUSTER_NAME,
            "cluster_uuid": self.server.cluster_uuid,
            "version": {"number": VERSION, "build_flavor": "default", "build_type": "docker",
                        "build_hash": "d9ec3fa628c7b0ba3d25692e277ba26814820b20",
                        "build_date": "2023-11-04T10:04:57.184859352Z", "build_snapshot": False,
                        "lucene_version": "9.8.0", "minimum_wire_compatibility_version": "7.17.0",
                        "minimum_index_compatibility_version": "7.0.0"},
            "tagline": "You Know, for Search"})

    def h_health(self, method, g, params, body):
        want = params.get("wait_for_status")
        rank = {"green": 0, "yellow": 1, "red": 2}
        if want is not None and want not in rank:
            raise illegal_argument("unknown cluster health status [%s]" % want)
        cl = self.server.cluster
        if want is not None and rank[cl.health_status()] > rank[want]:
            from es_util import parse_time_ms
            deadline = time.monotonic() + parse_time_ms(params.get("timeout", "30s"),
                                                        "timeout") / 1000.0
            while time.monotonic() < deadline and rank[cl.health_status()] > rank[want]:
                time.sleep(0.05)
            if rank[cl.health_status()] > rank[want]:
                out = cl.health()
                out["timed_out"] = True
                return Response(408, out)
        return Response(200, cl.health())

    def h_put_template(self, method, g, params, body):
        return Response(*self.server.cluster.put_template(
            g["name"], self._json(body), params.get("create") in ("true", "")))

    def h_get_template(self, method, g, params, body):
        return Response(*self.server.cluster.get_template(g.get("name")))

    def h_delete_template(self, method, g, params, body):
        return Response(*self.server.cluster.delete_template(g["name"]))

    def h_put_policy(self, method, g, params, body):
        return Response(*self.server.cluster.put_policy(g["name"], self._json(body)))

    def h_get_policy(self, method, g, params, body):
        return Response(*self.server.cluster.get_policy(g.get("name")))

    def h_delete_policy(self, method, g, params, body):
        return Response(*self.server.cluster.delete_policy(g["name"]))

    def h_bulk(self, method, g, params, body):
        refresh = params.get("refresh", "false")
        if refresh == "":
            refresh = "true"
        if refresh not in ("true", "false", "wait_for"):
            raise illegal_argument("Unknown value for refresh: [%s]." % refresh)
        faults = self.server.faults
        resp, warnings, ex = self.server.cluster.bulk(
            body, g.get("index"), refresh, faults.item_fault if faults.has_item_faults() else None,
            lazy="filter_path" in params)
        self.server.stats.bulk_items(ex.statuses, len(resp["items"]), ex.unchecked)
        headers = {}
        if warnings:
            headers["Warning"] = ['299 Elasticsearch-%s "%s"' % (VERSION, w) for w in warnings]
        return Response(200, resp, headers=headers)

    def h_refresh(self, method, g, params, body):
        return Response(*self.server.cluster.refresh(g.get("index")))

    def h_search(self, method, g, params, body):
        return Response(*self.server.cluster.search(g.get("index"), self._json(body), params))

    def h_count(self, method, g, params, body):
        return Response(*self.server.cluster.count(g.get("index"), self._json(body), params))

    def h_delete_by_query(self, method, g, params, body):
        conflicts = params.get("conflicts", "abort")
        if conflicts not in ("abort", "proceed"):
            raise illegal_argument("conflicts may only contain one of [abort, proceed] but "
                                   "was [%s]" % conflicts)
        refresh = params.get("refresh", "false") in ("", "true")
        return Response(*self.server.cluster.delete_by_query(
            g.get("index"), self._json(body), params, conflicts == "proceed", refresh))

    def h_get_doc(self, method, g, params, body):
        source = params.get("_source", "true") != "false"
        return Response(*self.server.cluster.get_doc(g["index"], g["id"], source))

    def h_get_source(self, method, g, params, body):
        status, doc = self.server.cluster.get_doc(g["index"], g["id"], True)
        if status != 200:
            raise EsError(404, "resource_not_found_exception",
                          "Document not found [%s]/[%s]" % (g["index"], g["id"]))
        return Response(200, raw=doc["_source"].text.encode("utf-8"))

    def h_alias(self, method, g, params, body):
        return Response(*self.server.cluster.get_alias(g.get("name"), g.get("index")))

    def h_mapping(self, method, g, params, body):
        if method == "PUT":
            return Response(*self.server.cluster.put_mapping(g["index"], self._json(body)))
        return Response(*self.server.cluster.get_mapping(g["index"]))

    def h_settings(self, method, g, params, body):
        if method == "PUT":
            return Response(*self.server.cluster.put_settings(g["index"], self._json(body)))
        return Response(*self.server.cluster.get_settings(g["index"]))

    def h_index(self, method, g, params, body):
        cl = self.server.cluster
        if method == "HEAD":
            return Response(200 if cl.index_exists(g["index"]) else 404)
        if method == "PUT":
            return Response(*cl.create_index(g["index"], self._json(body)))
        if method == "DELETE":
            return Response(*cl.delete_index(g["index"]))
        return Response(*cl.get_index(g["index"]))

    def h_cat_indices(self, method, g, params, body):
        rows = self.server.cluster.cat_indices(g.get("index"))
        cols = params.get("h", "health,status,index,uuid,pri,rep,docs.count,docs.deleted,"
                               "store.size,pri.store.size,dataset.size").split(",")
        if "s" in params:
            for key in reversed(params["s"].split(",")):
                field, _, order = key.partition(":")
                rows.sort(key=lambda r: r.get(field, ""), reverse=order == "desc")
        rows = [{c: r.get(c) for c in cols} for r in rows]
        if params.get("format") == "json":
            return Response(200, rows)
        lines = []
        if "v" in params:
            lines.append(" ".join(cols))
        lines.extend(" ".join(str(r[c]) for c in cols) for r in rows)
        text = "".join(line + "\n" for line in lines)
        return Response(200, raw=text.encode("utf-8"), ctype="text/plain; charset=UTF-8")

    def h_test_faults(self, method, g, params, body):
        spec = self._json(body) or {}
        self.server.faults.add(spec)
        return Response(200, {"acknowledged": True, "faults": self.server.faults.describe()})

    def h_test_reset(self, method, g, params, body):
        self.server.cluster.reset()
        self.server.faults.reset()
        self.server.stats.reset()
        return Response(200, {"acknowledged": True})

    def h_test_stats(self, method, g, params, body):
        return Response(200, self.server.stats.snapshot())

    def h_test_docs(self, method, g, params, body):
        lines = self.server.cluster.test_docs(g["pattern"])
        return Response(200, raw="".join(line + "\n" for line in lines).encode("utf-8"),
                        ctype="application/x-ndjson")


_WWW_AUTHENTICATE = ['Basic realm="security" charset="UTF-8"', 'Bearer realm="security"',
                     "ApiKey"]


def _auth_error(reason):
    e = EsError(401, "security_exception", reason,
                {"header": {"WWW-Authenticate": _WWW_AUTHENTICATE}})
    e.headers["WWW-Authenticate"] = list(_WWW_AUTHENTICATE)
    return e


def _fault_status(fault, path):
    status = int(fault.get("status", 500))
    if status == 502:
        page = b"<html><body><h1>502 Bad Gateway</h1>The proxy got no answer.</body></html>\n"
        return Response(502, raw=page, ctype="text/html")
    if status == 401:
        raise _auth_error("unable to authenticate user [pgfan] for REST request [%s]" % path)
    if status == 403:
        raise EsError(403, "security_exception",
                      "action [indices:data/write/bulk] is unauthorized for user [pgfan] with "
                      "effective roles [pgfan_writer], this action is granted by the index "
                      "privileges [create_doc,create,index,write,all]")
    if status == 429:
        raise EsError(429, "es_rejected_execution_exception",
                      "rejected execution of coordinating operation [coordinating_and_primary_bytes"
                      "=104857600, replica_bytes=0, all_bytes=104857600, "
                      "coordinating_operation_bytes=1048576, max_coordinating_and_primary_bytes="
                      "107374182]")
    if status == 503:
        raise EsError(503, "cluster_block_exception",
                      "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];")
    raise EsError(status, "exception", "pgfan test fault: HTTP %d" % status)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, args):
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.address_family = family
        super().__init__(addr, Handler)
        self.cluster = Cluster(lean=args.lean)
        self.faults = Faults()
        self.stats = Stats()
        self.api_key = args.api_key
        self.basic = args.basic
        self.verbose = args.verbose
        self.max_content_length = args.max_content_length
        self.cluster_uuid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")[:22]
        self.tls = None
        if args.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
            self.tls = ctx

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def _write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description="Elasticsearch 8 test server for pgfan")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--api-key")
    p.add_argument("--basic", help="USER:PASS")
    p.add_argument("--max-content-length", type=int, default=100 * 1024 * 1024)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--lean", action="store_true",
                   help="benchmarks: after an index's first 1000 documents, store 63 in 64 "
                        "unchecked (README.md, Lean mode)")
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    # A bulk keeps thousands of objects alive until it is answered (ops, parsed
    # documents, items) and the indices keep every document: with the default
    # threshold (700) the collector runs ~10 times per bulk and rescans what
    # survives, about 40 % of the bulk path's CPU. Garbage here is freed by
    # reference counting; cycles (tracebacks) are rare, so collect rarely.
    gc.set_threshold(100000, 50, 100)
    server = Server((args.host, args.port), args)
    port = server.server_address[1]

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        _write_port_file(args.port_file, port)
    sys.stderr.write("es_server: listening on %s:%d%s%s\n" % (
        args.host, port, " (TLS)" if server.tls else "", " (lean)" if args.lean else ""))
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
