"""Value checks of Elasticsearch 8 field types (what a document value must
look like to be indexed into a field of that type).

Each checker takes one non-null, non-array JSON value (str, int, Decimal,
bool, dict) and returns nothing, or raises FieldFail with the caused_by
Elasticsearch reports. Coercion follows the default `coerce: true`:
numeric strings are accepted, fractions are truncated for integer types.
"""

import base64
import binascii
import decimal
import ipaddress
import re

from es_dates import (DEFAULT_FORMAT, ISO_SURE_PATTERN, DateParseError, compile_format,
                      compile_validator)
from es_util import java_repr

Decimal = decimal.Decimal

_INT_TEXT = re.compile(r"^[+-]?[0-9]+$", re.ASCII)
_DEC_TEXT = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$", re.ASCII)
_BIG = Decimal("1e40")


class FieldFail(Exception):
    """A value a field cannot take; caused_by is the inner error dict."""

    def __init__(self, caused_by, preview=None):
        super().__init__(caused_by.get("reason"))
        self.caused_by = caused_by
        self.preview = preview


def _iae(reason):
    return FieldFail({"type": "illegal_argument_exception", "reason": reason})


def _not_text(v):
    # KeywordFieldMapper/TextFieldMapper call parser.text() on START_OBJECT
    return FieldFail({"type": "illegal_state_exception",
                      "reason": "Can't get text on a START_OBJECT"}, java_repr(v))


def check_string(v):
    if v.__class__ is dict:
        raise _not_text(v)


def _token_name(v):
    if v is True:
        return "VALUE_TRUE"
    if v is False:
        return "VALUE_FALSE"
    return "START_OBJECT"


def _not_numeric(v):
    if v.__class__ is dict:
        return FieldFail({"type": "illegal_state_exception",
                          "reason": "Can't get text on a START_OBJECT"}, java_repr(v))
    return FieldFail({"type": "x_content_parse_exception",
                      "reason": "Current token (%s) not numeric, can not use numeric value "
                                "accessors" % _token_name(v)})


def make_integer_checker(tname, bits, coerce=True):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    java = {"long": "long", "integer": "int", "short": "short", "byte": "byte"}[tname]
    article = {"long": "a long", "integer": "an integer", "short": "a short",
               "byte": "a byte"}[tname]

    def out_of_range(text):
        return _iae("Value [%s] is out of range for %s" % (text, article))

    def check(v):
        c = v.__class__
        if c is int:
            if v < lo or v > hi:
                raise _iae("Numeric value (%d) out of range of %s (%d - %d)" % (v, java, lo, hi))
            return
        if c is Decimal:
            if not v.is_finite() or abs(v) > _BIG:
                raise _iae("Numeric value (%s) out of range of %s (%d - %d)" % (v, java, lo, hi))
            n = int(v)
            if not coerce and n != v:
                raise _iae("%s cannot be converted to %s without data loss"
                           % (v, java.capitalize() if java != "int" else "Integer"))
            if n < lo or n > hi:
                raise _iae("Numeric value (%s) out of range of %s (%d - %d)" % (v, java, lo, hi))
            return
        if c is str:
            if v == "":
                return
            if not coerce:
                raise _iae("[coerce] is false, can't coerce the value [%s]" % v)
            if _INT_TEXT.match(v):
                n = int(v)
            elif _DEC_TEXT.match(v):
                d = Decimal(v)
                if abs(d) > _BIG:
                    raise out_of_range(v)
                n = int(d)
            else:
                raise _iae('For input string: "%s"' % v)
            if n < lo or n > hi:
                raise out_of_range(v)
            return
        raise _not_numeric(v)

    return check


_U64 = (1 << 64) - 1


