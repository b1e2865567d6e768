"""Test control of the Elasticsearch test server: injected faults and
request statistics (POST /_test/faults, GET /_test/stats).

A fault spec (one object, or {"faults": [...]}):
  {"type": "status", "status": 429|500|502|503|401|403, "count": N, "path": "bulk"}
      answer whole requests with that status (after reading the body)
  {"type": "item_status", "status": 429, "every": K, "count": N}
  {"type": "item_status", "status": 429, "ids": ["1", "7"], "count": N}
      fail bulk items: every K-th item seen, or items with those _ids
  {"type": "delay", "ms": M, "count": N, "path": "bulk"}       ("delay_ms" also accepted)
      execute the request, then wait M ms before answering
  {"type": "drop_connection", "count": N, "path": "bulk", "apply": false}
      read the body, then close the socket without answering ("apply": true
      executes the request first, as if the answer was lost)
count is how many requests (items for item_status) the fault applies to,
-1 until /_test/reset; path is a request kind (bulk, search, count, doc,
template, ilm, refresh, health, root, index, mapping, settings, alias, cat)
or "*" for all.
"""

import threading

from es_util import EsError, illegal_argument

_REQUEST_TYPES = ("status", "delay", "drop_connection")
_KINDS = {"bulk", "search", "count", "doc", "template", "ilm", "refresh", "health", "root",
          "index", "mapping", "settings", "alias", "cat", "*"}


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.faults = []

    def reset(self):
        with self.lock:
            self.faults = []

    def add(self, spec):
        specs = spec.get("faults") if isinstance(spec, dict) and "faults" in spec else [spec]
        checked = [self._check(dict(s)) for s in specs]
        with self.lock:
            self.faults.extend(checked)

    @staticmethod
    def _check(s):
        t = s.get("type")
        if t not in _REQUEST_TYPES + ("item_status",):
            raise illegal_argument("unknown fault type [%s]" % t)
        s.setdefault("count", 1)
        s["count"] = int(s["count"])
        if s["count"] == 0 or s["count"] < -1:
            raise illegal_argument("fault count must be positive or -1")
        if t in _REQUEST_TYPES:
            s.setdefault("path", "bulk")
            if s["path"] not in _KINDS:
                raise illegal_argument("unknown fault path [%s]" % s["path"])
        if t == "item_status":
            s.setdefault("status", 429)
            if "every" not in s and "ids" not in s:
                raise illegal_argument("item_status needs [every] or [ids]")
            if "every" in s and int(s["every"]) < 1:
                raise illegal_argument("[every] must be >= 1")
            s["ids"] = set(str(i) for i in s.get("ids", []))
            s["seen"] = 0
        if t == "delay":
            s["ms"] = int(s.pop("delay_ms", s.get("ms", 0)))
        if t == "status" and "status" not in s:
            raise illegal_argument("status fault needs [status]")
        return s

    def describe(self):
        with self.lock:
            return [{k: (sorted(v) if isinstance(v, set) else v) for k, v in f.items()}
                    for f in self.faults]

    def _use(self, f):
        if f["count"] > 0:
            f["count"] -= 1
            if f["count"] == 0:
                self.faults.remove(f)

    def request_fault(self, kind):
        """The whole-request fault for a request of kind, if any (consumed)."""
        with self.lock:
            for f in self.faults:
                if f["type"] in _REQUEST_TYPES and f["path"] in ("*", kind):
                    self._use(f)
                    return dict(f)
        return None

    def has_item_faults(self):
        with self.lock:
            return any(f["type"] == "item_status" for f in self.faults)

    def item_fault(self, op):
        """The error a bulk item gets from an item_status fault, or None."""
        with self.lock:
            for f in self.faults:
                if f["type"] != "item_status":
                    continue
                if "every" in f:
                    f["seen"] += 1
                    hit = f["seen"] % int(f["every"]) == 0
                else:
                    hit = op.id is not None and op.id in f["ids"]
                if hit:
                    self._use(f)
                    return item_error(int(f["status"]), op)
        return None


def item_error(status, op):
    if status == 429:
        return EsError(429, "es_rejected_execution_exception",
                       "rejected execution of primary operation [coordinating_and_primary_bytes="
                       "104857600, replica_bytes=0, all_bytes=104857600, primary_operation_bytes="
                       "1024, max_coordinating_and_primary_bytes=107374182]")
    if status == 503:
        return EsError(503, "unavailable_shards_exception",
                       "[%s][0] primary shard is not active Timeout: [1m], request: "
                       "[BulkShardRequest [[%s][0]] containing [1] requests]" % (op.index, op.index))
    return EsError(status, "exception", "pgfan test fault: item status %d" % status)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.connections = 0
            self.requests = {}
            self.bulk_requests = 0
            self.items = {}
            self.gzip_requests = 0
            self.max_bulk_bytes = 0
            self.max_bulk_bytes_decoded = 0
            self.max_bulk_items = 0
            self.unchecked = 0

    def connection(self):
        with self.lock:
            self.connections += 1

    def request(self, kind, status):
        with self.lock:
            per = self.requests.setdefault(kind, {})
            per[str(status)] = per.get(str(status), 0) + 1

    def gzip(self):
        with self.lock:
            self.gzip_requests += 1

    def bulk_body(self, wire, decoded):
        with self.lock:
            self.bulk_requests += 1
            self.max_bulk_bytes = max(self.max_bulk_bytes, wire)
            self.max_bulk_bytes_decoded = max(self.max_bulk_bytes_decoded, decoded)

    def bulk_items(self, statuses, n, unchecked=0):
        """statuses: {status (int): items}; n: items in the bulk; unchecked:
        documents stored unchecked (--lean)."""
        with self.lock:
            self.unchecked += unchecked
            for status, count in statuses.items():
                st = str(status)
                self.items[st] = self.items.get(st, 0) + count
            self.max_bulk_items = max(self.max_bulk_items, n)

    def snapshot(self):
        with self.lock:
            return {"connections": self.connections, "requests": self.requests,
                    "bulk_requests": self.bulk_requests, "bulk_items": self.items,
                    "gzip_requests": self.gzip_requests,
                    "max_bulk_body_bytes": self.max_bulk_bytes,
                    "max_bulk_body_bytes_decoded": self.max_bulk_bytes_decoded,
                    "max_items_per_bulk": self.max_bulk_items,
                    "unchecked_documents": self.unchecked}
