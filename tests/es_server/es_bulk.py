"""The _bulk API of the Elasticsearch 8 test server: NDJSON parsing as
BulkRequestParser does it (newline rule, metadata keys, update+version
refusal), the request validation of BulkRequest.validate() (one 400 for
the whole request), then per-item execution with item errors.
"""

import json
import time

from es_mapping import DocFail, check_document
from es_index import new_doc_id
from es_util import (EsError, dumps, illegal_argument, loads, loads_plain, validation_failed,
                     DuplicateKey)

MATCH_ANY = -3
MATCH_DELETED = -4
_VERSION_TYPES = {"internal": "internal", "external": "external", "external_gt": "external",
                  "external_gte": "external_gte"}
_META_KEYS = {"_index", "_id", "routing", "op_type", "version", "version_type", "if_seq_no",
              "if_primary_term", "retry_on_conflict", "pipeline", "_source", "require_alias",
              "dynamic_templates", "require_data_stream", "list_executed_pipelines"}
_UPDATE_KEYS = {"doc", "upsert", "doc_as_upsert", "script", "scripted_upsert", "detect_noop",
                "_source", "lang", "params"}


class Op:
    __slots__ = ("action", "index", "id", "routing", "version", "version_type", "if_seq_no",
                 "if_primary_term", "op_type", "source_line", "update", "line",
                 "retry_on_conflict", "parsed")

    def __init__(self, action, line):
        self.action = action
        self.line = line
        self.index = None
        self.id = None
        self.routing = None
        self.version = MATCH_ANY
        self.version_type = "internal"
        self.if_seq_no = None
        self.if_primary_term = 0
        self.op_type = None
        self.source_line = None
        self.update = None
        self.retry_on_conflict = 0
        self.parsed = None


def _long(value, what):
    if isinstance(value, bool):
        raise illegal_argument("Current token (%s) not numeric, can not use numeric value "
                               "accessors" % ("VALUE_TRUE" if value else "VALUE_FALSE"))
    try:
        if isinstance(value, str):
            n = int(value) if value.lstrip("+-").isdigit() else int(float(value))
        else:
            n = int(value)
    except (TypeError, ValueError):
        raise illegal_argument('For input string: "%s"' % value)
    if n < -(1 << 63) or n >= (1 << 63):
        raise EsError(400, "x_content_parse_exception",
                      "[1:1] Numeric value (%s) out of range of long (-9223372036854775808 - "
                      "9223372036854775807)" % value)
    return n


def _parse_meta(action, meta, line, default_index):
    op = Op(action, line)
    op.index = default_index
    for key, value in meta.items():
        if key not in _META_KEYS:
            raise illegal_argument("Action/metadata line [%d] contains an unknown parameter [%s]"
                                   % (line, key))
        if isinstance(value, list):
            raise illegal_argument("Malformed action/metadata line [%d], expected a simple value "
                                   "for field [%s] but found [START_ARRAY]" % (line, key))
        if isinstance(value, dict) and key not in ("_source", "dynamic_templates"):
            raise illegal_argument("Malformed action/metadata line [%d], expected a simple value "
                                   "for field [%s] but found [START_OBJECT]" % (line, key))
        if value is None:
            continue
        if key == "_index":
            op.index = str(value)
        elif key == "_id":
            op.id = value if isinstance(value, str) else json.dumps(value)
        elif key == "routing":
            op.routing = str(value) or None
        elif key == "op_type":
            op.op_type = str(value)
        elif key == "version":
            op.version = _long(value, key)
        elif key == "version_type":
            vt = _VERSION_TYPES.get(value)
            if vt is None:
                raise illegal_argument("No version type match [%s]" % value)
            op.version_type = value if value != "external_gt" else "external"
        elif key == "if_seq_no":
            n = _long(value, key)
            if n < 0 and n != -2:
                raise illegal_argument("sequence numbers must be non negative. got [%d]." % n)
            op.if_seq_no = n if n != -2 else None
        elif key == "if_primary_term":
            n = _long(value, key)
            if n < 0:
                raise illegal_argument("primary term must be non negative. got [%d]." % n)
            op.if_primary_term = n
        elif key == "retry_on_conflict":
            op.retry_on_conflict = _long(value, key)
    return op


