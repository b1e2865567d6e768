"""The _search / _count subset of the Elasticsearch 8 test server.

Queries: match_all, match_none, term, terms, match, range, exists, bool,
ids, constant_score. Values are compared the way the field's type indexes
them (keyword exact, text by lowercase word tokens, numbers numerically,
dates as epoch millis); fields that are not mapped (dynamic: false) match
nothing, as they are not indexed. Scores are not computed: every hit of a
scoring query scores 1.0, of a filter-only query 0.0.
"""

import decimal
import ipaddress
import re
import time

from es_dates import DateParseError, parse_date, DEFAULT_FORMAT
from es_mapping import find_field, find_object
from es_util import EsError, NA

Decimal = decimal.Decimal

_NUMERIC = {"long", "integer", "short", "byte", "unsigned_long", "double", "float",
            "half_float", "scaled_float"}
_TEXT = {"text", "match_only_text", "search_as_you_type"}
_WORD = re.compile(r"\w+", re.UNICODE)
_UNSUPPORTED_QUERIES = {"query_string", "simple_query_string", "prefix", "wildcard", "regexp",
                        "fuzzy", "nested", "match_phrase", "multi_match", "function_score",
                        "script", "geo_distance", "terms_set", "more_like_this"}


def parsing_error(reason):
    return EsError(400, "parsing_exception", reason, {"line": 1, "col": 1})


def shard_failure(index, reason_err):
    """search_phase_execution_exception wrapping a per-shard failure."""
    inner = reason_err.inner()
    root = [dict(inner, index_uuid=index.uuid if index else NA,
                 index=index.name if index else NA)]
    return EsError(400, "search_phase_execution_exception", "all shards failed",
                   {"phase": "query", "grouped": True,
                    "failed_shards": [{"shard": 0, "index": index.name if index else NA,
                                       "node": "pgfan-es-test-node", "reason": inner}]},
                   caused_by=inner, root=root)


# --- values as indexed ------------------------------------------------------------

def source_values(source, path):
    """Every non-null leaf value under a dotted path of a _source (arrays
    flattened, dotted keys in the source honoured)."""
    out = []
    _collect(source, path.split("."), out)
    return out


def _collect(node, parts, out):
    if node.__class__ is list:
        for item in node:
            _collect(item, parts, out)
        return
    if not parts:
        if node is not None:
            out.append(node)
        return
    if node.__class__ is not dict:
        return
    for i in range(1, len(parts) + 1):
        key = ".".join(parts[:i])
        if key in node:
            _collect(node[key], parts[i:], out)


def _bool_value(v):
    if v is True or v == "true":
        return True
    if v is False or v in ("false", ""):
        return False
    return None


def indexed_value(mapper, v):
    """The comparable form of one source value in mapper's field, None when
    the value is not indexed (malformed with ignore_malformed, too long)."""
    t = mapper.type
    try:
        if t in _NUMERIC:
            if v.__class__ is bool or v.__class__ is dict or v == "":
                return None
            d = Decimal(str(v).strip())
            if t in ("long", "integer", "short", "byte", "unsigned_long"):
                return int(d)
            if t == "scaled_float":
                f = Decimal(str(mapper.defn["scaling_factor"]))
                return (d * f).to_integral_value(rounding=decimal.ROUND_HALF_UP) / f
            return d
        if t in ("date", "date_nanos"):
            return parse_date(v, mapper.defn.get("format", DEFAULT_FORMAT))
        if t == "boolean":
            return _bool_value(v)
        if t == "ip":
            return ipaddress.ip_address(str(v))
        if v.__class__ is dict:
            return None
        text = ("true" if v else "false") if v.__class__ is bool else str(v)
        if t in ("keyword", "wildcard", "constant_keyword", "version"):
            limit = mapper.defn.get("ignore_above")
            if limit is not None and len(text) > int(limit):
                return None
        return text
    except (decimal.InvalidOperation, ValueError, DateParseError, TypeError):
        return None


def query_value(mapper, v, fmt=None):
    """A query's term converted like a document value of the field."""
    t = mapper.type
    try:
        if t in _NUMERIC:
            d = Decimal(str(v))
            if t in ("long", "integer", "short", "byte", "unsigned_long"):
                return d
            return d
        if t in ("date", "date_nanos"):
            return _date_query_value(v, fmt or mapper.defn.get("format", DEFAULT_FORMAT))
        if t == "boolean":
            b = _bool_value(v)
            if b is None:
                raise ValueError(v)
            return b
        if t == "ip":
            return ipaddress.ip_address(str(v))
    except (decimal.InvalidOperation, ValueError, DateParseError):
        raise EsError(400, "query_shard_exception",
                      "failed to create query: For input string: \"%s\"" % v)
    return ("true" if v else "false") if v.__class__ is bool else str(v)


