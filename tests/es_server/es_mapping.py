"""Mappings of the Elasticsearch 8 test server: validation of mapping
definitions (templates, index creation, PUT _mapping), the per-document
check that DocumentParser does (strict/false/true dynamic, field types,
object vs concrete values), dynamic field creation and GET _mapping output.

Mappers are compiled once per index; checking a document walks its parsed
JSON against the compiled tree without re-reading any definition.
"""

import copy
import decimal
import functools
import re

import es_fields
from es_dates import format_problem, parse_date, DateParseError
from es_fields import FieldFail
from es_util import EsError, java_repr

Decimal = decimal.Decimal

DYNAMIC_DATE_FORMATS = ["strict_date_optional_time", "yyyy/MM/dd HH:mm:ss Z||yyyy/MM/dd Z"]
_NUMERIC_LONG = re.compile(r"^[+-]?[0-9]+$", re.ASCII)
_NUMERIC_DOUBLE = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$", re.ASCII)


def mapping_error(message, cause_type="mapper_parsing_exception"):
    """MapperService's 'Failed to parse mapping: ...' (400)."""
    inner = {"type": cause_type, "reason": message}
    top = "Failed to parse mapping: " + message
    if cause_type == "mapper_parsing_exception":
        root = [inner]
    else:
        root = [{"type": "mapper_parsing_exception", "reason": top}]
    return EsError(400, "mapper_parsing_exception", top, caused_by=inner, root=root)


class DocFail(Exception):
    """A document the mapping refuses. keys: the raw JSON path to the value
    (filled while unwinding) so the [line:col] prefix can be computed."""

    def __init__(self, etype, message, caused_by=None, located=True):
        super().__init__(message)
        self.etype = etype
        self.message = message
        self.caused_by = caused_by
        self.located = located
        self.keys = []


class FieldMapper:
    __slots__ = ("name", "path", "type", "defn", "check", "subfields", "ignore_malformed",
                 "is_object", "source_path", "fast")

    def __init__(self, name, path, ftype, defn, check, subfields, ignore_malformed):
        self.name = name
        self.path = path
        self.source_path = path
        self.type = ftype
        self.defn = defn
        self.check = check
        self.subfields = subfields
        self.ignore_malformed = ignore_malformed
        self.is_object = False
        # the whole check of a scalar value when nothing else is involved
        self.fast = check if not subfields and not ignore_malformed else None

    def to_json(self):
        d = {k: v for k, v in self.defn.items() if k != "fields"}
        if self.subfields:
            d["fields"] = {n: m.to_json() for n, m in self.subfields.items()}
        return d


class ObjectMapper:
    __slots__ = ("name", "path", "kind", "props", "dynamic", "enabled", "extra", "is_object",
                 "shapes")

    def __init__(self, name, path, kind="object", dynamic=None, enabled=True, extra=None):
        self.name = name
        self.path = path
        self.kind = kind
        self.props = {}
        self.dynamic = dynamic
        self.enabled = enabled
        self.extra = extra or {}
        self.is_object = True
        self.shapes = {}  # fast_check: tuple of keys -> compiled test (or None)

    def to_json(self):
        d = {}
        if self.kind == "nested":
            d["type"] = "nested"
        if self.dynamic is not None:
            d["dynamic"] = self.dynamic
        if not self.enabled:
            d["enabled"] = False
        d.update(self.extra)
        if self.props:
            d["properties"] = {n: m.to_json() for n, m in sorted(self.props.items())}
        return d


class RootMapper(ObjectMapper):
    __slots__ = ("meta", "date_detection", "numeric_detection", "date_formats", "source",
                 "dynamic_templates", "runtime", "field_count", "total_fields_limit",
                 "ignore_malformed_default", "explicit_dynamic", "text_shapes", "text_tried")

    def __init__(self):
        super().__init__("_doc", "", "root", dynamic="true")
        self.meta = None
        self.date_detection = True
        self.numeric_detection = False
        self.date_formats = list(DYNAMIC_DATE_FORMATS)
        self.source = None
        self.dynamic_templates = None
        self.runtime = None
        self.field_count = 0
        self.total_fields_limit = 1000
        self.ignore_malformed_default = False
        self.explicit_dynamic = False
        self.text_shapes = []  # fullmatch functions of text_shape regexes
        self.text_tried = set()  # structures learn_text_shape has seen

    def to_json(self):
        d = {}
        if self.dynamic != "true" or self.explicit_dynamic:
            d["dynamic"] = self.dynamic
        for key, val in (("_meta", self.meta), ("_source", self.source),
                         ("dynamic_templates", self.dynamic_templates),
                         ("runtime", self.runtime)):
            if val is not None:
                d[key] = val
        if not self.date_detection:
            d["date_detection"] = False
        if self.numeric_detection:
            d["numeric_detection"] = True
        if self.props:
            d["properties"] = {n: m.to_json() for n, m in sorted(self.props.items())}
        return d