def _action_line(text, line):
    try:
        obj = loads_plain(text)
    except (ValueError, DuplicateKey) as e:
        raise EsError(400, "x_content_parse_exception", "[1:%d] %s" % (
            getattr(e, "colno", 1), getattr(e, "msg", str(e))))
    if not isinstance(obj, dict):
        token = "START_ARRAY" if isinstance(obj, list) else "VALUE_STRING" \
            if isinstance(obj, str) else "VALUE_NUMBER"
        raise illegal_argument("Malformed action/metadata line [%d], expected START_OBJECT but "
                               "found [%s]" % (line, token))
    if not obj:
        raise illegal_argument("Malformed action/metadata line [%d], expected FIELD_NAME but "
                               "found [END_OBJECT]" % line)
    action, meta = next(iter(obj.items()))
    if meta is None or not isinstance(meta, dict):
        if isinstance(meta, dict) or meta is None:
            meta = {}
        else:
            raise illegal_argument("Malformed action/metadata line [%d], expected START_OBJECT or "
                                   "END_OBJECT but found [VALUE_STRING]" % line)
    return action, meta


def parse_bulk(body, default_index):
    """Ops of an NDJSON body, plus deprecation warnings. Raises EsError
    (whole request) like BulkRequestParser + BulkRequest.validate()."""
    if body and not body.endswith(b"\n"):
        raise illegal_argument("The bulk request must be terminated by a newline [\\n]")
    lines = body.split(b"\n")[:-1] if body else []
    ops, warnings = [], []
    i, line_no, n = 0, 0, len(lines)
    while i < n:
        raw = lines[i]
        i += 1
        line_no += 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            continue
        action, meta = _action_line(raw, line_no)
        op = _parse_meta(action, meta, line_no, default_index)
        if action == "delete":
            ops.append(op)
            continue
        if i >= n:
            break  # an action without its source line is dropped, as ES does
        src = lines[i]
        i += 1
        line_no += 1
        if src.endswith(b"\r"):
            src = src[:-1]
        if action not in ("index", "create", "update"):
            warnings.append("Unsupported action: [%s]. Supported values are [create], [delete], "
                            "[index], and [update]. Unsupported actions are currently accepted "
                            "but will be rejected in a future version." % action)
            continue
        if action == "update":
            if op.version != MATCH_ANY or op.version_type != "internal":
                raise illegal_argument("Update requests do not support versioning. Please use "
                                       "`if_seq_no` and `if_primary_term` instead")
            op.update = _update_body(src)
        else:
            if action == "create" or op.op_type == "create":
                op.op_type = "create"
            elif op.op_type not in (None, "index"):
                raise illegal_argument("opType must be 'create' or 'index', found: [%s]"
                                       % op.op_type)
            op.source_line = src
        ops.append(op)
    problems = _validate(ops)
    if problems:
        raise validation_failed(problems)
    return ops, warnings


def _update_body(src):
    try:
        body = loads(src)
    except (ValueError, DuplicateKey) as e:
        raise EsError(400, "x_content_parse_exception", "[1:%d] %s" % (
            getattr(e, "colno", 1), getattr(e, "msg", str(e))))
    if not isinstance(body, dict):
        raise EsError(400, "x_content_parse_exception", "[1:1] [UpdateRequest] expected START_OBJECT")
    for key in body:
        if key not in _UPDATE_KEYS:
            raise EsError(400, "x_content_parse_exception",
                          "[1:2] [UpdateRequest] unknown field [%s]" % key)
    return body


def _validate(ops):
    out = []
    if not ops:
        return ["no requests added"]
    for op in ops:
        if op.index is None:
            out.append("index is missing")
        version = op.version
        if op.action in ("index", "create"):
            if op.op_type == "create":
                if op.version_type != "internal":
                    out.append("create operations only support internal versioning. use index "
                               "instead")
                    continue
                if version != MATCH_ANY:
                    out.append("create operations do not support explicit versions. use index "
                               "instead")
                    continue
                if op.if_seq_no is not None or op.if_primary_term != 0:
                    out.append("create operations do not support compare and set. use index "
                               "instead")
                    continue
                version = MATCH_DELETED
            if op.id is None and (op.version_type != "internal" or
                                  version not in (MATCH_ANY, MATCH_DELETED)):
                out.append("an id must be provided if version type or value are set")
        else:
            if op.id is None:
                out.append("id is missing")
        if op.action == "update":
            u = op.update
            if "script" not in u and "doc" not in u:
                out.append("script or doc is missing")
            if "script" in u and "doc" in u:
                out.append("can't provide both script and doc")
            if u.get("doc_as_upsert") and "doc" not in u:
                out.append("doc must be specified if doc_as_upsert is enabled")
        _validate_cas(op, version, out)
        if op.id is not None and len(op.id.encode("utf-8")) > 512:
            out.append("id [%s] is too long, must be no longer than 512 bytes but was: %d"
                       % (op.id, len(op.id.encode("utf-8"))))
    return out