_NOW = re.compile(r"^now(?:([+-])(\d+)([smhdwMy]))?(?:/([smhdwMy]))?$")
_UNIT_MS = {"s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000,
            "M": 2592000000, "y": 31536000000}


def _date_query_value(v, fmt):
    if isinstance(v, str):
        m = _NOW.match(v)
        if m:
            ms = time.time() * 1000
            if m.group(1):
                delta = int(m.group(2)) * _UNIT_MS[m.group(3)]
                ms = ms + delta if m.group(1) == "+" else ms - delta
            if m.group(4):
                unit = _UNIT_MS[m.group(4)]
                ms = ms - ms % unit
            return ms
    return parse_date(v, fmt)


def field_values(root, source, mapper):
    vals = []
    for v in source_values(source, mapper.source_path):
        iv = indexed_value(mapper, v)
        if iv is not None:
            vals.append(iv)
    return vals


def analyze(text):
    return _WORD.findall(str(text).lower())


# --- queries -----------------------------------------------------------------------

class Query:
    """A compiled query: match(index, doc) -> bool; scoring: whether hits
    get a score (False for filter-only queries)."""

    def __init__(self, match, scoring=True):
        self.match = match
        self.scoring = scoring


def _single(body, qname):
    if not isinstance(body, dict) or len(body) != 1:
        raise parsing_error("[%s] query doesn't support multiple fields, found [%s]"
                            % (qname, ", ".join(body) if isinstance(body, dict) else body))
    return next(iter(body.items()))


def compile_query(q):
    if q is None:
        return Query(lambda ix, d: True)
    if not isinstance(q, dict) or len(q) != 1:
        raise parsing_error("query malformed, must start with start_object")
    name, body = next(iter(q.items()))
    if name == "match_all":
        return Query(lambda ix, d: True)
    if name == "match_none":
        return Query(lambda ix, d: False)
    if name == "term":
        return _term_query(*_single(body, "term"))
    if name == "terms":
        fields = {k: v for k, v in body.items() if k != "boost"}
        field, values = _single(fields, "terms")
        if not isinstance(values, list):
            raise parsing_error("[terms] query does not support [%s]" % field)
        return _terms_query(field, values)
    if name == "match":
        return _match_query(*_single(body, "match"))
    if name == "range":
        return _range_query(*_single(body, "range"))
    if name == "exists":
        return _exists_query(body.get("field"))
    if name == "ids":
        values = set(str(v) for v in body.get("values", []))
        return Query(lambda ix, d: d[0] in values)
    if name == "bool":
        return _bool_query(body)
    if name == "constant_score":
        inner = compile_query(body.get("filter"))
        return Query(inner.match, True)
    if name in _UNSUPPORTED_QUERIES:
        raise EsError(400, "parsing_exception",
                      "query [%s] is not implemented by the pgfan Elasticsearch test server "
                      "(tests/es_server)" % name, {"line": 1, "col": 1})
    raise EsError(400, "parsing_exception", "unknown query [%s]" % name,
                  {"line": 1, "col": 1},
                  caused_by={"type": "named_object_not_found_exception",
                             "reason": "[1:1] unknown field [%s]" % name})


def _term_body(body):
    if isinstance(body, dict):
        if "value" not in body:
            raise parsing_error("[term] query does not support [%s]" % ", ".join(body))
        return body["value"], body.get("case_insensitive", False)
    return body, False


def _id_or_field(field, predicate_values):
    if field == "_id":
        wanted = set(str(v) for v in predicate_values)
        return Query(lambda ix, d: d[0] in wanted)
    if field == "_index":
        wanted = set(str(v) for v in predicate_values)
        return Query(lambda ix, d: ix.name in wanted)
    return None


def _term_query(field, body):
    value, ci = _term_body(body)
    special = _id_or_field(field, [value])
    if special:
        return special

    def match(ix, d):
        m = find_field(ix.mapping, field)
        if m is None:
            return False
        qv = query_value(m, value)
        vals = _terms_of(m, d[1])
        if ci and isinstance(qv, str):
            return qv.lower() in (str(v).lower() for v in vals)
        return qv in vals

    return Query(match)


def _terms_of(m, source):
    if m.type in _TEXT:
        out = []
        for v in source_values(source, m.source_path):
            out.extend(analyze(v))
        return out
    return [v for v in (indexed_value(m, x) for x in source_values(source, m.source_path))
            if v is not None]


