/* change.c - small helpers on the plugin-neutral Change values. */
#include "change.h"

#include <string.h>

const char *change_kind_name(ChangeKind kind)
{
    switch (kind) {
    case CHANGE_BEGIN:
        return "B";
    case CHANGE_COMMIT:
        return "C";
    case CHANGE_INSERT:
        return "I";
    case CHANGE_UPDATE:
        return "U";
    case CHANGE_DELETE:
        return "D";
    case CHANGE_TRUNCATE:
        return "T";
    case CHANGE_MESSAGE:
        return "M";
    }
    return "?";
}

const Column *change_find_column(const Column *cols, size_t n, const char *name, size_t name_len)
{
    for (size_t i = 0; i < n; i++) {
        if (cols[i].name.len == name_len &&
            (name_len == 0 || memcmp(cols[i].name.ptr, name, name_len) == 0))
            return &cols[i];
    }
    return NULL;
}

bool str_eq(Str a, const char *s)
{
    size_t n = strlen(s);

    return a.len == n && (n == 0 || memcmp(a.ptr, s, n) == 0);
}