def _validate_cas(op, version, out):
    vt = op.version_type
    if vt == "internal":
        ok = version > 0 or version in (MATCH_ANY, MATCH_DELETED)
    else:
        ok = version >= 0
    if not ok:
        out.append("illegal version value [%d] for version type [%s]"
                   % (version, {"internal": "INTERNAL", "external": "EXTERNAL",
                                "external_gte": "EXTERNAL_GTE"}[vt]))
    if vt == "internal" and version not in (MATCH_ANY, MATCH_DELETED):
        out.append("internal versioning can not be used for optimistic concurrency control. "
                   "Please use `if_seq_no` and `if_primary_term` instead")
    if op.if_seq_no is not None and (vt != "internal" or version not in (MATCH_ANY,
                                                                          MATCH_DELETED)):
        out.append("compare and write operations can not use versioning")
    if op.if_primary_term == 0 and op.if_seq_no is not None:
        out.append("ifSeqNo is set, but primary term is [0]")
    if op.if_primary_term != 0 and op.if_seq_no is None:
        out.append("ifSeqNo is unassigned, but primary term is [%d]" % op.if_primary_term)


# --- execution ----------------------------------------------------------------------------

def locate(text, keys):
    """1-based byte column of the value at the JSON path keys in text (the
    [line:col] of Elasticsearch's document errors)."""
    dec = json.JSONDecoder()
    pos = _ws(text, 0)
    try:
        for k in keys:
            pos = _child(text, pos, k, dec)
    except (ValueError, IndexError):
        return 1
    return len(text[:pos].encode("utf-8")) + 1


def _ws(text, pos):
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _child(text, pos, key, dec):
    if isinstance(key, int):
        if text[pos] != "[":
            raise ValueError
        pos = _ws(text, pos + 1)
        for _ in range(key):
            _, pos = dec.raw_decode(text, pos)
            pos = _ws(text, pos)
            if text[pos] != ",":
                raise ValueError
            pos = _ws(text, pos + 1)
        return pos
    if text[pos] != "{":
        raise ValueError
    pos = _ws(text, pos + 1)
    while text[pos] != "}":
        name, pos = json.decoder.scanstring(text, pos + 1)
        pos = _ws(text, pos)
        pos = _ws(text, pos + 1)  # ':'
        if name == key:
            return pos
        _, pos = dec.raw_decode(text, pos)
        pos = _ws(text, pos)
        if text[pos] == ",":
            pos = _ws(text, pos + 1)
    raise ValueError


def doc_error(fail, text):
    if not fail.located:
        return EsError(400, fail.etype, fail.message, caused_by=fail.caused_by)
    col = locate(text, list(reversed(fail.keys)))
    return EsError(400, fail.etype, "[1:%d] %s" % (col, fail.message), caused_by=fail.caused_by)


def parse_source(line):
    """(text, parsed dict) of a source line, or EsError for the item."""
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    if not text.strip():
        raise EsError(400, "mapper_parsing_exception", "failed to parse, document is empty")
    try:
        source = loads(text)
    except DuplicateKey as e:
        raise EsError(400, "document_parsing_exception", "[1:1] failed to parse: %s" % e,
                      caused_by={"type": "json_parse_exception", "reason": str(e)})
    except ValueError as e:
        msg = getattr(e, "msg", str(e))
        col = getattr(e, "colno", 1)
        raise EsError(400, "document_parsing_exception",
                      "[1:%d] failed to parse: %s" % (col, msg),
                      caused_by={"type": "json_parse_exception", "reason": msg})
    if not isinstance(source, dict):
        raise EsError(400, "document_parsing_exception",
                      "[1:1] failed to parse: Malformed content, must start with an object")
    return text, source