def check_unsigned_long(v):
    """UnsignedLongFieldMapper.parseUnsignedLong: no coercion of fractions."""
    c = v.__class__
    if c is int:
        if v < 0 or v > _U64:
            raise _iae("Value [%d] is out of range for unsigned long" % v)
        return
    if c is Decimal:
        raise _iae("For input string: [%s]." % v)
    if c is str:
        if v == "":
            return
        if _INT_TEXT.match(v):
            n = int(v)
        elif _DEC_TEXT.match(v):
            d = Decimal(v)
            if abs(d) > _BIG or d != d.to_integral_value():
                raise _iae('Value "%s" has a decimal part' % v)
            n = int(d)
        else:
            raise _iae('For input string: "%s"' % v)
        if n < 0 or n > _U64:
            raise _iae("Value [%d] is out of range for unsigned long" % n)
        return
    raise _not_numeric(v)


_FLOAT_MAX = {"double": 1.7976931348623157e308, "float": 3.4028234663852886e38,
              "half_float": 65504.0, "scaled_float": 1.7976931348623157e308}


def make_float_checker(tname, coerce=True):
    limit = _FLOAT_MAX[tname]
    label = "[%s] supports only finite values" % tname if tname != "scaled_float" else \
        "[scaled_float] only supports finite values"

    def finite(f, text):
        if f != f or abs(f) > limit:
            shown = "NaN" if f != f else ("Infinity" if f > 0 else "-Infinity")
            raise _iae("%s, but got [%s]" % (label, shown))

    def check(v):
        c = v.__class__
        if c is int or c is Decimal:
            try:
                f = float(v)
            except OverflowError:
                f = float("inf") if v > 0 else float("-inf")
            finite(f, v)
            return
        if c is str:
            if v == "":
                return
            if not coerce:
                raise _iae("[coerce] is false, can't coerce the value [%s]" % v)
            s = v.strip()
            if _DEC_TEXT.match(s):
                finite(float(Decimal(s)), v)
                return
            if s in ("NaN", "Infinity", "+Infinity", "-Infinity"):
                finite(float(s.replace("Infinity", "inf")), v)
            raise FieldFail({"type": "number_format_exception",
                             "reason": 'For input string: "%s"' % v})
        raise _not_numeric(v)

    return check


def check_boolean(v):
    if v is True or v is False:
        return
    if v.__class__ is str:
        if v in ("true", "false", ""):
            return
        raise _iae("Failed to parse value [%s] as only [true] or [false] are allowed." % v)
    if v.__class__ is dict:
        raise FieldFail({"type": "illegal_state_exception",
                         "reason": "Can't get text on a START_OBJECT"}, java_repr(v))
    raise _iae("Failed to parse value [%s] as only [true] or [false] are allowed." % v)


def make_date_checker(fmt=None, nanos=False):
    fmt = fmt or DEFAULT_FORMAT
    parse = compile_format(fmt)
    valid = compile_validator(fmt)

    def check(v):
        if v.__class__ is dict or v is True or v is False:
            raise FieldFail({"type": "illegal_argument_exception",
                             "reason": "failed to parse date field [%s] with format [%s]"
                                       % (java_repr(v), fmt)}, java_repr(v))
        if not nanos and valid(v):
            return
        try:
            ms = parse(v)
        except DateParseError:
            raise FieldFail({"type": "illegal_argument_exception",
                             "reason": "failed to parse date field [%s] with format [%s]" % (v, fmt),
                             "caused_by": {"type": "date_time_parse_exception",
                                           "reason": "Failed to parse with all enclosed parsers"}})
        if nanos and (ms < 0 or ms > 9223372036854.775):
            raise _iae("date[%s] is before the epoch in 1970 and cannot be stored in nanosecond "
                       "resolution" % v if ms < 0 else
                       "date[%s] is after 2262-04-11T23:47:16.854775807 and cannot be stored in "
                       "nanosecond resolution" % v)

    return check


def check_binary(v):
    if v.__class__ is not str:
        if v.__class__ is dict:
            raise _not_text(v)
        raise FieldFail({"type": "json_parse_exception",
                         "reason": "Current token (%s) not VALUE_STRING or VALUE_EMBEDDED_OBJECT, "
                                   "can not access as binary" % (
                                       "VALUE_NUMBER_INT" if v.__class__ is int else
                                       "VALUE_NUMBER_FLOAT" if v.__class__ is Decimal else
                                       _token_name(v))})
    try:
        base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise FieldFail({"type": "json_parse_exception",
                         "reason": "Failed to decode VALUE_STRING as base64 (MIME-NO-LINEFEEDS): "
                                   "Illegal character or missing padding"})


