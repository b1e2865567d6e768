/*
 * values.c - type classification and value reshaping for the text forms
 * PostgreSQL produces under pgfan's pinned session settings.
 *
 * Timestamps arrive as "YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]]"
 * (DateStyle ISO). Years may have more than four digits; BC dates carry a
 * " BC" suffix and "infinity"/"-infinity" are words: those are not reshaped.
 */
#include "values.h"

#include <string.h>

/* ------------------------------------------------------------------------
 * Type classes
 * ------------------------------------------------------------------------ */

typedef struct TypeName {
    const char *name;
    size_t len;
    TypeClass cls;
} TypeName;

/* clang-format off */
#define TN(name, cls) {name, sizeof name - 1, cls}
/* clang-format on */

/* Names exactly as format_type() prints them, typmods removed. */
static const TypeName type_names[] = {
    TN("bigint", TYPE_INT),
    TN("integer", TYPE_INT),
    TN("smallint", TYPE_INT),
    TN("oid", TYPE_INT),
    TN("real", TYPE_FLOAT),
    TN("double precision", TYPE_FLOAT),
    TN("numeric", TYPE_NUMERIC),
    TN("text", TYPE_TEXT),
    TN("character varying", TYPE_TEXT),
    TN("character", TYPE_TEXT),
    TN("name", TYPE_TEXT),
    TN("citext", TYPE_TEXT),
    TN("\"char\"", TYPE_TEXT),
    TN("timestamp with time zone", TYPE_TIMESTAMPTZ),
    TN("timestamp without time zone", TYPE_TIMESTAMP),
    TN("date", TYPE_DATE),
    TN("time without time zone", TYPE_TIME),
    TN("time with time zone", TYPE_TIME),
    TN("interval", TYPE_INTERVAL),
    TN("uuid", TYPE_UUID),
    TN("json", TYPE_JSON),
    TN("jsonb", TYPE_JSON),
    TN("bytea", TYPE_BYTEA),
    TN("boolean", TYPE_BOOL),
};

/* Longest name worth classifying; longer ones are user types. */
#define TYPE_NAME_MAX 64

/* The class of a name without typmods, from the table. */
static TypeClass lookup_base(const char *base, size_t n)
{
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) {
        if (type_names[i].len == n && type_names[i].name[0] == base[0] &&
            memcmp(base, type_names[i].name, n) == 0)
            return type_names[i].cls;
    }
    /* Intervals with fields: "interval year to month", "interval second(3)". */
    if (n > 9 && memcmp(base, "interval ", 9) == 0)
        return TYPE_INTERVAL;
    return TYPE_ENUM_OR_OTHER;
}

/*
 * Called for every column of every message (wal2json repeats the types):
 * a name without typmods is looked up in place.
 */
TypeClass value_type_class(Str type_name)
{
    char base[TYPE_NAME_MAX];
    size_t n = 0;
    int depth = 0;

    if (type_name.len == 0)
        return TYPE_UNKNOWN;
    if (type_name.len >= 2 && type_name.ptr[type_name.len - 2] == '[' &&
        type_name.ptr[type_name.len - 1] == ']')
        return TYPE_ARRAY;
    if (type_name.len >= sizeof base)
        return TYPE_ENUM_OR_OTHER;
    if (memchr(type_name.ptr, '(', type_name.len) == NULL &&
        memchr(type_name.ptr, ')', type_name.len) == NULL)
        return lookup_base(type_name.ptr, type_name.len);

    /* Drop typmods wherever they sit: "numeric(12,2)", "timestamp(3) with time zone". */
    for (size_t i = 0; i < type_name.len; i++) {
        char ch = type_name.ptr[i];

        if (ch == '(') {
            depth++;
        } else if (ch == ')') {
            if (--depth < 0)
                return TYPE_ENUM_OR_OTHER;
        } else if (depth == 0) {
            base[n++] = ch;
        }
    }
    if (depth != 0 || n == 0)
        return TYPE_ENUM_OR_OTHER;
    return lookup_base(base, n);
}

/* ------------------------------------------------------------------------
 * Timestamps
 * ------------------------------------------------------------------------ */

typedef struct TsParts {
    int64_t year;
    int month, day, hour, minute, second;
    int32_t frac_us; /* fraction scaled to microseconds */
    size_t time_end; /* where the offset (if any) starts in the text */
    bool has_offset;
    int offset_sign;   /* +1 or -1 */
    int offset_fields; /* 1: +HH, 2: +HH:MM, 3: +HH:MM:SS */
    int offset_h, offset_m, offset_s;
} TsParts;

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads exactly `count` digits at *pos. */
static bool read_digits(Str t, size_t *pos, size_t count, int *out)
{
    int v = 0;

    if (*pos + count > t.len)
        return false;
    for (size_t i = 0; i < count; i++) {
        char c = t.ptr[*pos + i];
        if (!is_digit(c))
            return false;
        v = v * 10 + (c - '0');
    }
    *pos += count;
    *out = v;
    return true;
}