def _preparse_sources(ops):
    """Parses every index/create source of a bulk with one scanner call (a
    JSON array of the lines): per-call overhead dominates on small documents.
    Any surprise (a malformed line, a line holding several values, something
    that is not an object) leaves op.parsed unset so that parse_source reports
    that line exactly as it does alone."""
    todo = [op for op in ops if op.source_line is not None]
    if not todo:
        return
    texts = [op.source_line.decode("utf-8", errors="replace") for op in todo]
    try:
        values = loads("[" + ",".join(texts) + "]")
    except ValueError:
        return
    if len(values) != len(todo):
        return
    for op, text, value in zip(todo, texts, values):
        if value.__class__ is dict:
            op.parsed = (text, value)


def deep_merge(base, changes):
    """XContentHelper.update: maps merge recursively, everything else replaces."""
    out = dict(base)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class BulkExecutor:
    """Runs parsed ops against a cluster (caller holds the cluster lock).
    resolve(op) -> Index (may auto-create) or raises EsError for the item;
    item_fault(op) -> EsError or None (test fault injection)."""

    def __init__(self, resolve, item_fault, forced_refresh):
        self.resolve = resolve
        self.item_fault = item_fault
        self.forced_refresh = forced_refresh
        self.touched = {}
        self.target = None

    def run(self, ops):
        _preparse_sources(ops)
        items = []
        errors = False
        for op in ops:
            self.target = None
            try:
                item, status = self._one(op)
                item["status"] = status
            except EsError as e:
                item = {"_index": self.target.name if self.target is not None else op.index,
                        "_id": op.id, "status": e.status, "error": e.inner()}
                errors = True
            items.append({op.action if op.action != "index" or op.op_type != "create"
                          else "create": item})
        return items, errors

    def _one(self, op):
        fault = self.item_fault(op)
        if fault is not None:
            raise fault
        index = self.resolve(op.index, op)
        self.target = index
        self.touched[index.name] = index
        if op.id is None:
            op.id = new_doc_id()
        if op.action == "delete":
            return self._delete(index, op)
        if op.action == "update":
            return self._update(index, op)
        return self._index(index, op)

    def _result(self, index, op, doc_version, seq_no, result):
        item = {"_index": index.name, "_id": op.id, "_version": doc_version, "result": result}
        if self.forced_refresh:
            item["forced_refresh"] = True
        item["_shards"] = index.shards_info()
        item["_seq_no"] = seq_no
        item["_primary_term"] = 1
        return item

    def _checked(self, index, op, text, source):
        try:
            check_document(index.mapping, source, op.id)
        except DocFail as f:
            err = doc_error(f, text)
            err.meta = {}
            raise err

    def _index(self, index, op):
        if op.parsed is not None:
            text, source = op.parsed
        else:
            text, source = parse_source(op.source_line)
        self._checked(index, op, text, source)
        doc, created = index.write(op.id, text, op)
        return (self._result(index, op, doc.version, doc.seq_no,
                             "created" if created else "updated"), 201 if created else 200)

    def _delete(self, index, op):
        version, seq_no, _, found = index.delete(op.id, op)
        return (self._result(index, op, version, seq_no, "deleted" if found else "not_found"),
                200 if found else 404)

    def _update(self, index, op):
        u = op.update
        if "script" in u:
            raise EsError(400, "illegal_argument_exception",
                          "scripted updates are not implemented by the pgfan Elasticsearch test "
                          "server (tests/es_server)")
        cur = index.docs.get(op.id)
        if cur is None:
            if u.get("doc_as_upsert"):
                new_source = u["doc"]
            elif "upsert" in u:
                new_source = u["upsert"]
            else:
                raise EsError(404, "document_missing_exception", "[%s]: document missing" % op.id,
                              {"index_uuid": index.uuid, "shard": str(index.shard_of(op.id)),
                               "index": index.name})
        else:
            index._check_cas(op.id, cur.shard, cur, op.if_seq_no, op.if_primary_term)
            old_source = cur.source
            new_source = deep_merge(old_source, u.get("doc") or {})
            if u.get("detect_noop", True) and new_source == old_source:
                item = {"_index": index.name, "_id": op.id, "_version": cur.version,
                        "result": "noop", "_shards": {"total": 0, "successful": 0, "failed": 0},
                        "_seq_no": cur.seq_no, "_primary_term": 1}
                return item, 200
        text = dumps(new_source)
        self._checked(index, op, text, new_source)
        op.if_seq_no = None
        doc, created = index.write(op.id, text, op)
        return (self._result(index, op, doc.version, doc.seq_no,
                             "created" if created else "updated"), 201 if created else 200)


def bulk_response(items, errors, started):
    return {"errors": errors, "took": int((time.monotonic() - started) * 1000), "items": items}

