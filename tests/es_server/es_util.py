"""Shared helpers of the Elasticsearch 8 test server: ES-shaped errors, JSON
with exact numbers and embedded raw _source text, filter_path, time values,
wildcard patterns and index-name rules.

Error texts follow Elasticsearch 8.11 (server/src/main/java/org/elasticsearch/...)
so that pgfan's error handling is exercised against the real wording.
"""

import decimal
import fnmatch
import functools
import json
import json.scanner
import re

NA = "_na_"


class EsError(Exception):
    """An error answered the way Elasticsearch renders an ElasticsearchException.

    meta: extra keys written after type/reason (index_uuid, shard, index, ...).
    caused_by: a nested error dict ({"type", "reason", ...}).
    root: the root_cause list; by default the innermost Elasticsearch
    exception, which is this one unless caused_by is marked es=True.
    """

    def __init__(self, status, etype, reason, meta=None, caused_by=None, root=None):
        super().__init__(reason)
        self.status = status
        self.etype = etype
        self.reason = reason
        self.meta = meta or {}
        self.caused_by = caused_by
        self.root = root
        self.headers = {}

    def inner(self, with_cause=True):
        d = {"type": self.etype, "reason": self.reason}
        d.update(self.meta)
        if with_cause and self.caused_by is not None:
            d["caused_by"] = self.caused_by
        return d

    def body(self):
        root = self.root if self.root is not None else [self.inner(with_cause=False)]
        err = {"root_cause": root}
        err.update(self.inner())
        return {"error": err, "status": self.status}


def simple_error(status, message):
    """RestController's plain {"error": "...", "status": N} answers."""
    e = EsError(status, "", message)
    e.simple = True
    return e


def index_not_found(name, resource_type="index_or_alias"):
    return EsError(404, "index_not_found_exception", "no such index [%s]" % name,
                   {"resource.type": resource_type, "resource.id": name,
                    "index_uuid": NA, "index": name})


def illegal_argument(reason, status=400):
    return EsError(status, "illegal_argument_exception", reason)


def validation_failed(messages):
    text = "Validation Failed: " + "".join(
        "%d: %s;" % (i + 1, m) for i, m in enumerate(messages))
    return EsError(400, "action_request_validation_exception", text)


# --- JSON ----------------------------------------------------------------