_ROOT_KEYS = {"properties", "dynamic", "_source", "_meta", "_routing", "dynamic_templates",
              "date_detection", "numeric_detection", "dynamic_date_formats", "runtime",
              "enabled", "subobjects", "_field_names", "_data_stream_timestamp"}
_OBJECT_KEYS = {"type", "properties", "dynamic", "enabled", "subobjects", "include_in_parent",
                "include_in_root"}


def _dynamic_value(v, where):
    if v is True or v == "true":
        return "true"
    if v is False or v == "false":
        return "false"
    if v in ("strict", "runtime"):
        return v
    raise mapping_error("Could not convert [%s.dynamic] to boolean" % where)


def _unsupported(name, params):
    shown = ", ".join("%s : %s" % (k, java_repr(v)) for k, v in params.items())
    return mapping_error("Mapping definition for [%s] has unsupported parameters:  [%s]"
                         % (name, shown))


def compile_mapping(defn, index_settings=None):
    """A RootMapper for a mappings definition, or EsError 400."""
    if defn is None:
        defn = {}
    if not isinstance(defn, dict):
        raise mapping_error("Expected map for property [mappings] but got a %s"
                            % type(defn).__name__)
    if list(defn.keys()) == ["_doc"] and isinstance(defn["_doc"], dict):
        defn = defn["_doc"]
    root = RootMapper()
    settings = index_settings or {}
    root.total_fields_limit = int(settings.get("index.mapping.total_fields.limit", 1000))
    root.ignore_malformed_default = str(settings.get("index.mapping.ignore_malformed",
                                                     "false")) == "true"
    unknown = {k: v for k, v in defn.items() if k not in _ROOT_KEYS}
    if unknown:
        shown = ", ".join("%s : %s" % (k, java_repr(v)) for k, v in unknown.items())
        raise mapping_error("Root mapping definition has unsupported parameters:  [%s]" % shown)
    if "dynamic" in defn:
        root.dynamic = _dynamic_value(defn["dynamic"], "_doc")
        root.explicit_dynamic = True
    root.meta = defn.get("_meta")
    root.source = defn.get("_source")
    root.runtime = defn.get("runtime")
    root.dynamic_templates = defn.get("dynamic_templates")
    if "date_detection" in defn:
        root.date_detection = defn["date_detection"] in (True, "true")
    if "numeric_detection" in defn:
        root.numeric_detection = defn["numeric_detection"] in (True, "true")
    if "dynamic_date_formats" in defn:
        fmts = defn["dynamic_date_formats"]
        fmts = fmts if isinstance(fmts, list) else [fmts]
        for f in fmts:
            problem = format_problem(str(f))
            if problem:
                raise mapping_error(problem, "illegal_argument_exception")
        root.date_formats = [str(f) for f in fmts]
    props = defn.get("properties", {})
    if not isinstance(props, dict):
        raise mapping_error("Expected map for property [properties] on field [_doc]")
    for name, pdef in props.items():
        root.props[name] = _compile_property(name, name, pdef, root)
    root.field_count = count_fields(root)
    return root