static bool expect_char(Str t, size_t *pos, char c)
{
    if (*pos >= t.len || t.ptr[*pos] != c)
        return false;
    (*pos)++;
    return true;
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/*
 * Parses "Y{4,6}-MM-DD[ T]HH:MM:SS[.f{1,6}][(+|-)HH[:MM[:SS]]|Z]" covering
 * the whole text. Anything else (BC suffix, "infinity", a date alone) fails.
 */
static bool ts_parse(Str t, TsParts *p)
{
    size_t pos = 0;
    size_t year_digits = 0;

    memset(p, 0, sizeof *p);
    while (pos < t.len && is_digit(t.ptr[pos]) && year_digits < 7) {
        p->year = p->year * 10 + (t.ptr[pos] - '0');
        pos++;
        year_digits++;
    }
    if (year_digits < 4 || year_digits > 6 || p->year < 1)
        return false;
    if (!expect_char(t, &pos, '-') || !read_digits(t, &pos, 2, &p->month) ||
        !expect_char(t, &pos, '-') || !read_digits(t, &pos, 2, &p->day))
        return false;
    if (pos >= t.len || (t.ptr[pos] != ' ' && t.ptr[pos] != 'T'))
        return false;
    pos++;
    if (!read_digits(t, &pos, 2, &p->hour) || !expect_char(t, &pos, ':') ||
        !read_digits(t, &pos, 2, &p->minute) || !expect_char(t, &pos, ':') ||
        !read_digits(t, &pos, 2, &p->second))
        return false;
    if (p->month < 1 || p->month > 12 || p->day < 1 || p->day > days_in_month(p->year, p->month) ||
        p->hour > 23 || p->minute > 59 || p->second > 59)
        return false;
    if (pos < t.len && t.ptr[pos] == '.') {
        int32_t scale = 100000;
        size_t digits = 0;

        pos++;
        while (pos < t.len && is_digit(t.ptr[pos])) {
            if (++digits > 6)
                return false;
            p->frac_us += (int32_t)(t.ptr[pos] - '0') * scale;
            scale /= 10;
            pos++;
        }
        if (digits == 0)
            return false;
    }
    p->time_end = pos;
    if (pos == t.len)
        return true;

    p->has_offset = true;
    if (t.ptr[pos] == 'Z') {
        p->offset_sign = 1;
        p->offset_fields = 2;
        return pos + 1 == t.len;
    }
    if (t.ptr[pos] != '+' && t.ptr[pos] != '-')
        return false;
    p->offset_sign = t.ptr[pos] == '-' ? -1 : 1;
    pos++;
    if (!read_digits(t, &pos, 2, &p->offset_h) || p->offset_h > 23)
        return false;
    p->offset_fields = 1;
    if (pos < t.len) {
        if (!expect_char(t, &pos, ':') || !read_digits(t, &pos, 2, &p->offset_m) ||
            p->offset_m > 59)
            return false;
        p->offset_fields = 2;
    }
    if (pos < t.len) {
        if (!expect_char(t, &pos, ':') || !read_digits(t, &pos, 2, &p->offset_s) ||
            p->offset_s > 59)
            return false;
        p->offset_fields = 3;
    }
    return pos == t.len;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

bool value_parse_timestamptz(Str text, TimeUs *out)
{
    TsParts p;
    int64_t secs, us;

    if (!ts_parse(text, &p))
        return false;
    /* A text without an offset (timestamp without time zone) is taken as UTC. */
    secs =
        days_from_civil(p.year, p.month, p.day) * 86400 + p.hour * 3600 + p.minute * 60 + p.second;
    if (p.has_offset)
        secs -= p.offset_sign * (p.offset_h * 3600 + p.offset_m * 60 + p.offset_s);
    /* Six-digit years can leave the int64 microsecond range. */
    if (__builtin_mul_overflow(secs, USECS_PER_SEC, &us) ||
        __builtin_add_overflow(us, (int64_t)p.frac_us, &us))
        return false;
    *out = us;
    return true;
}

void value_append_iso_timestamp(Buf *out, Str text)
{
    TsParts p;
    size_t date_len;

    /* An offset with seconds (historic local mean time) has no ISO-8601 form. */
    if (!ts_parse(text, &p) || (p.has_offset && p.offset_fields == 3 && p.offset_s != 0)) {
        buf_append(out, text.ptr, text.len);
        return;
    }
    /* The date part ends at the separator, which follows "Y-MM-DD". */
    for (date_len = 0; text.ptr[date_len] != ' ' && text.ptr[date_len] != 'T'; date_len++)
        ;
    buf_reserve(out, p.time_end + 7);
    buf_append(out, text.ptr, date_len);
    buf_append_char(out, 'T');
    buf_append(out, text.ptr + date_len + 1, p.time_end - date_len - 1);
    if (!p.has_offset)
        return;
    if (p.offset_h == 0 && p.offset_m == 0 && p.offset_s == 0) {
        buf_append_char(out, 'Z');
        return;
    }
    buf_printf(out, "%c%02d:%02d", p.offset_sign < 0 ? '-' : '+', p.offset_h, p.offset_m);
}

/* ------------------------------------------------------------------------
 * bytea
 * ------------------------------------------------------------------------ */

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool value_append_base64_from_hex(Buf *out, Str hex)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t start = out->len;
    size_t nbytes = hex.len / 2;
    char *dst;

    if (hex.len % 2 != 0)
        return false;
    buf_reserve(out, (nbytes + 2) / 3 * 4);
    dst = out->data + out->len;
    for (size_t i = 0; i < nbytes; i += 3) {
        uint32_t group = 0;
        size_t take = nbytes - i < 3 ? nbytes - i : 3;

        for (size_t k = 0; k < 3; k++) {
            int hi = 0, lo = 0;

            if (k < take) {
                hi = hex_nibble(hex.ptr[2 * (i + k)]);
                lo = hex_nibble(hex.ptr[2 * (i + k) + 1]);
                if (hi < 0 || lo < 0) {
                    /* Leave out as it was. */
                    out->len = start;
                    out->data[start] = '\0';
                    return false;
                }
            }
            group = (group << 8) | (uint32_t)(hi << 4 | lo);
        }
        *dst++ = alphabet[(group >> 18) & 63];
        *dst++ = alphabet[(group >> 12) & 63];
        *dst++ = take > 1 ? alphabet[(group >> 6) & 63] : '=';
        *dst++ = take > 2 ? alphabet[group & 63] : '=';
        out->len += 4;
    }
    out->data[out->len] = '\0';
    return true;
}
