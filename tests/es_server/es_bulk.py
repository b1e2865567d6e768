"""The _bulk API of the Elasticsearch 8 test server: NDJSON parsing as
BulkRequestParser does it (newline rule, metadata keys, update+version
refusal), the request validation of BulkRequest.validate() (one 400 for
the whole request), then per-item execution with item errors.
"""

import json
import re
import time

from es_mapping import DocFail, check_document, fast_check, learn_text_shape
from es_index import mono_ms, new_doc_id
from es_util import (EsError, LazyList, TextList, dumps, illegal_argument, loads, loads_plain,
                     validation_failed, DuplicateKey, MISSING)

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


# The action line pgfan sends, {"index"|"delete":{"_index","_id","version",
# "version_type"}} with plain strings (no escapes), an external version below
# 10^18 and an _id of at most 128 characters (so at most 512 bytes): it means
# exactly what _action_line + _parse_meta make of it, and such an op can
# fail none of _validate's checks. Any other line takes the general path.
_ACTION_META = (r':\{"_index":"([^"\\\x00-\x1f]*)","_id":"([^"\\\x00-\x1f]{1,128})",'
                r'"version":(0|[1-9][0-9]{0,17}),"version_type":"(external|external_gt|external_gte)"'
                r'\}\}\n')
# an index action line and its source line; a delete action line
_fast_index = re.compile(r'\{"index"' + _ACTION_META + r'([^\n]*)\n').match
_fast_delete = re.compile(r'\{"delete"' + _ACTION_META).match
_BLANK = " \t\n\r\x0b\x0c"  # what bytes.strip() strips


def _op(action, line, index, doc_id, version, version_type, source_line=None):
    op = Op(action, line)
    op.index = index
    op.id = doc_id
    op.version = version
    op.version_type = version_type
    op.source_line = source_line
    return op