def _compile_property(name, path, pdef, root):
    if not isinstance(pdef, dict):
        raise mapping_error("Expected map for property [type] on field [%s] but got a %s"
                            % (name, type(pdef).__name__))
    ftype = pdef.get("type")
    if ftype is None or ftype in ("object", "nested"):
        return _compile_object(name, path, pdef, root, ftype or "object")
    if not isinstance(ftype, str) or ftype not in es_fields.PARAMS:
        raise mapping_error("No handler for type [%s] declared on field [%s]" % (ftype, name))
    allowed = es_fields.PARAMS[ftype]
    for key in pdef:
        if key not in allowed:
            raise mapping_error("unknown parameter [%s] on mapper [%s] of type [%s]"
                                % (key, name, ftype))
    if ftype == "scaled_float":
        sf = pdef.get("scaling_factor")
        if sf is None:
            raise mapping_error("Field [scaling_factor] is required", "illegal_argument_exception")
        try:
            sf_val = float(sf)
        except (TypeError, ValueError):
            raise mapping_error("[scaling_factor] must be a number, got [%s]" % sf,
                                "illegal_argument_exception")
        if not (sf_val > 0 and sf_val != float("inf")):
            raise mapping_error("[scaling_factor] must be a positive number, got [%s]"
                                % float(sf_val), "illegal_argument_exception")
    if ftype in ("date", "date_nanos") and "format" in pdef:
        problem = format_problem(str(pdef["format"]))
        if problem:
            raise mapping_error(problem, "illegal_argument_exception")
    subfields = {}
    fields = pdef.get("fields")
    if fields is not None:
        if not isinstance(fields, dict):
            raise mapping_error("Expected map for property [fields] on field [%s] but got a %s"
                                % (name, type(fields).__name__))
        for sub, sdef in fields.items():
            m = _compile_property(sub, path + "." + sub, sdef, root)
            if m.is_object:
                raise mapping_error("Type [%s] cannot be used in multi field"
                                    % (sdef.get("type") or "object"))
            m.source_path = path
            subfields[sub] = m
    ignore_malformed = pdef.get("ignore_malformed", root.ignore_malformed_default) in (True,
                                                                                        "true")
    check = es_fields.checker_for(ftype, pdef)
    defn = copy.deepcopy(pdef)
    return FieldMapper(name, path, ftype, defn, check, subfields, ignore_malformed)


def _compile_object(name, path, pdef, root, kind):
    unknown = {k: v for k, v in pdef.items() if k not in _OBJECT_KEYS}
    if unknown:
        raise _unsupported(name, unknown)
    dyn = _dynamic_value(pdef["dynamic"], name) if "dynamic" in pdef else None
    enabled = pdef.get("enabled", True) not in (False, "false")
    extra = {k: pdef[k] for k in ("subobjects", "include_in_parent", "include_in_root")
             if k in pdef}
    obj = ObjectMapper(name, path, kind, dyn, enabled, extra)
    props = pdef.get("properties", {})
    if not isinstance(props, dict):
        raise mapping_error("Expected map for property [properties] on field [%s]" % name)
    for sub, sdef in props.items():
        obj.props[sub] = _compile_property(sub, path + "." + sub, sdef, root)
    return obj


def count_fields(obj):
    n = 0
    for m in obj.props.values():
        n += 1
        if m.is_object:
            n += count_fields(m)
        else:
            n += len(m.subfields)
    return n


# --- documents ------------------------------------------------------------------

class DocContext:
    """Per-document state: dynamic mappers added so far (undone when the
    document fails) and the number of new fields."""

    __slots__ = ("root", "added", "doc_id")

    def __init__(self, root, doc_id):
        self.root = root
        self.added = []
        self.doc_id = doc_id

    def rollback(self):
        for obj, name in reversed(self.added):
            obj.props.pop(name, None)
        self.root.field_count -= len(self.added)
        self.added = []


def check_document(root, source, doc_id):
    """Checks a parsed _source against root, adding dynamic fields. Raises
    DocFail (mapping left unchanged) when Elasticsearch would refuse it."""
    ctx = DocContext(root, doc_id)
    try:
        _parse_object(root, source, "true", ctx)
    except DocFail:
        ctx.rollback()
        raise
    if ctx.added and root.field_count > root.total_fields_limit:
        n = len(ctx.added)
        ctx.rollback()
        raise DocFail("illegal_argument_exception",
                      "Limit of total fields [%d] has been exceeded while adding new fields [%d]"
                      % (root.total_fields_limit, n), located=False)
    for obj, _ in ctx.added:
        obj.shapes.clear()  # a shape that lacked these fields can now be compiled
    if ctx.added:
        root.text_tried.clear()
    return bool(ctx.added)


# --- fast path of the bulk API ------------------------------------------------------
#
# Documents of one index mostly have the same keys in the same order. For
# each object mapper and tuple of keys, a test is compiled once (straight-line
# Python, see es_fields.inline_test) that accepts a document only when every
# key is already mapped and every value passes its field's check; it never
# raises, adds mappings or reports errors: a document it does not accept goes
# through check_document, which does all of that.

_SHAPES_MAX = 64


