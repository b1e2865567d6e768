"""Date parsing of the Elasticsearch 8 `date` field type.

Formats are `||`-separated alternatives, tried in order (DateFormatter.forPattern).
Named formats implemented: strict_date_optional_time, date_optional_time,
strict_date_optional_time_nanos, strict_date, date, strict_date_time,
date_time, strict_date_hour_minute_second, basic_date, epoch_millis,
epoch_second; anything else is a java.time pattern built from the letters
y u M d H m s S X Z and quoted literals.

A parsed date is epoch milliseconds (float, so sub-millisecond input keeps
its order in sorts and ranges).
"""

import calendar
import datetime
import decimal
import functools
import re

DEFAULT_FORMAT = "strict_date_optional_time||epoch_millis"


class DateParseError(ValueError):
    pass


_FRACTION = r"(?:[.,](\d{1,9}))?"
_ZONE = r"(Z|[+-]\d{2}(?::?\d{2})?)?"


def _iso_regex(strict):
    y = r"(\d{4,9})" if strict else r"([+-]?\d{1,9})"
    two = r"(\d{2})" if strict else r"(\d{1,2})"
    return re.compile(
        "^" + y + "-" + two + "-" + two +
        r"(?:T" + two + r"(?::" + two + r"(?::" + two + _FRACTION + r")?)?" + _ZONE + r")?$")


_STRICT_OPTIONAL = _iso_regex(True)
_LENIENT_OPTIONAL = _iso_regex(False)
_STRICT_DATE = re.compile(r"^(\d{4,9})-(\d{2})-(\d{2})$")
_LENIENT_DATE = re.compile(r"^([+-]?\d{1,9})-(\d{1,2})-(\d{1,2})$")
_STRICT_DATE_TIME = re.compile(
    r"^(\d{4,9})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))(Z|[+-]\d{2}(?::?\d{2})?)$")
_STRICT_DHMS = re.compile(r"^(\d{4,9})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})$")
_BASIC_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_EPOCH = re.compile(r"^-?\d+(?:\.\d+)?$")


def _offset_minutes(zone):
    if not zone or zone == "Z":
        return 0
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    hours = int(digits[:2])
    minutes = int(digits[2:4]) if len(digits) > 2 else 0
    if hours > 18 or minutes > 59:
        raise DateParseError("offset out of range")
    return sign * (hours * 60 + minutes)


def _to_millis(year, month, day, hour=0, minute=0, second=0, fraction=None, zone=None):
    if not 1 <= month <= 12:
        raise DateParseError("month out of range")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= calendar.monthrange(2000 if leap else 2001, month)[1]:
        raise DateParseError("day out of range")
    if hour > 23 or minute > 59 or second > 59:
        raise DateParseError("time field out of range")
    days = _days_from_civil(year, month, day)
    ms = ((days * 24 + hour) * 60 + minute) * 60000 + second * 1000
    if fraction:
        ms += int(fraction.ljust(9, "0")) / 1e6
    return ms - _offset_minutes(zone) * 60000


def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (any year)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _iso(regex, text):
    m = regex.match(text)
    if not m:
        raise DateParseError("no match")
    g = m.groups()
    return _to_millis(int(g[0]), int(g[1]), int(g[2]),
                      int(g[3]) if g[3] else 0, int(g[4]) if g[4] else 0,
                      int(g[5]) if g[5] else 0, g[6], g[7])


def _epoch(text, scale):
    if isinstance(text, bool):
        raise DateParseError("boolean")
    s = str(text)
    if not _EPOCH.match(s):
        raise DateParseError("not a number")
    return float(decimal.Decimal(s) * scale)