def parse_bulk(body, default_index):
    """Ops of an NDJSON body, plus deprecation warnings. Raises EsError
    (whole request) like BulkRequestParser + BulkRequest.validate(). An index
    op of a _fast_index pair is a FastOp tuple (index, _id, version,
    version_type, source text) rather than an Op (BulkExecutor)."""
    if body and not body.endswith(b"\n"):
        raise illegal_argument("The bulk request must be terminated by a newline [\\n]")
    try:
        # valid UTF-8 as a whole: its lines are too, and decode alike
        text = body.decode("utf-8")
        nl, cr, blank = "\n", "\r", _BLANK
        fast = cr not in text  # the fast patterns know nothing of "\r\n"
    except UnicodeDecodeError:
        text, nl, cr, blank, fast = body, b"\n", b"\r", _BLANK.encode(), False
    ops, warnings, checked = [], [], []
    pos, line_no, n = 0, 0, len(text)
    while pos < n:
        if fast:
            m = _fast_index(text, pos)
            if m is not None:
                index, doc_id, version, vt, src = m.groups()
                ops.append((index, doc_id, int(version),
                            "external" if vt == "external_gt" else vt, src))
                pos = m.end()
                line_no += 2
                continue
            m = _fast_delete(text, pos)
            if m is not None:
                index, doc_id, version, vt = m.groups()
                ops.append(_op("delete", line_no + 1, index, doc_id, int(version),
                               "external" if vt == "external_gt" else vt))
                pos = m.end()
                line_no += 1
                continue
        end = text.index(nl, pos)
        raw = text[pos:end]
        pos = end + 1
        line_no += 1
        if raw.endswith(cr):
            raw = raw[:-1]
        if not raw.strip(blank):
            continue
        action, meta = _action_line(raw, line_no)
        op = _parse_meta(action, meta, line_no, default_index)
        if action == "delete":
            ops.append(op)
            checked.append(op)
            continue
        if pos >= n:
            break  # an action without its source line is dropped, as ES does
        end = text.index(nl, pos)
        src = text[pos:end]
        pos = end + 1
        line_no += 1
        if src.endswith(cr):
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
        checked.append(op)
    # ops of the fast patterns pass every check: only the others are looked at
    problems = _validate(checked) if checked or not ops else []
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
    Objects are built without duplicate-key detection (loads_plain): a
    document is only used as parsed here once no_duplicate_keys proved it has
    none, else parse_source parses it again. Any surprise (a malformed line,
    a line holding several values, something that is not an object) leaves
    op.parsed unset so that parse_source reports that line exactly as it does
    alone."""
    todo = [op for op in ops if op.source_line is not None]
    values = _parse_all([op.source_line for op in todo])
    if values is not None:
        for op, parsed in zip(todo, values):
            op.parsed = parsed


def _parse_all(lines):
    """[(text, dict) or None] of source lines parsed at once, or None."""
    if not lines:
        return None
    texts = [line if line.__class__ is str else line.decode("utf-8", errors="replace")
             for line in lines]
    try:
        values = loads_plain("[" + ",".join(texts) + "]")
    except ValueError:
        return None
    if len(values) != len(texts):
        return None
    return [(text, value) if value.__class__ is dict else None
            for text, value in zip(texts, values)]


def no_duplicate_keys(text, pairs):
    """Whether the JSON text of a document whose objects hold pairs key/value
    pairs in all (as parsed, duplicates collapsed) has no duplicate key. True
    only when provable by counting: without a backslash every '"' delimits a
    string, without a '"' followed by whitespace every key is followed by
    '":', so text.count('":') >= the number of keys written >= pairs, equal
    only when no key repeats. False means "unknown": parse again with loads."""
    # one-character searches are memchr-fast; a line has no "\n"
    return (text.count('":') == pairs and "\\" not in text and "\t" not in text
            and "\r" not in text and (" " not in text or '" ' not in text))


def deep_merge(base, changes):
    """XContentHelper.update: maps merge recursively, everything else replaces."""
    out = dict(base)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# es_server.py --lean: each index checks the first LEAN_CHECKED documents of
# fast path ops (and then one in LEAN_SAMPLE) as usual; it stores the others
# unchecked (README.md, "Lean mode").
LEAN_CHECKED = 1000
LEAN_SAMPLE = 64


class BulkExecutor:
    """Runs parsed ops against a cluster (caller holds the cluster lock).
    resolve(name, op) -> Index (may auto-create) or raises EsError for the
    item; item_fault(op) -> EsError or None (test fault injection), or None
    when no item fault is set; lean: es_server.py --lean. After run(),
    statuses counts the items by status and unchecked the documents that
    lean mode stored unchecked."""

    def __init__(self, resolve, item_fault, forced_refresh, lean=False):
        self.resolve = resolve
        self.item_fault = item_fault
        self.forced_refresh = forced_refresh
        self.lean = lean
        self.unchecked = 0
        self.touched = {}
        self.target = None
        self.statuses = {}
        self.indices = {}  # name in the action line -> Index (fast path)
        self.parsed = {}  # position of a FastOp -> (text, dict) (fast path)
        self.misses = 0  # fast path documents that matched no text shape

    def run(self, ops):
        """(items, errors): items is a BulkItems."""
        items = BulkItems()
        items.forced = self.forced_refresh
        if self.item_fault is not None:  # faults apply per op: no fast path
            ops = [_as_op(op, None) if op.__class__ is tuple else op for op in ops]
            _preparse_sources(ops)
        errors = False
        statuses = self.statuses
        self.ops = ops
        self.now = mono_ms()
        append = items.append
        fast = created = 0
        for i, op in enumerate(ops):
            if op.__class__ is tuple:
                item = self._index_fast(op, i)
                if item is not None:
                    append(item)
                    fast += 1
                    created += item[4]
                    continue
                op = _as_op(op, self.parsed.get(i))
            self.target = None
            try:
                item, status = self._one(op)
                item["status"] = status
            except EsError as e:
                item = {"_index": self.target.name if self.target is not None else op.index,
                        "_id": op.id, "status": e.status, "error": e.inner()}
                errors = True
            statuses[item["status"]] = statuses.get(item["status"], 0) + 1
            append({op.action if op.action != "index" or op.op_type != "create"
                    else "create": item})
        for status, n in ((201, created), (200, fast - created)):
            if n:
                statuses[status] = statuses.get(status, 0) + n
        return items, errors

    def _index_fast(self, op, i):
        """_one for the common case, a FastOp (an index op of a _fast_index
        pair) without item faults: the BulkItems tuple of a document that
        matches a text shape of the mapping, or else is parsed and accepted
        by fast_check, and that is written; else None and the general path
        runs the op (and reports its errors, version conflicts included)."""
        name, doc_id, version, version_type, text = op
        index = self.indices.get(name)
        if index is None:
            try:
                index = self.resolve(name, None)
            except EsError:
                return None
            self.indices[name] = index
            self.touched[index.name] = index
        if self.lean and self._unchecked(index):
            pass
        else:
            for match in index.mapping.text_shapes:
                if match(text) is not None:
                    break
            else:
                if not self._fast_parsed(index, text, i):
                    return None
        written = index.write_external(doc_id, text, version, version_type, self.now)
        if written is None:
            return None
        return (index, doc_id, written[0], written[1], written[2])

    def _unchecked(self, index):
        """Whether lean mode stores this fast path document unchecked."""
        n = index.lean_docs = index.lean_docs + 1
        if n <= LEAN_CHECKED or n % LEAN_SAMPLE == 0:
            return False
        self.unchecked += 1
        return True

    def _fast_parsed(self, index, text, i):
        """Whether a FastOp's source (which matched no text shape) parses and
        passes fast_check; learns its text shape. Sources are parsed one by
        one, and all the bulk's remaining ones at once after 16 misses."""
        self.misses += 1
        parsed = self.parsed
        if self.misses == 16:
            rest = [j for j in range(i, len(self.ops)) if self.ops[j].__class__ is tuple]
            values = _parse_all([self.ops[j][4] for j in rest])
            if values is not None:
                parsed.update((j, v) for j, v in zip(rest, values) if v is not None)
        if i not in parsed:
            try:
                source = loads_plain(text)
            except ValueError:
                return False
            if source.__class__ is not dict:
                return False
            parsed[i] = (text, source)
        source = parsed[i][1]
        pairs = fast_check(index.mapping, source)
        if not pairs or not no_duplicate_keys(text, pairs):
            return False
        learn_text_shape(index.mapping, source)
        return True

    def _one(self, op):
        fault = self.item_fault(op) if self.item_fault is not None else None
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
        parsed = op.parsed
        if parsed is not None:
            text, source = parsed
            pairs = fast_check(index.mapping, source)
            if not pairs or not no_duplicate_keys(text, pairs):
                text, source = parse_source(op.source_line)
                self._checked(index, op, text, source)
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