def fast_check(obj, value):
    """The number of key/value pairs in value's objects (nested ones
    included) when value (a dict) certainly passes check_document without
    changing the mapping, else 0. obj is the RootMapper (or an object mapper)."""
    keys = tuple(value)
    test = obj.shapes.get(keys, _MISSING)
    if test is _MISSING:
        test = _compile_shape(obj, keys)
        if len(obj.shapes) < _SHAPES_MAX:
            obj.shapes[keys] = test
    return test(value) if test is not None else 0


_MISSING = object()


def _compile_shape(obj, keys):
    """A function dict -> int (see fast_check) for dicts with exactly these
    keys in this order, or None when a key is not mapped or a mapper is of a
    kind the fast path leaves to check_document."""
    names = {"Decimal": Decimal, "_fast": fast_check}
    lines = ["def test(d):", "    try:"]
    if keys:
        lines.append("        %s, = d.values()" % ", ".join("v%d" % i for i in range(len(keys))))
    lines.append("        n = %d" % len(keys))
    for i, key in enumerate(keys):
        m = obj.props.get(key)
        if m is None:
            return None
        v = "v%d" % i
        lines.append("        if %s is not None:" % v)
        if m.is_object:
            if not m.enabled:
                return None
            names["o%d" % i] = m
            lines.append("            if %s.__class__ is not dict: return 0" % v)
            lines.append("            k = _fast(o%d, %s)" % (i, v))
            lines.append("            if k == 0 and %s: return 0" % v)
            lines.append("            n += k")
            continue
        tests = []
        for j, fm in enumerate([m] + list(m.subfields.values())):
            template, const = es_fields.inline_test(fm.type, fm.defn)
            cname = "c%d_%d" % (i, j)
            names[cname] = const
            tests.append("(" + template.format(v=v, c=cname) + ")")
        lines.append("            if %s.__class__ is list or not (%s): return 0"
                     % (v, " and ".join(tests)))
    lines += ["        return n", "    except Exception:", "        return 0"]
    exec(_shape_code("\n".join(lines) + "\n"), names)
    return names["test"]


# The text of a document can be checked without parsing it. A text shape is a
# regular expression of compact JSON documents with given keys in a given
# order (nested objects included) whose values all have forms their field
# certainly accepts (es_fields.text_pattern) or are null: a document that
# matches it is valid JSON without duplicate keys and passes check_document
# without changing the mapping. Shapes are learnt from documents (their key
# order) and only cover mapped fields, so mappings growing never invalidate
# one; a document that matches none goes through the parsing path.

_TEXT_SHAPES_MAX = 8
_PLAIN_KEY = re.compile(r'[^"\\\x00-\x1f]*')


def learn_text_shape(root, source):
    """Adds the text shape of documents shaped like source (a parsed
    document) to root.text_shapes when every field has a text form."""
    sig = _structure(source)
    if sig in root.text_tried or len(root.text_tried) >= 256:
        return
    root.text_tried.add(sig)
    if len(root.text_shapes) >= _TEXT_SHAPES_MAX:
        return
    pattern = _object_text(root, source)
    if pattern is not None:
        root.text_shapes.append(_text_regex(pattern))


@functools.lru_cache(maxsize=256)
def _text_regex(pattern):
    return re.compile(pattern).fullmatch


def _structure(value):
    return tuple((k, _structure(v) if v.__class__ is dict else v.__class__ is list)
                 for k, v in value.items())


def _object_text(obj, value):
    parts = []
    for key, v in value.items():
        m = obj.props.get(key)
        if m is None or _PLAIN_KEY.fullmatch(key) is None or v.__class__ is list:
            return None
        if m.is_object:
            if not m.enabled:
                return None
            if v.__class__ is dict:
                inner = _object_text(m, v)
                if inner is None:
                    return None
                form = "(?:null|" + inner + ")"
            elif v is None:
                form = "null"
            else:
                return None
        else:
            forms = {es_fields.text_pattern(f.type, f.defn)
                     for f in [m] + list(m.subfields.values())}
            if len(forms) != 1 or None in forms:
                return None
            form = "(?:null|" + forms.pop() + ")"
        parts.append(re.escape('"' + key + '":') + form)
    return r"\{" + ",".join(parts) + r"\}"


@functools.lru_cache(maxsize=256)
def _shape_code(source):
    """Indices created from one template share their shapes' code."""
    return compile(source, "<es_mapping shape>", "exec")


