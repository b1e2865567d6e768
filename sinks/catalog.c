/*
 * catalog.c - lookups in the source tables' catalog (sink.h).
 */
#include "sink.h"

#include <stdlib.h>
#include <string.h>

static bool str_is(Str s, const char *z)
{
    size_t n = strlen(z);

    return s.len == n && memcmp(s.ptr, z, n) == 0;
}

const CatalogTable *catalog_find(const Catalog *catalog, Str schema, Str table)
{
    for (size_t i = 0; i < catalog->n_tables; i++) {
        const CatalogTable *t = &catalog->tables[i];

        if (str_is(schema, t->schema) && str_is(table, t->table))
            return t;
    }
    return NULL;
}

const CatalogColumn *catalog_column(const CatalogTable *t, const char *name)
{
    for (size_t i = 0; i < t->n_cols; i++) {
        if (strcmp(t->cols[i].name, name) == 0)
            return &t->cols[i];
    }
    return NULL;
}

void catalog_clear(Catalog *catalog)
{
    for (size_t i = 0; i < catalog->n_tables; i++) {
        CatalogTable *t = &catalog->tables[i];

        for (size_t j = 0; j < t->n_cols; j++) {
            free(t->cols[j].name);
            free(t->cols[j].type);
        }
        free(t->cols);
        free(t->schema);
        free(t->table);
    }
    free(catalog->tables);
    catalog->tables = NULL;
    catalog->n_tables = 0;
}