def _named(name):
    table = {
        "strict_date_optional_time": lambda t: _iso(_STRICT_OPTIONAL, t),
        "strict_date_optional_time_nanos": lambda t: _iso(_STRICT_OPTIONAL, t),
        "date_optional_time": lambda t: _iso(_LENIENT_OPTIONAL, t),
        "strict_date": lambda t: _simple_date(_STRICT_DATE, t),
        "date": lambda t: _simple_date(_LENIENT_DATE, t),
        "strict_date_time": lambda t: _iso(_STRICT_DATE_TIME, t),
        "date_time": lambda t: _iso(_STRICT_DATE_TIME, t),
        "strict_date_hour_minute_second": lambda t: _dhms(t),
        "date_hour_minute_second": lambda t: _dhms(t),
        "basic_date": lambda t: _simple_date(_BASIC_DATE, t),
        "epoch_millis": lambda t: _epoch(t, 1),
        "epoch_second": lambda t: _epoch(t, 1000),
    }
    return table.get(name)


def _simple_date(regex, text):
    m = regex.match(text)
    if not m:
        raise DateParseError("no match")
    return _to_millis(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def _dhms(text):
    m = _STRICT_DHMS.match(text)
    if not m:
        raise DateParseError("no match")
    g = [int(x) for x in m.groups()]
    return _to_millis(*g)


_PATTERN_PARTS = {
    "yyyy": r"(?P<year>\d{4})", "uuuu": r"(?P<year>\d{4})", "yy": r"(?P<year2>\d{2})",
    "MM": r"(?P<month>\d{2})", "M": r"(?P<month>\d{1,2})",
    "dd": r"(?P<day>\d{2})", "d": r"(?P<day>\d{1,2})",
    "HH": r"(?P<hour>\d{2})", "H": r"(?P<hour>\d{1,2})",
    "mm": r"(?P<minute>\d{2})", "ss": r"(?P<second>\d{2})",
    "SSSSSSSSS": r"(?P<fraction>\d{9})", "SSSSSS": r"(?P<fraction>\d{6})",
    "SSS": r"(?P<fraction>\d{3})", "S": r"(?P<fraction>\d)",
    "XXX": r"(?P<zone>Z|[+-]\d{2}:\d{2})", "XX": r"(?P<zone>Z|[+-]\d{4})",
    "X": r"(?P<zone>Z|[+-]\d{2}(?:\d{2})?)", "Z": r"(?P<zone>[+-]\d{4})",
    "ZZ": r"(?P<zone>[+-]\d{4})", "ZZZ": r"(?P<zone>[+-]\d{4})",
}


@functools.lru_cache(maxsize=256)
def _java_pattern(pattern):
    """A java.time pattern (letters above, '...' literals, [optional] not
    supported) as a regex; None when it uses anything else."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "'":
            j = pattern.find("'", i + 1)
            if j < 0:
                return None
            out.append(re.escape(pattern[i + 1:j]) if j > i + 1 else "'")
            i = j + 1
            continue
        if c.isalpha():
            j = i
            while j < len(pattern) and pattern[j] == c:
                j += 1
            token = pattern[i:j]
            part = _PATTERN_PARTS.get(token)
            if part is None:
                return None
            out.append(part)
            i = j
            continue
        out.append(re.escape(c))
        i += 1
    try:
        return re.compile("^" + "".join(out) + "$")
    except re.error:
        return None


def _pattern_parser(pattern):
    regex = _java_pattern(pattern)
    if regex is None:
        return None

    def parse(text):
        m = regex.match(text)
        if not m:
            raise DateParseError("no match")
        g = m.groupdict()
        year = int(g["year"]) if g.get("year") else (2000 + int(g["year2"]) if g.get("year2")
                                                     else 1970)
        return _to_millis(year, int(g.get("month") or 1), int(g.get("day") or 1),
                          int(g.get("hour") or 0), int(g.get("minute") or 0),
                          int(g.get("second") or 0), g.get("fraction"), g.get("zone"))

    return parse


def format_problem(fmt):
    """None when every alternative of fmt is understood, else the message of
    Elasticsearch's mapping error for it."""
    for alt in fmt.split("||"):
        if _named(alt) is None and _pattern_parser(alt) is None:
            return "Invalid format: [%s]: Unknown pattern letter or format name" % fmt
    return None


@functools.lru_cache(maxsize=256)
def compile_format(fmt):
    parsers = [(_named(a) or _pattern_parser(a)) for a in fmt.split("||")]
    if any(p is None for p in parsers):
        raise DateParseError("unsupported format [%s]" % fmt)

    def parse(value):
        if isinstance(value, bool):
            raise DateParseError("boolean")
        # a number token is read as its text, which only the epoch formats take
        text = str(value)
        for p in parsers:
            try:
                return p(text)
            except DateParseError:
                continue
        raise DateParseError("Failed to parse with all enclosed parsers")

    return parse


_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _iso_ok(regex, text):
    """Whether text parses under an ISO regex, without computing the instant
    (the bulk hot path only needs validity)."""
    m = regex.match(text)
    if m is None:
        return False
    y, mo, d, h, mi, s, _, zone = m.groups()
    mo, d = int(mo), int(d)
    if not 1 <= mo <= 12 or not 1 <= d <= _DAYS_IN_MONTH[mo]:
        return False
    if mo == 2 and d == 29:
        y = int(y)
        if not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
            return False
    if h is not None and (int(h) > 23 or (mi is not None and int(mi) > 59) or
                          (s is not None and int(s) > 59)):
        return False
    if zone and zone != "Z":
        digits = zone[1:].replace(":", "")
        if int(digits[:2]) > 18 or (len(digits) > 2 and int(digits[2:4]) > 59):
            return False
    return True


# The ISO forms _iso_ok accepts, with every field's range in the pattern
# (February 29th excepted, the leap year rule is not in it): one C-level
# match answers the common case; anything else (February 29th, other
# digits, odd zones) goes to _iso_ok.
_TWO_59 = r"[0-5][0-9]"
ISO_SURE_PATTERN = (
    r"[0-9]{4,9}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)"
    r"(?:T(?:[01][0-9]|2[0-3])(?::" + _TWO_59 + r"(?::" + _TWO_59 + r"(?:[.,][0-9]{1,9})?)?)?"
    r"(?:Z|[+-](?:0[0-9]|1[0-8])(?::?" + _TWO_59 + r")?)?)?")
_ISO_SURE = re.compile(ISO_SURE_PATTERN)
_iso_sure = _ISO_SURE.fullmatch


def _iso_ok_fast(regex):
    def ok(text):
        return _iso_sure(text) is not None or _iso_ok(regex, text)
    return ok


_FAST_OK = {
    "strict_date_optional_time": _iso_ok_fast(_STRICT_OPTIONAL),
    "strict_date_optional_time_nanos": _iso_ok_fast(_STRICT_OPTIONAL),
    "date_optional_time": _iso_ok_fast(_LENIENT_OPTIONAL),
}


@functools.lru_cache(maxsize=256)
def compile_validator(fmt):
    """value -> bool: whether fmt parses value (same answers as compile_format)."""
    checks = []
    for alt in fmt.split("||"):
        fast = _FAST_OK.get(alt)
        if fast is None:
            parser = _named(alt) or _pattern_parser(alt)
            if parser is None:
                raise DateParseError("unsupported format [%s]" % fmt)
            fast = _ok_by_parsing(parser)
        checks.append(fast)

    def valid(value):
        if value is True or value is False:
            return False
        text = value if value.__class__ is str else str(value)
        for c in checks:
            if c(text):
                return True
        return False

    return valid


def _ok_by_parsing(parser):
    def ok(text):
        try:
            parser(text)
            return True
        except DateParseError:
            return False
    return ok


def parse_date(value, fmt=DEFAULT_FORMAT):
    """Epoch milliseconds of value under fmt, or DateParseError."""
    return compile_format(fmt)(value)


def format_millis(ms):
    """strict_date_optional_time text of epoch millis (for sort values)."""
    secs, rem = divmod(int(ms), 1000)
    dt = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=secs)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % rem