def _parse_object(obj, value, inherited, ctx):
    dynamic = obj.dynamic or inherited
    props = obj.props
    for key, v in value.items():
        m = props.get(key)
        if m is not None and not m.is_object and m.fast is not None and v is not None \
                and v.__class__ is not list:
            try:
                m.fast(v)
                continue
            except FieldFail:
                pass  # the slow path below builds the error
        try:
            if m is None:
                if "." in key:
                    _parse_dotted(obj, key, v, dynamic, ctx)
                    continue
                m = _dynamic_mapper(obj, key, v, dynamic, ctx)
                if m is None:
                    continue
            if v is None:
                continue
            if m.is_object:
                _parse_into_object(m, key, v, dynamic, ctx)
            else:
                _parse_field(m, v, ctx)
        except DocFail as e:
            e.keys.append(key)
            raise


def _parse_dotted(obj, key, v, dynamic, ctx):
    """'a.b': 1 is the object path a -> b (subobjects: true)."""
    parts = key.split(".")
    if any(p == "" for p in parts):
        raise DocFail("illegal_argument_exception",
                      "field name cannot contain only whitespace: ['%s']" % key
                      if key.strip() == "" else
                      "object field cannot contain only dots or empty segments: [%s]" % key,
                      located=False)
    nested = v
    for p in reversed(parts[1:]):
        nested = {p: nested}
    head = parts[0]
    m = obj.props.get(head)
    if m is None:
        m = _dynamic_mapper(obj, head, nested, dynamic, ctx)
        if m is None:
            return
    if m.is_object:
        try:
            _parse_into_object(m, head, nested, dynamic, ctx)
        except DocFail as e:
            e.keys = []  # the value's position is that of the dotted key's value
            raise
    else:
        raise DocFail("document_parsing_exception",
                      "Could not dynamically add mapping for field [%s]. Existing mapping for [%s] "
                      "must be of type object but found [%s]." % (key, m.path, m.type))


def _parse_into_object(m, key, v, dynamic, ctx):
    if not m.enabled:
        return
    c = v.__class__
    if c is dict:
        _parse_object(m, v, dynamic, ctx)
        return
    if c is list:
        for i, item in enumerate(v):
            try:
                if item is None:
                    continue
                _parse_into_object(m, key, item, dynamic, ctx)
            except DocFail as e:
                e.keys.append(i)
                raise
        return
    raise DocFail("document_parsing_exception",
                  "object mapping for [%s] tried to parse field [%s] as object, but found a "
                  "concrete value" % (m.path, key))


def _parse_field(m, v, ctx):
    if v.__class__ is list:
        for i, item in enumerate(v):
            if item is None:
                continue
            try:
                _parse_field(m, item, ctx)
            except DocFail as e:
                e.keys.append(i)
                raise
        return
    try:
        m.check(v)
        if m.subfields:
            for sub in m.subfields.values():
                sub.check(v)
    except FieldFail as f:
        if m.ignore_malformed:
            return
        preview = f.preview if f.preview is not None else _preview(v)
        raise DocFail("document_parsing_exception",
                      "failed to parse field [%s] of type [%s] in document with id '%s'. "
                      "Preview of field's value: '%s'" % (m.path, m.type, ctx.doc_id, preview),
                      f.caused_by)


def _preview(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    return java_repr(v)


# --- dynamic mapping --------------------------------------------------------------

def _dynamic_mapper(obj, key, v, dynamic, ctx):
    """The mapper a new field gets (added to obj), None when it stays
    unmapped (dynamic false/runtime, null or empty array)."""
    if dynamic == "strict":
        raise DocFail("strict_dynamic_mapping_exception",
                      "mapping set to strict, dynamic introduction of [%s] within [%s] is not "
                      "allowed" % (key, obj.path or "_doc"))
    if dynamic in ("false", "runtime"):
        return None
    sample = v
    while sample.__class__ is list:
        sample = next((x for x in sample if x is not None), None)
    if sample is None:
        return None
    path = obj.path + "." + key if obj.path else key
    if sample.__class__ is dict:
        m = ObjectMapper(key, path)
    else:
        defn = _dynamic_field_defn(sample, ctx.root)
        m = _compile_property(key, path, defn, ctx.root)
    obj.props[key] = m
    ctx.added.append((obj, key))
    ctx.root.field_count += 1 + (0 if m.is_object else len(m.subfields))
    return m


def _dynamic_field_defn(sample, root):
    c = sample.__class__
    if c is bool:
        return {"type": "boolean"}
    if c is int:
        return {"type": "long"}
    if c is Decimal:
        return {"type": "float"}
    text = sample
    if root.numeric_detection:
        if _NUMERIC_LONG.match(text):
            return {"type": "long"}
        if _NUMERIC_DOUBLE.match(text):
            return {"type": "float"}
    if root.date_detection:
        for fmt in root.date_formats:
            try:
                parse_date(text, fmt)
            except DateParseError:
                continue
            if fmt == "strict_date_optional_time":
                return {"type": "date"}
            return {"type": "date", "format": fmt}
    return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}