def check_ip(v):
    if v.__class__ is dict:
        raise _not_text(v)
    s = str(v) if v.__class__ is not bool else ("true" if v else "false")
    try:
        ipaddress.ip_address(s)
    except ValueError:
        raise _iae("'%s' is not an IP string literal." % s)


def check_flattened(v):
    if v.__class__ is not dict:
        token = {str: "VALUE_STRING", int: "VALUE_NUMBER", Decimal: "VALUE_NUMBER"}.get(
            v.__class__, _token_name(v))
        raise FieldFail({"type": "parsing_exception",
                         "reason": "Failed to parse object: expecting token of type [START_OBJECT] "
                                   "but found [%s]" % token})


def checker_for(ftype, params):
    """The value check of a field mapper of ftype with mapping params."""
    coerce = params.get("coerce", True) not in (False, "false")
    if ftype in ("keyword", "text", "match_only_text", "wildcard", "constant_keyword",
                 "search_as_you_type", "version"):
        return check_string
    if ftype in ("long", "integer", "short", "byte"):
        return make_integer_checker(ftype, {"long": 64, "integer": 32, "short": 16,
                                            "byte": 8}[ftype], coerce)
    if ftype == "unsigned_long":
        return check_unsigned_long
    if ftype in ("double", "float", "half_float", "scaled_float"):
        return make_float_checker(ftype, coerce)
    if ftype == "boolean":
        return check_boolean
    if ftype == "date":
        return make_date_checker(params.get("format"))
    if ftype == "date_nanos":
        return make_date_checker(params.get("format"), nanos=True)
    if ftype == "binary":
        return check_binary
    if ftype == "ip":
        return check_ip
    if ftype == "flattened":
        return check_flattened
    raise KeyError(ftype)


# Digits of the integer part below which a value of each float type is finite
# (10^digits <= its largest finite value).
_FLOAT_DIGITS = {"double": 308, "scaled_float": 308, "float": 38, "half_float": 4}
# Digits of an integer that always fits each integer type (10^digits - 1 <= max).
_INT_DIGITS = {"long": 18, "integer": 9, "short": 4, "byte": 2}
_ISO_FORMATS = ("strict_date_optional_time", "date_optional_time")
_STRING_TEXT = r'"[^"\\\x00-\x1f]*"'


def text_pattern(ftype, params):
    """A regular expression of JSON value texts (no null, no array) that
    checker_for(ftype, params) certainly accepts, or None: strings without
    escapes for text types, integers short enough for the integer types,
    plain decimals for the float types, ISO dates whose fields are in range
    (es_dates._ISO_SURE) when the format has an ISO alternative. The bulk
    fast path (es_mapping.text_shape) checks whole documents with it."""
    if ftype in ("keyword", "text", "match_only_text", "wildcard", "constant_keyword",
                 "search_as_you_type", "version"):
        return _STRING_TEXT
    if ftype in _INT_DIGITS:
        return "-?(?:0|[1-9][0-9]{0,%d})" % (_INT_DIGITS[ftype] - 1)
    if ftype == "unsigned_long":
        return "(?:0|[1-9][0-9]{0,18})"
    if ftype in _FLOAT_DIGITS:
        return r"-?(?:0|[1-9][0-9]{0,%d})(?:\.[0-9]+)?" % (_FLOAT_DIGITS[ftype] - 1)
    if ftype == "boolean":
        return "(?:true|false)"
    if ftype == "date":
        fmt = params.get("format") or DEFAULT_FORMAT
        if any(alt in _ISO_FORMATS for alt in fmt.split("||")):
            return '"' + ISO_SURE_PATTERN + '"'
    return None


