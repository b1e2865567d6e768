/* lsn.c - parse and format "X/X" WAL positions. */
#include "lsn.h"

#include <stdio.h>

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses 1-8 hex digits from text[*pos..len) up to stop (or the end). */
static bool parse_half(const char *text, size_t len, size_t *pos, char stop, uint32_t *out)
{
    uint32_t value = 0;
    size_t digits = 0;

    while (*pos < len && text[*pos] != stop) {
        int v = hex_value(text[*pos]);
        if (v < 0 || digits == 8)
            return false;
        value = (value << 4) | (uint32_t)v;
        digits++;
        (*pos)++;
    }
    if (digits == 0)
        return false;
    *out = value;
    return true;
}

bool lsn_parse(const char *text, size_t len, Lsn *out)
{
    size_t pos = 0;
    uint32_t hi, lo;

    if (!parse_half(text, len, &pos, '/', &hi) || pos >= len || text[pos] != '/')
        return false;
    pos++;
    if (!parse_half(text, len, &pos, '\0', &lo) || pos != len)
        return false;
    *out = ((Lsn)hi << 32) | lo;
    return true;
}

const char *lsn_format(Lsn lsn, char buf[LSN_TEXT_SIZE])
{
    snprintf(buf, LSN_TEXT_SIZE, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xFFFFFFFFu));
    return buf;
}