def _terms_query(field, values):
    special = _id_or_field(field, values)
    if special:
        return special

    def match(ix, d):
        m = find_field(ix.mapping, field)
        if m is None:
            return False
        vals = _terms_of(m, d[1])
        return any(query_value(m, v) in vals for v in values)

    return Query(match)


def _match_query(field, body):
    if isinstance(body, dict):
        text = body.get("query")
        operator = str(body.get("operator", "or")).lower()
    else:
        text, operator = body, "or"
    special = _id_or_field(field, [text])
    if special:
        return special

    def match(ix, d):
        m = find_field(ix.mapping, field)
        if m is None:
            return False
        if m.type in _TEXT:
            tokens = set(_terms_of(m, d[1]))
            wanted = analyze(text)
            if not wanted:
                return False
            hits = [t in tokens for t in wanted]
            return all(hits) if operator == "and" else any(hits)
        return query_value(m, text) in _terms_of(m, d[1])

    return Query(match)


def _range_query(field, body):
    if not isinstance(body, dict):
        raise parsing_error("[range] query malformed, no start_object after query name")
    bounds = []
    for key, val in body.items():
        if key in ("gt", "gte", "lt", "lte"):
            bounds.append((key, val))
        elif key == "from" and val is not None:
            bounds.append(("gte" if body.get("include_lower", True) else "gt", val))
        elif key == "to" and val is not None:
            bounds.append(("lte" if body.get("include_upper", True) else "lt", val))
        elif key not in ("format", "boost", "time_zone", "relation", "include_lower",
                         "include_upper", "from", "to"):
            raise parsing_error("[range] query does not support [%s]" % key)
    fmt = body.get("format")

    def match(ix, d):
        m = find_field(ix.mapping, field)
        if m is None:
            return False
        qbounds = [(op, query_value(m, v, fmt)) for op, v in bounds]
        for v in _terms_of(m, d[1]):
            try:
                if all(_compare(op, v, b) for op, b in qbounds):
                    return True
            except TypeError:
                continue
        return False

    return Query(match)


def _compare(op, v, b):
    if isinstance(v, Decimal) or isinstance(b, Decimal):
        v, b = Decimal(str(v)), Decimal(str(b))
    if op == "gt":
        return v > b
    if op == "gte":
        return v >= b
    if op == "lt":
        return v < b
    return v <= b


def _exists_query(field):
    if not isinstance(field, str):
        raise parsing_error("[exists] must be provided with a [field]")
    if field == "_id":
        return Query(lambda ix, d: True)

    def match(ix, d):
        m = find_field(ix.mapping, field)
        if m is not None:
            return bool(_terms_of(m, d[1])) if m.type not in _TEXT else bool(
                source_values(d[1], m.source_path))
        obj = find_object(ix.mapping, field)
        if obj is None:
            return False
        return _object_has_values(obj, d[1])

    return Query(match)


def _object_has_values(obj, source):
    for sub in obj.props.values():
        if sub.is_object:
            if _object_has_values(sub, source):
                return True
        elif source_values(source, sub.source_path):
            return True
    return False


def _clauses(body, key):
    c = body.get(key)
    if c is None:
        return []
    return [compile_query(x) for x in (c if isinstance(c, list) else [c])]


def _bool_query(body):
    if not isinstance(body, dict):
        raise parsing_error("[bool] query malformed")
    for key in body:
        if key not in ("must", "filter", "should", "must_not", "minimum_should_match", "boost",
                       "_name"):
            raise parsing_error("[bool] query does not support [%s]" % key)
    must, flt = _clauses(body, "must"), _clauses(body, "filter")
    should, must_not = _clauses(body, "should"), _clauses(body, "must_not")
    msm = body.get("minimum_should_match")
    if msm is None:
        need = 1 if should and not must and not flt else 0
    else:
        need = _min_should(msm, len(should))

    def match(ix, d):
        for q in must:
            if not q.match(ix, d):
                return False
        for q in flt:
            if not q.match(ix, d):
                return False
        for q in must_not:
            if q.match(ix, d):
                return False
        if need:
            n = 0
            for q in should:
                if q.match(ix, d):
                    n += 1
                    if n >= need:
                        return True
            return False
        return True

    scoring = bool(must or should)
    return Query(match, scoring)


def _min_should(msm, n):
    s = str(msm).strip()
    if s.endswith("%"):
        pct = int(s[:-1])
        k = int(n * abs(pct) / 100)
        return k if pct >= 0 else n - k
    k = int(s)
    return k if k >= 0 else max(n + k, 0)