def inline_test(ftype, params):
    """(template, constant) of a Python expression on a value {v} (never None,
    never a list) that is true only when checker_for(ftype, params) accepts
    the value; {c} names constant (a function or None). The bulk fast path
    (es_mapping.fast_check) inlines it, so each template here must mirror
    its checker above: when the expression is false or raises, the full
    check runs and reports the error."""
    if ftype in ("keyword", "text", "match_only_text", "wildcard", "constant_keyword",
                 "search_as_you_type", "version"):
        return "{v}.__class__ is not dict", None  # check_string
    if ftype in ("long", "integer", "short", "byte"):
        bits = {"long": 64, "integer": 32, "short": 16, "byte": 8}[ftype]
        return ("{v}.__class__ is int and %d <= {v} <= %d"
                % (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)), None
    if ftype == "unsigned_long":
        return "{v}.__class__ is int and 0 <= {v} <= %d" % _U64, None
    if ftype in _FLOAT_MAX:
        # |v| < 10^(k+1) <= the type's largest finite value: float(v) is finite
        # (JSON has no NaN or Infinity; Decimal.adjusted() is the exponent of
        # the leading digit)
        k = _FLOAT_DIGITS[ftype] - 1
        return ("(({v}.__class__ is Decimal and {v}.adjusted() <= %d) or "
                "({v}.__class__ is int and -%d < {v} < %d))" % (k, 10 ** (k + 1), 10 ** (k + 1))), None
    if ftype == "boolean":
        return "({v} is True or {v} is False)", None
    if ftype == "date":
        return "{v}.__class__ is str and {c}({v})", compile_validator(params.get("format")
                                                                     or DEFAULT_FORMAT)
    return "{c}({v}) is None", checker_for(ftype, params)


# Mapping parameters each field type accepts (FieldMapper.Builder parameters).
_COMMON = {"type", "meta", "fields", "copy_to", "store", "doc_values", "index", "null_value",
           "script", "on_script_error"}
_NUMERIC = _COMMON | {"coerce", "ignore_malformed", "time_series_dimension",
                      "time_series_metric"}
PARAMS = {
    "keyword": _COMMON | {"ignore_above", "normalizer", "eager_global_ordinals", "norms",
                          "similarity", "index_options", "split_queries_on_whitespace",
                          "time_series_dimension"},
    "constant_keyword": {"type", "value", "meta"},
    "wildcard": {"type", "ignore_above", "null_value", "meta", "fields", "copy_to"},
    "version": {"type", "meta", "fields", "copy_to"},
    "text": {"type", "meta", "fields", "copy_to", "store", "index", "analyzer", "search_analyzer",
             "search_quote_analyzer", "norms", "similarity", "index_options", "index_prefixes",
             "index_phrases", "position_increment_gap", "term_vector", "fielddata",
             "fielddata_frequency_filter", "eager_global_ordinals"},
    "match_only_text": {"type", "meta", "fields", "copy_to"},
    "search_as_you_type": {"type", "meta", "analyzer", "search_analyzer", "max_shingle_size",
                           "index", "norms", "store", "similarity", "index_options",
                           "term_vector", "copy_to"},
    "long": _NUMERIC, "integer": _NUMERIC, "short": _NUMERIC, "byte": _NUMERIC,
    "double": _NUMERIC, "float": _NUMERIC, "half_float": _NUMERIC,
    "unsigned_long": _NUMERIC - {"coerce"},
    "scaled_float": _NUMERIC | {"scaling_factor"},
    "boolean": _COMMON | {"time_series_dimension", "ignore_malformed"},
    "date": _COMMON | {"format", "locale", "ignore_malformed", "print_format"},
    "date_nanos": _COMMON | {"format", "locale", "ignore_malformed"},
    "binary": {"type", "meta", "store", "doc_values", "copy_to"},
    "ip": _COMMON | {"ignore_malformed", "time_series_dimension"},
    "flattened": {"type", "meta", "depth_limit", "doc_values", "eager_global_ordinals",
                  "ignore_above", "index", "index_options", "null_value", "similarity",
                  "split_queries_on_whitespace", "time_series_dimensions"},
}