# --- lookups and updates --------------------------------------------------------------

def find_field(root, path):
    """The FieldMapper for a dotted path (multi-fields included), or None."""
    parts = path.split(".")
    node = root
    for i, p in enumerate(parts):
        if not node.is_object:
            if i == len(parts) - 1 and p in node.subfields:
                return node.subfields[p]
            return None
        nxt = node.props.get(p)
        if nxt is None:
            # a dotted name mapped as one field
            rest = ".".join(parts[i:])
            m = node.props.get(rest)
            return m if m is not None and not m.is_object else None
        node = nxt
    return None if node.is_object else node


def find_object(root, path):
    node = root
    for p in path.split("."):
        if not node.is_object:
            return None
        node = node.props.get(p)
        if node is None:
            return None
    return node if node.is_object else None


def merge_mapping(root, defn):
    """PUT _mapping: adds new fields, refuses type or parameter changes.
    Returns the merged RootMapper (root is left untouched on error)."""
    current = root.to_json()
    incoming = defn.get("_doc", defn) if isinstance(defn, dict) else defn
    merged = _merge_defn(current, incoming or {}, "")
    new_root = compile_mapping(merged)
    new_root.total_fields_limit = root.total_fields_limit
    new_root.ignore_malformed_default = root.ignore_malformed_default
    if new_root.field_count > new_root.total_fields_limit:
        raise EsError(400, "illegal_argument_exception",
                      "Limit of total fields [%d] has been exceeded" % new_root.total_fields_limit)
    return new_root


_UPDATABLE = {"ignore_above", "meta", "fields", "search_analyzer", "search_quote_analyzer",
              "eager_global_ordinals", "ignore_malformed"}


def _merge_defn(cur, new, prefix):
    out = dict(cur)
    for key, val in new.items():
        if key != "properties":
            out[key] = val
    props = dict(cur.get("properties", {}))
    for name, ndef in (new.get("properties") or {}).items():
        path = prefix + name
        if name not in props or not isinstance(ndef, dict):
            props[name] = ndef
            continue
        odef = props[name]
        otype = odef.get("type", "object")
        ntype = ndef.get("type", "object")
        if otype != ntype:
            if "object" in (otype, ntype) or "nested" in (otype, ntype):
                raise EsError(400, "illegal_argument_exception",
                              "can't merge a non object mapping [%s] with an object mapping"
                              % path if otype not in ("object", "nested") else
                              "can't merge a non-nested mapping [%s] with a nested mapping" % path
                              if "nested" in (otype, ntype) and "object" in (otype, ntype) else
                              "can't merge a non object mapping [%s] with an object mapping"
                              % path)
            raise EsError(400, "illegal_argument_exception",
                          "mapper [%s] cannot be changed from type [%s] to [%s]"
                          % (path, otype, ntype))
        if otype in ("object", "nested"):
            props[name] = _merge_defn(odef, ndef, path + ".")
            continue
        for param in sorted(set(odef) | set(ndef)):
            if param in _UPDATABLE or param == "type":
                continue
            if odef.get(param) != ndef.get(param):
                raise EsError(400, "illegal_argument_exception",
                              "Mapper for [%s] conflicts with existing mapper:\n\tCannot update "
                              "parameter [%s] from [%s] to [%s]"
                              % (path, param, _param_text(odef.get(param)),
                                 _param_text(ndef.get(param))))
        merged = dict(odef)
        merged.update(ndef)
        if "fields" in odef or "fields" in ndef:
            fields = dict(odef.get("fields", {}))
            fields.update(ndef.get("fields", {}))
            merged["fields"] = fields
        props[name] = merged
    if props:
        out["properties"] = props
    return out


def _param_text(v):
    if v is None:
        return "null"
    if isinstance(v, (int, Decimal)) and not isinstance(v, bool):
        return str(float(v))
    return java_repr(v)
