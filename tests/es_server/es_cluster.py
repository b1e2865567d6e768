"""The in-memory cluster of the Elasticsearch 8 test server: indices,
aliases, templates, ILM policies, and the APIs over them. Every public
method runs under the one cluster lock; HTTP handlers call these and
render the returned (status, body) or the raised EsError.
"""

import threading
import time

import es_search
from es_bulk import BulkExecutor, bulk_response, deep_merge, parse_bulk
from es_index import Index, nest_settings, normalize_settings, STATIC_SETTINGS
from es_mapping import compile_mapping, merge_mapping
from es_templates import (find_template, template_view, validate_aliases, validate_policy,
                          validate_template, now_iso)
from es_util import (EsError, NA, Raw, apply_filter_path, glob_match, illegal_argument,
                     index_not_found, index_name_problem, invalid_index_name, simple_error,
                     dumps)

CLUSTER_NAME = "pgfan-es-test"
NODE_NAME = "pgfan-es-test-node"


def _resource_not_found(reason):
    return EsError(404, "resource_not_found_exception", reason)


class Cluster:
    def __init__(self, lean=False):
        self.lock = threading.RLock()
        self.lean = lean  # es_server.py --lean (see es_bulk.LEAN_CHECKED)
        self.reset()

    def reset(self):
        with self.lock:
            self.indices = {}
            self.templates = {}
            self.policies = {}

    # --- names -------------------------------------------------------------------------

    def _aliases(self):
        out = {}
        for ix in self.indices.values():
            for alias, body in ix.aliases.items():
                out.setdefault(alias, []).append((ix, body))
        return out

    def _resolve_write(self, name, op):
        ix = self.indices.get(name)
        if ix is not None:
            return ix
        members = self._aliases().get(name)
        if members:
            writers = [ix for ix, body in members if body.get("is_write_index") is True]
            if writers:
                return writers[0]
            if len(members) == 1 and members[0][1].get("is_write_index") is not False:
                return members[0][0]
            raise illegal_argument(
                "no write index is defined for alias [%s]. The write index may be explicitly "
                "disabled using is_write_index=false or the alias points to multiple indices "
                "without one being designated as a write index" % name)
        problem = index_name_problem(name)
        if problem:
            raise invalid_index_name(name, problem)
        if op is not None and op.action == "delete" and op.version_type == "internal":
            raise index_not_found(name, "index_expression")
        return self._create(name, None, auto=True)

    def _resolve_search(self, expr, allow_missing=False):
        """[(Index, filters)] for an index expression; filters is None when
        some part of the expression names the index without an alias filter."""
        tokens = [t for t in (expr or "_all").split(",") if t]
        picked = {}
        aliases = self._aliases()

        def add(ix, flt):
            if ix.name not in picked:
                picked[ix.name] = [ix, [] if flt is not None else None]
            entry = picked[ix.name]
            if flt is None:
                entry[1] = None
            elif entry[1] is not None:
                entry[1].append(flt)

        for t in tokens:
            if t.startswith("-") and picked:
                for name in [n for n in picked if glob_match(t[1:], n)]:
                    del picked[name]
                continue
            if t in ("_all", "*"):
                for ix in self.indices.values():
                    if not ix.name.startswith("."):
                        add(ix, None)
                continue
            if "*" in t:
                for ix in self.indices.values():
                    if glob_match(t, ix.name) and (t.startswith(".") or
                                                   not ix.name.startswith(".")):
                        add(ix, None)
                for alias, members in aliases.items():
                    if glob_match(t, alias):
                        for ix, body in members:
                            add(ix, body.get("filter"))
                continue
            if t in self.indices:
                add(self.indices[t], None)
            elif t in aliases:
                for ix, body in aliases[t]:
                    add(ix, body.get("filter"))
            elif not allow_missing:
                raise index_not_found(t)
        out = []
        for ix, filters in picked.values():
            if filters:
                compiled = [es_search.compile_query(f) for f in filters]
                out.append((ix, compiled))
            else:
                out.append((ix, None))
        return out

    def _single_index(self, name):
        if name in self.indices:
            return self.indices[name]
        members = self._aliases().get(name)
        if members:
            if len(members) > 1:
                raise illegal_argument(
                    "alias [%s] has more than one index associated with it [%s], can't execute a "
                    "single index op" % (name, ", ".join(ix.name for ix, _ in members)))
            return members[0][0]
        raise index_not_found(name)

    # --- indices -------------------------------------------------------------------------------

    def _create(self, name, body, auto):
        if name in self.indices:
            ix = self.indices[name]
            raise EsError(400, "resource_already_exists_exception",
                          "index [%s/%s] already exists" % (name, ix.uuid),
                          {"index_uuid": ix.uuid, "index": name})
        if name in self._aliases():
            raise invalid_index_name(name, "already exists as alias")
        found = find_template(self.templates, name)
        settings, mappings, aliases = {}, {}, {}
        if found:
            tname, t = found
            if "data_stream" in t:
                raise illegal_argument("index [%s] matches the data stream template [%s]: data "
                                       "streams are not implemented by the pgfan Elasticsearch "
                                       "test server" % (name, tname))
            if auto and t.get("allow_auto_create") is False:
                e = index_not_found(name, "index_expression")
                e.reason = ("no such index [%s] and composable template [%s] forbids index auto "
                            "creation" % (name, tname))
                raise e
            tbody = t.get("template", {})
            settings.update(tbody.get("settings", {}))
            mappings = tbody.get("mappings") or {}
            aliases.update(tbody.get("aliases", {}))
        if body:
            for key in body:
                if key not in ("settings", "mappings", "aliases"):
                    raise EsError(400, "parse_exception", "unknown key [%s] for create index" % key)
            settings.update(normalize_settings(body.get("settings")))
            req_map = body.get("mappings") or {}
            if list(req_map) == ["_doc"]:
                req_map = req_map["_doc"]
            mappings = deep_merge(mappings, req_map)
            aliases.update(validate_aliases(body.get("aliases"), es_search.compile_query))
        existing = self._aliases()
        for alias, body in aliases.items():
            if body.get("is_write_index") is True:
                writers = sorted(ix.name for ix, b in existing.get(alias, [])
                                 if b.get("is_write_index") is True)
                if writers:
                    raise EsError(500, "illegal_state_exception",
                                  "alias [%s] has more than one write index [%s]"
                                  % (alias, ",".join([name] + writers)))
        for alias in aliases:
            if alias in self.indices or alias == name:
                raise EsError(400, "invalid_alias_name_exception",
                              "Invalid alias name [%s]: an index or data stream exists with the "
                              "same name as the alias" % alias, {"index_uuid": NA, "index": alias})
        mapping = compile_mapping(mappings, settings)
        ix = Index(name, settings, mapping, dict(aliases))
        self.indices[name] = ix
        return ix

    def create_index(self, name, body):
        with self.lock:
            problem = index_name_problem(name)
            if problem:
                raise invalid_index_name(name, problem)
            self._create(name, body, auto=False)
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def delete_index(self, expr):
        with self.lock:
            names = [t for t in expr.split(",") if t]
            if any("*" in t or t == "_all" for t in names):
                raise illegal_argument("Wildcard expressions or all indices are not allowed")
            aliases = self._aliases()
            for t in names:
                if t not in self.indices:
                    if t in aliases:
                        raise illegal_argument(
                            "The provided expression [%s] matches an alias, specify the "
                            "corresponding concrete indices instead." % t)
                    raise index_not_found(t)
            for t in names:
                del self.indices[t]
            return 200, {"acknowledged": True}

    def index_exists(self, expr):
        with self.lock:
            try:
                return bool(self._resolve_search(expr))
            except EsError:
                return False

    def get_mapping(self, expr):
        with self.lock:
            return 200, {ix.name: {"mappings": ix.mapping.to_json()}
                         for ix, _ in self._resolve_search(expr)}

    def put_mapping(self, expr, body):
        with self.lock:
            targets = [ix for ix, _ in self._resolve_search(expr)]
            if not targets:
                raise index_not_found(expr)
            merged = [(ix, merge_mapping(ix.mapping, body or {})) for ix in targets]
            for ix, root in merged:
                ix.mapping = root
            return 200, {"acknowledged": True}

    def get_index(self, expr):
        with self.lock:
            return 200, {ix.name: {"aliases": ix.aliases, "mappings": ix.mapping.to_json(),
                                   "settings": nest_settings(ix.settings)}
                         for ix, _ in self._resolve_search(expr)}

    def get_settings(self, expr):
        with self.lock:
            return 200, {ix.name: {"settings": nest_settings(ix.settings)}
                         for ix, _ in self._resolve_search(expr)}

    def put_settings(self, expr, body):
        with self.lock:
            targets = [ix for ix, _ in self._resolve_search(expr)]
            settings = (body or {}).get("settings", body or {})
            flat = normalize_settings(settings)
            static = [k for k in flat if k[len("index."):] in STATIC_SETTINGS]
            if static:
                raise illegal_argument("Can't update non dynamic settings [[%s]] for open indices "
                                       "[%s]" % (", ".join(static), ", ".join(
                                           "[%s/%s]" % (ix.name, ix.uuid) for ix in targets)))
            for ix in targets:
                ix.settings.update(flat)
                ix.apply_dynamic_settings()
            return 200, {"acknowledged": True}

    def get_alias(self, name, index_expr=None):
        with self.lock:
            targets = self._resolve_search(index_expr) if index_expr else [
                (ix, None) for ix in self.indices.values()]
            out = {}
            for ix, _ in targets:
                matched = {a: b for a, b in ix.aliases.items()
                           if name is None or any(glob_match(n, a) for n in name.split(","))}
                if matched or name is None:
                    out[ix.name] = {"aliases": matched}
            if name is not None and not out:
                raise simple_error(404, "alias [%s] missing" % name)
            return 200, out

    def refresh(self, expr):
        with self.lock:
            targets = self._resolve_search(expr)
            for ix, _ in targets:
                ix.refresh()
            shards = sum(ix.shards * (1 + ix.replicas) for ix, _ in targets)
            ok = sum(ix.shards for ix, _ in targets)
            return 200, {"_shards": {"total": shards, "successful": ok, "failed": 0}}

    # --- documents ---------------------------------------------------------------------------------

    def bulk(self, body, default_index, refresh, item_fault, lazy=False):
        started = time.monotonic()
        # parsing under the lock too: Python runs one thread at a time anyway,
        # and bulks waiting here sleep instead of contending for the GIL
        with self.lock:
            ops, warnings = parse_bulk(body, default_index)
            ex = BulkExecutor(self._resolve_write, item_fault, refresh == "true", self.lean)
            items, errors = ex.run(ops)
            for ix in ex.touched.values():
                if refresh in ("true", "wait_for"):
                    ix.refresh()
                else:
                    ix.scheduled_refresh()
        return bulk_response(items, errors, started, lazy), warnings, ex

    def get_doc(self, expr, doc_id, source=True):
        with self.lock:
            ix = self._single_index(expr)
            doc = ix.docs.get(doc_id)
            if doc is None:
                return 404, {"_index": ix.name, "_id": doc_id, "found": False}
            out = {"_index": ix.name, "_id": doc_id, "_version": doc.version,
                   "_seq_no": doc.seq_no, "_primary_term": 1, "found": True}
            if source:
                out["_source"] = Raw(doc.raw)
            return 200, out

    def test_docs(self, pattern):
        """Every live document of the indices matching pattern, in index then
        id order, ignoring refresh (test control API)."""
        with self.lock:
            names = sorted(n for n in self.indices
                           if any(glob_match(p, n) for p in pattern.split(",")))
            lines = []
            for n in names:
                ix = self.indices[n]
                for doc_id in sorted(ix.docs):
                    d = ix.docs[doc_id]
                    lines.append(dumps({"_index": n, "_id": doc_id, "_version": d.version,
                                        "_source": Raw(d.raw)}))
            return lines

    # --- search -----------------------------------------------------------------------------------------

    def search(self, expr, body, params):
        with self.lock:
            return es_search_run(self, expr, body, params)

    def count(self, expr, body, params):
        with self.lock:
            targets = self._resolve_search(expr, allow_missing=False)
            query = _query_of(body, params)
            n = 0
            for ix, filters in targets:
                ix.scheduled_refresh()
                for doc_id, doc in ix.searchable.items():
                    d = (doc_id, doc.source)
                    if filters and not any(f.match(ix, d) for f in filters):
                        continue
                    if query.match(ix, d):
                        n += 1
            shards = sum(ix.shards for ix, _ in targets)
            return 200, {"count": n, "_shards": {"total": shards, "successful": shards,
                                                 "skipped": 0, "failed": 0}}

    def delete_by_query(self, expr, body, params, proceed, refresh):
        """POST {index}/_delete_by_query: like ES, it deletes what a search
        sees at its start (refreshed documents only), each delete checked
        against the seq_no that search saw; a document changed since is a
        version conflict (counted with conflicts=proceed, else 409)."""
        started = time.monotonic()
        with self.lock:
            if body is None or "query" not in body:
                raise EsError(400, "action_request_validation_exception",
                              "Validation Failed: 1: query is missing;")
            targets = self._resolve_search(expr, allow_missing=False)
            query = _query_of(body, params)
            deleted = conflicts = 0
            failures = []
            for ix, filters in targets:
                ix.scheduled_refresh()
                for doc_id, seen in list(ix.searchable.items()):
                    d = (doc_id, seen.source)
                    if filters and not any(f.match(ix, d) for f in filters):
                        continue
                    if not query.match(ix, d):
                        continue
                    op = _DbqOp(seen.seq_no)
                    try:
                        ix.delete(doc_id, op)
                        deleted += 1
                    except EsError as e:
                        if e.status != 409:
                            raise
                        conflicts += 1
                        if not proceed:
                            failures.append({"index": ix.name, "id": doc_id, "cause": e.inner(),
                                             "status": 409})
                if refresh:
                    ix.refresh()
            out = {"took": int((time.monotonic() - started) * 1000), "timed_out": False,
                   "total": deleted + conflicts, "deleted": deleted, "batches": 1,
                   "version_conflicts": conflicts, "noops": 0,
                   "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
                   "requests_per_second": -1.0, "throttled_until_millis": 0,
                   "failures": failures[:1] if failures else []}
            return (409 if failures else 200), out

    # --- templates and policies ------------------------------------------------------------------------------

    def put_template(self, name, body, create=False):
        with self.lock:
            self.templates[name] = validate_template(name, body, self.templates,
                                                     es_search.compile_query, create)
            return 200, {"acknowledged": True}

    def get_template(self, name):
        with self.lock:
            names = sorted(self.templates)
            if name:
                wanted = name.split(",")
                names = [n for n in names if any(glob_match(w, n) for w in wanted)]
                if not names and not any("*" in w for w in wanted):
                    raise _resource_not_found("index template matching [%s] not found" % name)
            return 200, {"index_templates": [
                {"name": n, "index_template": template_view(self.templates[n])} for n in names]}

    def delete_template(self, name):
        with self.lock:
            if name not in self.templates:
                raise EsError(404, "index_template_missing_exception",
                              "index_template [%s] missing" % name)
            del self.templates[name]
            return 200, {"acknowledged": True}

    def put_policy(self, name, body):
        with self.lock:
            policy = validate_policy(name, body)
            old = self.policies.get(name)
            self.policies[name] = {"version": old["version"] + 1 if old else 1,
                                   "modified_date": now_iso(), "policy": policy}
            return 200, {"acknowledged": True}

    def _policy_users(self, name):
        indices = sorted(ix.name for ix in self.indices.values()
                         if ix.settings.get("index.lifecycle.name") == name)
        templates = sorted(t for t, d in self.templates.items()
                           if d.get("template", {}).get("settings", {}).get(
                               "index.lifecycle.name") == name)
        return {"indices": indices, "data_streams": [], "composable_templates": templates}

    def get_policy(self, name):
        with self.lock:
            names = sorted(self.policies)
            if name:
                names = [n for n in names if any(glob_match(w, n) for w in name.split(","))]
                if not names:
                    raise _resource_not_found("Lifecycle policy not found: %s" % name)
            return 200, {n: dict(self.policies[n], in_use_by=self._policy_users(n))
                         for n in names}

    def delete_policy(self, name):
        with self.lock:
            if name not in self.policies:
                raise _resource_not_found("Lifecycle policy not found: %s" % name)
            users = self._policy_users(name)["indices"]
            if users:
                raise illegal_argument("Cannot delete policy [%s]. It is in use by one or more "
                                       "indices: [%s]" % (name, ", ".join(users)))
            del self.policies[name]
            return 200, {"acknowledged": True}

    # --- cluster ------------------------------------------------------------------------------------------------

    def health_status(self):
        with self.lock:
            return "yellow" if any(ix.replicas >= 1 for ix in self.indices.values()) else "green"

    def health(self):
        with self.lock:
            primaries = sum(ix.shards for ix in self.indices.values())
            unassigned = sum(ix.shards * ix.replicas for ix in self.indices.values())
            total = primaries + unassigned
            return {"cluster_name": CLUSTER_NAME, "status": self.health_status(),
                    "timed_out": False, "number_of_nodes": 1, "number_of_data_nodes": 1,
                    "active_primary_shards": primaries, "active_shards": primaries,
                    "relocating_shards": 0, "initializing_shards": 0,
                    "unassigned_shards": unassigned, "delayed_unassigned_shards": 0,
                    "number_of_pending_tasks": 0, "number_of_in_flight_fetch": 0,
                    "task_max_waiting_in_queue_millis": 0,
                    "active_shards_percent_as_number": 100.0 if not total else
                    100.0 * primaries / total}

    def cat_indices(self, pattern):
        with self.lock:
            targets = self._resolve_search(pattern, allow_missing=False) if pattern else [
                (ix, None) for ix in self.indices.values()]
            rows = []
            for ix, _ in sorted(targets, key=lambda t: t[0].name):
                ix.scheduled_refresh()
                size = sum(len(d.raw) for d in ix.searchable.values())
                rows.append({"health": ix.health(), "status": "open", "index": ix.name,
                             "uuid": ix.uuid, "pri": str(ix.shards), "rep": str(ix.replicas),
                             "docs.count": str(len(ix.searchable)), "docs.deleted": "0",
                             "store.size": "%db" % size, "pri.store.size": "%db" % size,
                             "dataset.size": "%db" % size})
            return rows