# --- sorting ------------------------------------------------------------------------

class SortKey:
    __slots__ = ("field", "desc", "missing_first", "unmapped_type")

    def __init__(self, field, desc, missing_first, unmapped_type):
        self.field = field
        self.desc = desc
        self.missing_first = missing_first
        self.unmapped_type = unmapped_type


def parse_sort(spec):
    if spec is None:
        return []
    items = spec if isinstance(spec, list) else [spec]
    keys = []
    for item in items:
        if isinstance(item, str):
            field, opts = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            field, opts = next(iter(item.items()))
            if isinstance(opts, str):
                opts = {"order": opts}
        else:
            raise parsing_error("malformed sort format, within the sort array, an object, or an "
                                "actual string are allowed")
        order = str(opts.get("order", "desc" if field == "_score" else "asc")).lower()
        if order not in ("asc", "desc"):
            raise illegal_sort_order(order)
        missing = opts.get("missing", "_last")
        keys.append(SortKey(field, order == "desc", missing == "_first",
                            opts.get("unmapped_type")))
    return keys


def illegal_sort_order(order):
    return EsError(400, "illegal_argument_exception",
                   "Unknown SortOrder [%s]" % order)


def sort_param(text):
    """?sort=field:asc,other:desc"""
    out = []
    for part in text.split(","):
        if not part:
            continue
        field, _, order = part.partition(":")
        out.append({field: {"order": order or "asc"}})
    return out


def check_sortable(index, keys):
    for k in keys:
        if k.field in ("_doc", "_score"):
            continue
        if k.field == "_id":
            raise shard_failure(index, EsError(
                400, "illegal_argument_exception",
                "Fielddata access on the _id field is disallowed, you can re-enable it by "
                "updating the dynamic cluster setting: indices.id_field_data.enabled"))
        m = find_field(index.mapping, k.field)
        if m is None:
            if k.unmapped_type:
                continue
            raise shard_failure(index, EsError(
                400, "query_shard_exception", "No mapping found for [%s] in order to sort on"
                % k.field, {"index_uuid": index.uuid, "index": index.name}))
        if m.type in _TEXT and not m.defn.get("fielddata"):
            raise shard_failure(index, EsError(
                400, "illegal_argument_exception",
                "Text fields are not optimised for operations that require per-document field data "
                "like aggregations and sorting, so these operations are disabled by default. Please "
                "use a keyword field instead. Alternatively, set fielddata=true on [%s] in order to "
                "load field data by uninverting the inverted index. Note that this can use "
                "significant memory." % k.field))


def sort_value(index, key, hit_order, source):
    """The value shown in a hit's "sort" array (None when missing)."""
    if key.field == "_doc":
        return hit_order
    if key.field == "_score":
        return 1.0
    m = find_field(index.mapping, key.field)
    if m is None:
        return None
    vals = [v for v in _terms_of(m, source)]
    if not vals:
        return None
    v = max(vals) if key.desc else min(vals)
    if m.type in ("date", "date_nanos"):
        return int(v)
    if m.type == "boolean":
        return 1 if v else 0
    if isinstance(v, Decimal):
        return int(v) if m.type in ("long", "integer", "short", "byte", "unsigned_long") \
            else float(v)
    if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(v)
    return v


class _Ordered:
    """Sort wrapper: one key's value with direction and missing placement."""

    __slots__ = ("v", "desc", "missing_first")

    def __init__(self, v, desc, missing_first):
        self.v = v
        self.desc = desc
        self.missing_first = missing_first

    def __lt__(self, other):
        a, b = self.v, other.v
        if a is None or b is None:
            if a is None and b is None:
                return False
            return (a is None) == self.missing_first
        if isinstance(a, (int, float)) and isinstance(b, str) or \
                isinstance(a, str) and isinstance(b, (int, float)):
            a, b = str(a), str(b)
        return b < a if self.desc else a < b

    def __eq__(self, other):
        return self.v == other.v


def order_key(values, keys):
    return tuple(_Ordered(v, k.desc, k.missing_first) for v, k in zip(values, keys))


def coerce_search_after(values, keys):
    if not isinstance(values, list):
        raise parsing_error("[search_after] must be an array")
    if len(values) != len(keys):
        raise EsError(400, "illegal_argument_exception",
                      "search_after has %d value(s) but sort has %d." % (len(values), len(keys)))
    out = []
    for v in values:
        if isinstance(v, Decimal):
            v = float(v)
        out.append(v)
    return out