class Raw:
    """Already-serialized JSON text to embed verbatim (a stored _source)."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


_PLACEHOLDER = re.compile(r'"\\u0000R(\d+)\\u0000"')


def dumps(obj):
    """Compact JSON; Decimal numbers keep their exact text, Raw is embedded."""
    raws = []

    def default(o):
        if isinstance(o, Raw):
            raws.append(o.text)
        elif isinstance(o, decimal.Decimal):
            raws.append(decimal_text(o))
        else:
            raise TypeError("not JSON serializable: %r" % type(o))
        return "\0R%d\0" % (len(raws) - 1)

    # answers are trees built here (no cycles): the circular check would
    # cost a dict insert and delete per container
    text = json.dumps(obj, default=default, separators=(",", ":"), ensure_ascii=False,
                      check_circular=False)
    if raws:
        text = _PLACEHOLDER.sub(lambda m: raws[int(m.group(1))], text)
    return text


def decimal_text(d):
    s = str(d)
    return s if d.is_finite() else "null"


class DuplicateKey(ValueError):
    pass


def _pairs(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise DuplicateKey("Duplicate field '%s'" % k)
            seen.add(k)
    return d


def _no_constants(name):
    raise ValueError("Non-standard token '%s': enable `JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS`"
                     " to allow" % name)


_decoder = json.JSONDecoder(parse_float=decimal.Decimal, object_pairs_hook=_pairs,
                            parse_constant=_no_constants)
_scan = json.scanner.make_scanner(_decoder)
_WS = " \t\n\r"


def loads(text):
    """Parses JSON like Jackson in Elasticsearch: exact numbers (Decimal for
    fractions, int otherwise), duplicate keys and NaN/Infinity rejected."""
    return _loads(text, _scan)


_plain_scan = json.scanner.make_scanner(json.JSONDecoder(parse_float=decimal.Decimal,
                                                         parse_constant=_no_constants))


def loads_plain(text):
    """loads without duplicate-key detection, objects built in C (bulk action
    lines; bulk sources, whose keys es_bulk.no_duplicate_keys counts)."""
    return _loads(text, _plain_scan)


def _loads(text, scan):
    if text.__class__ is not str:
        text = text.decode("utf-8")
    # the C scanner directly: JSONDecoder.decode's wrappers cost more than
    # the scan itself on small bulk lines
    try:
        obj, end = scan(text, 0)
    except StopIteration:
        start = len(text) - len(text.lstrip(_WS))
        try:
            obj, end = scan(text, start)
        except StopIteration as e:
            raise json.JSONDecodeError("Expecting value", text, e.value) from None
    if end != len(text) and text[end:].strip(_WS):
        raise json.JSONDecodeError("Extra data", text, end)
    return obj


def json_parse_error(exc, text):
    """A 400 x_content_parse_exception for malformed JSON."""
    line, col = 1, 1
    if isinstance(exc, json.JSONDecodeError):
        line, col = exc.lineno, exc.colno
    msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
    return EsError(400, "x_content_parse_exception", "[%d:%d] %s" % (line, col, msg))


def java_repr(v):
    """How Java's Map/List toString shows a parsed value (value previews)."""
    if isinstance(v, dict):
        return "{" + ", ".join("%s=%s" % (k, java_repr(x)) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(java_repr(x) for x in v) + "]"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    return str(v)


# --- filter_path -----------------------------------------------------------

_MISSING = object()
MISSING = _MISSING  # what _include makes of a value nothing of which is kept


class _Patterns:
    """A set of filter_path patterns (tuples of name parts) with a per-key
    cache of what is left after a key and a per-object-shape cache of the
    keys that match at all: a bulk response repeats the same few objects
    (items with the same keys) thousands of times."""

    __slots__ = ("patterns", "cache", "plans")

    def __init__(self, patterns):
        self.patterns = patterns
        self.cache = {}
        self.plans = {}

    def plan(self, keys):
        """[(key, next node, full, deep_leaf)] of the keys (a tuple) that
        match, in order."""
        hit = self.plans.get(keys)
        if hit is None:
            hit = []
            for k in keys:
                nxt, full, deep_leaf = self.advance(k)
                if nxt is not None:
                    hit.append((k, nxt, full, deep_leaf))
            if len(self.plans) < 1024:
                self.plans[keys] = hit
        return hit

    def advance(self, key):
        hit = self.cache.get(key)
        if hit is None:
            hit = self._advance(key)
            self.cache[key] = hit
        return hit

    def _advance(self, key):
        out = []
        for p in self.patterns:
            if not p:
                continue
            if p[0] == "**":
                out.append(p)  # ** keeps matching deeper
                rest = p[1:]
                if rest and _seg_match(rest[0], key):
                    out.append(rest[1:])
            elif _seg_match(p[0], key):
                out.append(p[1:])
        full = any(len(p) == 0 for p in out)
        deep_leaf = any(p == ("**",) for p in out)
        return (_Patterns(tuple(out)) if out else None), full, deep_leaf


@functools.lru_cache(maxsize=256)
def compile_filter_path(spec):
    includes, excludes = [], []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("-"):
            excludes.append(tuple(part[1:].split(".")))
        else:
            includes.append(tuple(part.split(".")))
    return (_Patterns(tuple(includes)) if includes else None,
            _Patterns(tuple(excludes)) if excludes else None)


def _seg_match(seg, key):
    if seg == "*" or seg == "**":
        return True
    if "*" in seg:
        return fnmatch.fnmatchcase(key, seg)
    return seg == key


class LazyList(list):
    """A list some of whose elements stand for JSON values built on demand
    (the bulk items of the fast path): materialize() is the plain list,
    include(node, _include) what _include makes of it."""

    def materialize(self):
        raise NotImplementedError

    def include(self, node, include):
        return include(self.materialize(), node)


class TextList(LazyList):
    """A filtered list whose JSON text is known (text): apply_filter_path
    answers Raw(text) for it, unless an exclude pattern materialized it."""

    def __init__(self, values, text):
        super().__init__(values)
        self.text = text

    def materialize(self):
        return list(self)

    def include(self, node, include):
        return include(list(self), node)


def _include(value, node):
    if isinstance(value, LazyList):
        return value.include(node, _include)
    if value.__class__ is list:
        items = []
        for v in value:
            if v.__class__ is dict or v.__class__ is list:
                r = _include(v, node)
                if r is not _MISSING:
                    items.append(r)
        return items if items else _MISSING
    if value.__class__ is not dict:
        return _MISSING
    out = {}
    for k, nxt, full, deep_leaf in node.plan(tuple(value)):
        v = value[k]
        if full or (deep_leaf and not isinstance(v, (dict, list))):
            out[k] = v
            continue
        r = _include(v, nxt)
        if r is not _MISSING:
            out[k] = r
    return out if out else _MISSING


def _exclude(value, node):
    if isinstance(value, LazyList):
        value = value.materialize()
    if isinstance(value, list):
        return [_exclude(v, node) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        nxt, full, _ = node.advance(k)
        if full:
            continue
        out[k] = _exclude(v, nxt) if nxt is not None else v
    return out


def apply_filter_path(obj, spec):
    """Elasticsearch's filter_path: includes keep only matching paths (objects
    left empty disappear, arrays are transparent), '-' excludes, '*' matches a
    name part, '**' any depth. Raw values are kept or dropped whole."""
    includes, excludes = compile_filter_path(spec)
    if includes is not None:
        obj = _include(obj, includes)
        if obj is _MISSING:
            obj = {}
    if excludes is not None:
        obj = _exclude(obj, excludes)
    if obj.__class__ is dict:  # lazy lists only stand at the top (bulk items)
        for k, v in obj.items():
            if v.__class__ is TextList:
                obj[k] = Raw(v.text)
            elif isinstance(v, LazyList):
                obj[k] = v.materialize()
    return obj


# --- time values ------------------------------------------------------------

_TIME = re.compile(r"^(-?\d+(?:\.\d+)?)(nanos|micros|ms|s|m|h|d)$")
_TIME_MS = {"nanos": 1e-6, "micros": 1e-3, "ms": 1, "s": 1000, "m": 60000, "h": 3600000,
            "d": 86400000}


def parse_time_ms(value, setting):
    """TimeValue.parseTimeValue: '60s', '500ms', '0', '-1' (no unit only for 0/-1)."""
    s = str(value).strip() if not isinstance(value, bool) else str(value).lower()
    if s in ("0", "-1"):
        return int(s)
    m = _TIME.match(s.lower())
    if not m:
        raise illegal_argument(
            "failed to parse setting [%s] with value [%s] as a time value: unit is missing or "
            "unrecognized" % (setting, value))
    n = decimal.Decimal(m.group(1))
    if n < 0 and s != "-1":
        raise illegal_argument(
            "failed to parse setting [%s] with value [%s] as a time value: negative durations "
            "are not supported" % (setting, value))
    return float(n) * _TIME_MS[m.group(2)]


# --- wildcards --------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def glob_match(pattern, name):
    """Elasticsearch's Regex.simpleMatch: only '*' is special."""
    if "*" not in pattern:
        return pattern == name
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), name,
                        re.DOTALL) is not None