def _query_of(body, params):
    body = body or {}
    if "q" in params:
        return _q_param(params["q"])
    for key in body:
        if key != "query":
            raise EsError(400, "parsing_exception", "request does not support [%s]" % key,
                          {"line": 1, "col": 1})
    return es_search.compile_query(body.get("query"))


def _q_param(q):
    if q in ("*", "*:*"):
        return es_search.compile_query(None)
    field, sep, value = q.partition(":")
    if not sep:
        raise EsError(400, "query_shard_exception",
                      "q without a field is not implemented by the pgfan Elasticsearch test server")
    return es_search.compile_query({"match": {field: value}})


_SEARCH_KEYS = {"query", "size", "from", "sort", "search_after", "version",
                "seq_no_primary_term", "track_total_hits", "_source", "track_scores", "timeout",
                "stored_fields", "explain", "min_score", "terminate_after"}


def _flag(v):
    return v is True or v in ("true", "")


def es_search_run(cluster, expr, body, params):
    body = dict(body or {})
    for key in body:
        if key not in _SEARCH_KEYS:
            if key in ("aggs", "aggregations", "highlight", "collapse", "rescore", "suggest",
                       "pit", "runtime_mappings", "knn", "fields", "docvalue_fields",
                       "script_fields", "post_filter"):
                raise EsError(400, "illegal_argument_exception",
                              "[%s] is not implemented by the pgfan Elasticsearch test server "
                              "(tests/es_server)" % key)
            raise EsError(400, "parsing_exception", "Unknown key for a START_OBJECT in [%s]." % key,
                          {"line": 1, "col": 1})
    for p in ("size", "from"):
        if p in params:
            body[p] = int(params[p])
    if "sort" in params:
        body["sort"] = es_search.sort_param(params["sort"])
    for p in ("version", "seq_no_primary_term"):
        if p in params:
            body[p] = _flag(params[p])
    if "track_total_hits" in params:
        v = params["track_total_hits"]
        body["track_total_hits"] = _flag(v) if v in ("true", "false", "") else int(v)
    if "_source" in params:
        v = params["_source"]
        body["_source"] = False if v == "false" else (True if v == "true" else v.split(","))
    size = int(body.get("size", 10))
    frm = int(body.get("from", 0))
    if size < 0:
        raise illegal_argument("[size] parameter cannot be negative, found [%d]" % size)
    if frm < 0:
        raise illegal_argument("[from] parameter cannot be negative, found [%d]" % frm)
    targets = cluster._resolve_search(expr)
    for ix, _ in targets:
        if frm + size > ix.max_window:
            err = illegal_argument(
                "Result window is too large, from + size must be less than or equal to: [%d] but "
                "was [%d]. See the scroll api for a more efficient way to request large data sets. "
                "This limit can be set by changing the [index.max_result_window] index level "
                "setting." % (ix.max_window, frm + size))
            raise es_search.shard_failure(ix, err)
    q = {"query": body["query"]} if "query" in body else {}
    query = _query_of(q, params)
    keys = es_search.parse_sort(body.get("sort"))
    after = body.get("search_after")
    if after is not None:
        if frm > 0:
            raise EsError(400, "action_request_validation_exception",
                          "Validation Failed: 1: `from` parameter must be set to 0 when "
                          "`search_after` is used;")
        if not keys:
            raise EsError(400, "action_request_validation_exception",
                          "Validation Failed: 1: [search_after] requires a [sort] to be "
                          "specified;")
        after = es_search.coerce_search_after(after, keys)
    for ix, _ in targets:
        es_search.check_sortable(ix, keys)
    hits = []
    order = 0
    for ix, filters in targets:
        ix.scheduled_refresh()
        for doc_id, doc in ix.searchable.items():
            source = doc.source
            d = (doc_id, source)
            if filters and not any(f.match(ix, d) for f in filters):
                continue
            if query.match(ix, d):
                hits.append((ix, doc_id, doc, source, order))
                order += 1
    total = len(hits)
    if keys:
        decorated = []
        for h in hits:
            values = [es_search.sort_value(h[0], k, h[4], h[3]) for k in keys]
            decorated.append((es_search.order_key(values, keys), values, h))
        decorated.sort(key=lambda t: t[0])
        if after is not None:
            after_key = es_search.order_key(after, keys)
            decorated = [t for t in decorated if after_key < t[0]]
        page = decorated[frm:frm + size]
    else:
        page = [(None, None, h) for h in hits[frm:frm + size]]
    score = None if keys and not body.get("track_scores") else (1.0 if query.scoring else 0.0)
    source_spec = body.get("_source", True)
    out_hits = []
    for _, values, (ix, doc_id, doc, source, _) in page:
        hit = {"_index": ix.name, "_id": doc_id}
        if _flag(body.get("version")):
            hit["_version"] = doc.version
        if _flag(body.get("seq_no_primary_term")):
            hit["_seq_no"] = doc.seq_no
            hit["_primary_term"] = 1
        hit["_score"] = score
        src = _source_of(doc, source, source_spec)
        if src is not None:
            hit["_source"] = src
        if values is not None:
            hit["sort"] = values
        out_hits.append(hit)
    shards = sum(ix.shards for ix, _ in targets)
    hits_obj = {}
    tth = body.get("track_total_hits", 10000)
    if tth is not False:
        limit = None if tth is True else int(tth)
        if limit is not None and total > limit:
            hits_obj["total"] = {"value": limit, "relation": "gte"}
        else:
            hits_obj["total"] = {"value": total, "relation": "eq"}
    hits_obj["max_score"] = score if out_hits else None
    hits_obj["hits"] = out_hits
    return 200, {"took": 1, "timed_out": False,
                 "_shards": {"total": shards, "successful": shards, "skipped": 0, "failed": 0},
                 "hits": hits_obj}


def _source_of(doc, source, spec):
    if spec is True or spec == "true":
        return Raw(doc.raw)
    if spec is False or spec == "false":
        return None
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, list):
        return apply_filter_path(source, ",".join(spec))
    if isinstance(spec, dict):
        inc = spec.get("includes", spec.get("include", []))
        exc = spec.get("excludes", spec.get("exclude", []))
        inc = [inc] if isinstance(inc, str) else inc
        exc = [exc] if isinstance(exc, str) else exc
        parts = list(inc) + ["-" + e for e in exc]
        return apply_filter_path(source, ",".join(parts)) if parts else Raw(doc.raw)
    return Raw(doc.raw)


class _DbqOp:
    """The delete a _delete_by_query issues for one hit: internal versioning,
    guarded by the seq_no its search saw."""
    routing = None
    version_type = "internal"
    if_primary_term = 1

    def __init__(self, seq_no):
        self.if_seq_no = seq_no