def _as_op(fast_op, parsed):
    """The Op of a FastOp, for the general path."""
    name, doc_id, version, version_type, text = fast_op
    op = _op("index", 0, name, doc_id, version, version_type, text)
    op.parsed = parsed
    return op


# Keys of a fast path item whose values differ from item to item.
_UNIQUE_KEYS = {"_id", "_version", "_seq_no"}


class BulkItems(LazyList):
    """The items of a bulk answer: dicts, and for documents written by the
    fast path (index, _id, version, seq_no, created) tuples, which
    materialize() turns into the same dicts. Under a filter_path that keeps
    none of _UNIQUE_KEYS (pgfan's errors,items.*.status,items.*.error) the
    filtered item of such a tuple depends on its index and created only, so
    it is computed once per pair instead of once per item."""

    forced = False

    def _item(self, t):
        index, doc_id, version, seq_no, created = t
        item = {"_index": index.name, "_id": doc_id, "_version": version,
                "result": "created" if created else "updated"}
        if self.forced:
            item["forced_refresh"] = True
        item["_shards"] = index.shards_info()
        item["_seq_no"] = seq_no
        item["_primary_term"] = 1
        item["status"] = 201 if created else 200
        return {"index": item}

    def materialize(self):
        return [self._item(v) if v.__class__ is tuple else v for v in self]

    def include(self, node, include):
        """What _include makes of the list: a TextList (its JSON text is
        joined from each distinct filtered item's text)."""
        out, texts = [], []
        cache = {}  # (index name, created) -> (filtered item, its text)
        shared = None  # whether filtered fast items can be shared (known at the first)
        for v in self:
            if v.__class__ is tuple:
                key = (v[0].name, v[4])
                hit = cache.get(key)
                if hit is None:
                    item = self._item(v)
                    r = include(item, node)
                    hit = (r, dumps(r) if r is not MISSING else None)
                    if shared is None:
                        shared = _unique_free(node, item)
                    if shared:
                        cache[key] = hit
                r, text = hit
            else:
                r = include(v, node)
                text = dumps(r) if r is not MISSING else None
            if r is not MISSING:
                out.append(r)
                texts.append(text)
        return TextList(out, "[" + ",".join(texts) + "]") if out else MISSING


def _unique_free(node, item):
    """Whether the filter_path node keeps no value of _UNIQUE_KEYS of item
    (a fast path item {action: {...}}) nor the inner object whole."""
    for action, nxt, full, deep_leaf in node.plan(tuple(item)):
        inner = item[action]
        if full or deep_leaf:
            return False
        for key, _, _, _ in nxt.plan(tuple(inner)):
            if key in _UNIQUE_KEYS:
                return False
    return True


def bulk_response(items, errors, started, lazy=False):
    """The bulk answer; lazy: items stay a BulkItems (filter_path applies)."""
    return {"errors": errors, "took": int((time.monotonic() - started) * 1000),
            "items": items if lazy else items.materialize()}