def globs_overlap(p, q):
    """Whether some name matches both '*'-patterns (Regex.simpleMatch
    automata intersection, as template overlap checks use)."""

    @functools.lru_cache(maxsize=None)
    def go(i, j):
        if i == len(p) and j == len(q):
            return True
        if i < len(p) and p[i] == "*":
            if go(i + 1, j):
                return True
            return j < len(q) and go(i, j + 1)
        if j < len(q) and q[j] == "*":
            if go(i, j + 1):
                return True
            return i < len(p) and go(i + 1, j)
        if i < len(p) and j < len(q) and p[i] == q[j]:
            return go(i + 1, j + 1)
        return False

    return go(0, 0)


# --- names --------------------------------------------------------------------

_INVALID_CHARS = '\\/*?"<>| ,'
_INVALID_CHARS_TEXT = '[ , ", *, \\, <, |, ,, >, /, ?]'


def index_name_problem(name):
    """MetadataCreateIndexService.validateIndexOrAliasName + validateIndexName."""
    if any(c in _INVALID_CHARS for c in name):
        return "must not contain the following characters " + _INVALID_CHARS_TEXT
    if "#" in name:
        return "must not contain '#'"
    if ":" in name:
        return "must not contain ':'"
    if name[:1] in ("_", "-", "+"):
        return "must not start with '_', '-', or '+'"
    if name != name.lower():
        return "must be lowercase"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    n = len(name.encode("utf-8"))
    if n > 255:
        return "index name is too long, (%d > 255)" % n
    if not name:
        return "must not be empty"
    return None


def invalid_index_name(name, problem):
    return EsError(400, "invalid_index_name_exception",
                   "Invalid index name [%s], %s" % (name, problem),
                   {"index_uuid": NA, "index": name})
