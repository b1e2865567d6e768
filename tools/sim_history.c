/*
 * sim_history.c - pgfan-shop-sim history: months of a shop's past, made in
 * memory and loaded with COPY in one transaction.
 *
 * Shape of the data:
 *   - stores open over time (30 % before the period, the rest during it) and
 *     their sizes follow a Zipf law (weight rank^-0.8: the top 10 % of 2000
 *     stores take about half the orders); big stores carry more products;
 *   - customers sign up over time (40 % before the period) in 20 countries
 *     weighted 1/id like seed.sql, and buy from stores of their country;
 *   - order volume grows over the period, with weekends, Black Friday and
 *     December peaks and a daily rhythm (UTC);
 *   - an order only goes to a store already open and a customer already
 *     signed up, and its status is where its lifecycle (sim_shop.h) stands
 *     at the end of the period.
 *
 * Determinism: every phase draws from its own stream derived from the seed,
 * and an order's lines, discount and lifecycle come from a stream derived
 * from (seed, order id), so the order_items pass regenerates the lines
 * instead of keeping them in memory (20 bytes per order are kept).
 */
#include "../common/clock.h"
#include "../common/mem.h"
#include "sim.h"
#include "sim_db.h"
#include "sim_shop.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Stream keys of the phases (any distinct values). */
enum { STREAM_STORES = 1, STREAM_CUSTOMERS, STREAM_PRODUCTS, STREAM_ORDERS };
#define STREAM_ORDER_BASE (UINT64_C(1) << 40) /* + order id */

#define ZIPF_EXPONENT 0.8

typedef struct History {
    const HistoryOptions *opt;
    int64_t start_us, end_us;
    ShopCurrency currency[SHOP_N_COUNTRIES]; /* by country index (id - 1) */

    /* stores: index i is id i + 1, in opening order */
    size_t n_stores;
    int64_t *store_created;
    uint8_t *store_country;
    double *store_cdf; /* cumulative size weights in id order */
    size_t *store_first_product;
    size_t *store_n_products;

    /* products: index i is id i + 1, a store's products are contiguous */
    size_t n_products;
    int64_t *price_cents;

    /* customers: index i is id i + 1, in sign-up order */
    size_t n_customers;
    int64_t *customer_created;
    uint8_t *customer_country;
    size_t *by_country[SHOP_N_COUNTRIES]; /* customer indices, ascending */
    size_t n_by_country[SHOP_N_COUNTRIES];

    /* orders: index i is id i + 1, in creation order */
    size_t n_orders;
    int64_t *order_created;
    uint32_t *order_store;
    uint32_t *order_customer;

    long long rows_loaded;
} History;

static void history_free(History *h)
{
    free(h->store_created);
    free(h->store_country);
    free(h->store_cdf);
    free(h->store_first_product);
    free(h->store_n_products);
    free(h->price_cents);
    free(h->customer_created);
    free(h->customer_country);
    for (size_t c = 0; c < SHOP_N_COUNTRIES; c++)
        free(h->by_country[c]);
    free(h->order_created);
    free(h->order_store);
    free(h->order_customer);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static size_t draw_country(Rng *r)
{
    static double cdf[SHOP_N_COUNTRIES];

    if (cdf[SHOP_N_COUNTRIES - 1] == 0.0) {
        double sum = 0;

        for (size_t c = 0; c < SHOP_N_COUNTRIES; c++)
            cdf[c] = (sum += shop_countries[c].market_weight);
    }
    return rng_pick_cdf(r, cdf, SHOP_N_COUNTRIES);
}

/*
 * n sorted times: a share `before` of them uniform in [early, start), the
 * rest spread over [start, late) with density growing linearly (twice as
 * many at the end as at the start).
 */
static int64_t *draw_sorted_times(Rng *r, size_t n, double before, int64_t early, int64_t start,
                                  int64_t late)
{
    int64_t *t = xmalloc(n * sizeof *t);
    size_t n_before = (size_t)ceil((double)n * before);

    if (n_before < 1)
        n_before = 1;
    for (size_t i = 0; i < n; i++) {
        if (i < n_before) {
            t[i] = rng_range(r, early, start - 1);
        } else {
            /* inverse CDF of density 1 + x on [0, 1) */
            double x = sqrt(1.0 + 3.0 * rng_double(r)) - 1.0;

            t[i] = start + (int64_t)(x * (double)(late - start));
        }
    }
    qsort(t, n, sizeof *t, cmp_i64);
    return t;
}

static void shuffle(Rng *r, size_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(r, i);
        size_t tmp = a[i - 1];

        a[i - 1] = a[j];
        a[j] = tmp;
    }
}

/* Stores, their sizes and how many products each carries. */
static void make_stores(History *h)
{
    Rng r;
    size_t n = h->n_stores;
    size_t *rank = xmalloc(n * sizeof *rank);
    int64_t last_open = h->end_us - 14 * SHOP_US_PER_DAY;
    double sum = 0;

    rng_derive(&r, h->opt->seed, STREAM_STORES);
    if (last_open <= h->start_us)
        last_open = h->end_us;
    h->store_created = draw_sorted_times(&r, n, 0.3, h->start_us - 3 * 365 * SHOP_US_PER_DAY,
                                         h->start_us, last_open);
    h->store_country = xmalloc(n);
    h->store_cdf = xmalloc(n * sizeof *h->store_cdf);
    h->store_first_product = xmalloc(n * sizeof *h->store_first_product);
    h->store_n_products = xmalloc(n * sizeof *h->store_n_products);
    for (size_t i = 0; i < n; i++)
        rank[i] = i + 1;
    shuffle(&r, rank, n);
    h->n_products = 0;
    for (size_t i = 0; i < n; i++) {
        double w = pow((double)rank[i], -ZIPF_EXPONENT);
        double jitter = 0.8 + 0.4 * rng_double(&r);

        h->store_country[i] = (uint8_t)draw_country(&r);
        h->store_cdf[i] = (sum += w);
        h->store_first_product[i] = h->n_products;
        h->store_n_products[i] = 4 + (size_t)lround(56.0 * sqrt(w) * jitter);
        h->n_products += h->store_n_products[i];
    }
    free(rank);
}

static void make_customers(History *h)
{
    Rng r;

    rng_derive(&r, h->opt->seed, STREAM_CUSTOMERS);
    h->customer_created =
        draw_sorted_times(&r, h->n_customers, 0.4, h->start_us - 2 * 365 * SHOP_US_PER_DAY,
                          h->start_us, h->end_us);
    h->customer_country = xmalloc(h->n_customers);
    for (size_t i = 0; i < h->n_customers; i++) {
        size_t c = draw_country(&r);

        h->customer_country[i] = (uint8_t)c;
        h->n_by_country[c]++;
    }
    for (size_t c = 0; c < SHOP_N_COUNTRIES; c++) {
        h->by_country[c] = xmalloc((h->n_by_country[c] + 1) * sizeof *h->by_country[c]);
        h->n_by_country[c] = 0;
    }
    for (size_t i = 0; i < h->n_customers; i++) {
        size_t c = h->customer_country[i];

        h->by_country[c][h->n_by_country[c]++] = i;
    }
}

/* Relative order volume of the hour starting at t (UTC). */
static double hour_weight(int64_t t, int64_t start, int64_t end)
{
    static const double by_hour[24] = {0.35, 0.25, 0.2, 0.2, 0.25, 0.35, 0.5, 0.7,
                                       0.9,  1.0,  1.1, 1.2, 1.3,  1.25, 1.2, 1.15,
                                       1.15, 1.2,  1.3, 1.45, 1.5, 1.35, 1.0, 0.6};
    time_t secs = (time_t)(t / SHOP_US_PER_SEC);
    struct tm tm;
    double w = 0.6 + 0.8 * (double)(t - start) / (double)(end - start); /* growth */

    gmtime_r(&secs, &tm);
    w *= by_hour[tm.tm_hour];
    if (tm.tm_wday == 0 || tm.tm_wday == 6)
        w *= 1.2;
    if (tm.tm_mon == 10 && tm.tm_mday >= 24) /* Black Friday week */
        w *= 2.2;
    else if (tm.tm_mon == 11 && tm.tm_mday <= 20) /* Christmas shopping */
        w *= 1.4;
    return w;
}

/*
 * Creation times of all orders, sorted: the total is split over the hours of
 * the period by weight (cumulative rounding keeps the exact total), and the
 * times inside an hour are sorted uniforms (normalized exponential spacings).
 */
static void make_order_times(History *h, Rng *r)
{
    int64_t span = h->end_us - h->start_us;
    size_t n_hours = (size_t)((span + SHOP_US_PER_HOUR - 1) / SHOP_US_PER_HOUR);
    double *cum = xmalloc(n_hours * sizeof *cum);
    double sum = 0, *gaps = NULL;
    size_t done = 0, gaps_cap = 0;

    for (size_t k = 0; k < n_hours; k++) {
        int64_t t0 = h->start_us + (int64_t)k * SHOP_US_PER_HOUR;
        int64_t t1 = t0 + SHOP_US_PER_HOUR < h->end_us ? t0 + SHOP_US_PER_HOUR : h->end_us;

        cum[k] = (sum += hour_weight(t0, h->start_us, h->end_us) * (double)(t1 - t0) /
                         (double)SHOP_US_PER_HOUR);
    }
    for (size_t k = 0; k < n_hours; k++) {
        size_t upto = (size_t)llround((double)h->n_orders * cum[k] / sum);
        size_t cnt = upto - done;
        int64_t t0 = h->start_us + (int64_t)k * SHOP_US_PER_HOUR;
        int64_t len = (t0 + SHOP_US_PER_HOUR < h->end_us ? SHOP_US_PER_HOUR : h->end_us - t0);
        double acc = 0, total = 0;

        if (cnt + 1 > gaps_cap) {
            gaps_cap = 2 * (cnt + 1);
            gaps = xrealloc(gaps, gaps_cap * sizeof *gaps);
        }
        for (size_t j = 0; j <= cnt; j++)
            total += (gaps[j] = rng_exp(r, 1.0));
        for (size_t j = 0; j < cnt; j++) {
            acc += gaps[j];
            h->order_created[done + j] = t0 + (int64_t)(acc / total * (double)len);
        }
        done = upto;
    }
    free(gaps);
    free(cum);
}

/*
 * Store and customer of each order: a store open at the order's time (by
 * size), and a customer of the store's country who had signed up by then
 * (older customers more likely), else any customer signed up by then.
 */
static void assign_orders(History *h, Rng *r)
{
    size_t open = 0, signed_up = 0;
    size_t n_signed[SHOP_N_COUNTRIES] = {0};

    for (size_t i = 0; i < h->n_orders; i++) {
        int64_t t = h->order_created[i];
        size_t s, c, n;

        while (open < h->n_stores && h->store_created[open] <= t)
            open++;
        while (signed_up < h->n_customers && h->customer_created[signed_up] <= t)
            signed_up++;
        /* the first store and customer predate the period */
        s = rng_pick_cdf(r, h->store_cdf, open);
        c = h->store_country[s];
        while (n_signed[c] < h->n_by_country[c] &&
               h->customer_created[h->by_country[c][n_signed[c]]] <= t)
            n_signed[c]++;
        n = n_signed[c];
        h->order_store[i] = (uint32_t)s;
        if (n > 0)
            h->order_customer[i] =
                (uint32_t)h->by_country[c][(size_t)((double)n * pow(rng_double(r), 1.6))];
        else
            h->order_customer[i] = (uint32_t)rng_below(r, signed_up);
    }
}

static void make_orders(History *h)
{
    Rng r;

    rng_derive(&r, h->opt->seed, STREAM_ORDERS);
    h->order_created = xmalloc(h->n_orders * sizeof *h->order_created);
    h->order_store = xmalloc(h->n_orders * sizeof *h->order_store);
    h->order_customer = xmalloc(h->n_orders * sizeof *h->order_customer);
    make_order_times(h, &r);
    assign_orders(h, &r);
}

/* ---- loading -------------------------------------------------------------- */

static void report(History *h, const char *table, long long rows, TimeUs t0)
{
    double secs = (double)(clock_mono_us() - t0) / 1e6;

    h->rows_loaded += rows;
    printf("history: %-11s %9lld rows in %6.2f s (%.0f rows/s)\n", table, rows, secs,
           secs > 0 ? (double)rows / secs : 0.0);
    fflush(stdout);
}

static bool load_countries(PGconn *conn, History *h, PfError *err)
{
    Buf sql = BUF_INIT;
    PGresult *res;
    bool ok;

    buf_append_str(&sql, "INSERT INTO countries (id, code, name) VALUES ");
    for (size_t c = 0; c < SHOP_N_COUNTRIES; c++)
        buf_printf(&sql, "%s(%d, '%s', '%s')", c ? ", " : "", shop_countries[c].id,
                   shop_countries[c].code, shop_countries[c].name);
    ok = simdb_exec(conn, "insert the countries", sql.data, err);
    buf_free(&sql);
    if (!ok)
        return false;
    res = simdb_query(conn, "read the countries' currencies",
                      "SELECT id, shop_currency(code) FROM countries ORDER BY id", 0, NULL, err);
    if (!res)
        return false;
    for (int i = 0; i < PQntuples(res) && i < SHOP_N_COUNTRIES; i++)
        shop_currency_init(&h->currency[i], PQgetvalue(res, i, 1));
    PQclear(res);
    h->rows_loaded += SHOP_N_COUNTRIES;
    return true;
}

static bool copy_stores(PGconn *conn, History *h, PfError *err)
{
    SimCopy cp;
    Rng r;
    char name[SHOP_NAME_SIZE], ts[SHOP_TS_SIZE];
    TimeUs t0 = clock_mono_us();

    rng_derive(&r, h->opt->seed, STREAM_STORES + 100);
    if (!simcopy_begin(&cp, conn, "stores", "id, country_id, name, created_at", err))
        return false;
    for (size_t i = 0; i < h->n_stores; i++) {
        shop_store_name(&r, (int64_t)i + 1, name);
        buf_printf(&cp.row, "%zu\t%d\t%s\t%s\n", i + 1, shop_countries[h->store_country[i]].id,
                   name, shop_format_ts(h->store_created[i], ts));
        if (!simcopy_row_end(&cp, err)) {
            simcopy_abort(&cp);
            return false;
        }
    }
    if (!simcopy_end(&cp, err))
        return false;
    report(h, "stores", cp.rows, t0);
    return true;
}

static bool copy_products(PGconn *conn, History *h, PfError *err)
{
    SimCopy cp;
    Rng r;
    char name[SHOP_NAME_SIZE], money[SHOP_MONEY_SIZE];
    TimeUs t0 = clock_mono_us();

    rng_derive(&r, h->opt->seed, STREAM_PRODUCTS);
    h->price_cents = xmalloc(h->n_products * sizeof *h->price_cents);
    if (!simcopy_begin(&cp, conn, "products", "id, store_id, name, price", err))
        return false;
    for (size_t s = 0; s < h->n_stores; s++) {
        const ShopCurrency *cur = &h->currency[h->store_country[s]];

        for (size_t k = 0; k < h->store_n_products[s]; k++) {
            size_t p = h->store_first_product[s] + k;

            h->price_cents[p] = shop_draw_price(&r, cur);
            shop_product_name(&r, name);
            buf_printf(&cp.row, "%zu\t%zu\t%s\t%s\n", p + 1, s + 1, name,
                       shop_format_money(h->price_cents[p], money));
            if (!simcopy_row_end(&cp, err)) {
                simcopy_abort(&cp);
                return false;
            }
        }
    }
    if (!simcopy_end(&cp, err))
        return false;
    report(h, "products", cp.rows, t0);
    return true;
}

static bool copy_customers(PGconn *conn, History *h, PfError *err)
{
    SimCopy cp;
    Rng r;
    char name[SHOP_NAME_SIZE], first[32], last[32], ts[SHOP_TS_SIZE];
    TimeUs t0 = clock_mono_us();

    rng_derive(&r, h->opt->seed, STREAM_CUSTOMERS + 100);
    if (!simcopy_begin(&cp, conn, "customers", "id, email, name, country_id, created_at", err))
        return false;
    for (size_t i = 0; i < h->n_customers; i++) {
        shop_person_name(&r, name, first, last);
        buf_printf(&cp.row, "%zu\t%s.%s.%zu@example.com\t%s\t%d\t%s\n", i + 1, first, last, i + 1,
                   name, shop_countries[h->customer_country[i]].id,
                   shop_format_ts(h->customer_created[i], ts));
        if (!simcopy_row_end(&cp, err)) {
            simcopy_abort(&cp);
            return false;
        }
    }
    if (!simcopy_end(&cp, err))
        return false;
    report(h, "customers", cp.rows, t0);
    return true;
}

/* The lines of order i: the same draws in both passes. */
static size_t order_lines(const History *h, size_t i, Rng *r, ShopItem items[SHOP_MAX_ITEMS],
                          int64_t *subtotal)
{
    size_t s = h->order_store[i];
    ShopShelf shelf = {h->store_first_product[s], h->store_n_products[s], h->price_cents};

    rng_derive(r, h->opt->seed, STREAM_ORDER_BASE + i + 1);
    return shop_draw_items(r, &shelf, items, subtotal);
}

static void order_row(const History *h, size_t i, Buf *row)
{
    const ShopCurrency *cur = &h->currency[h->store_country[h->order_store[i]]];
    ShopItem items[SHOP_MAX_ITEMS];
    ShopLifecycle life;
    Rng r;
    int64_t subtotal, discount;
    char total_s[SHOP_MONEY_SIZE], discount_s[SHOP_MONEY_SIZE];
    char created_s[SHOP_TS_SIZE], updated_s[SHOP_TS_SIZE], shipped_s[SHOP_TS_SIZE];

    order_lines(h, i, &r, items, &subtotal);
    discount = shop_draw_discount(&r, cur, subtotal);
    shop_draw_lifecycle(&r, h->order_created[i], h->end_us, &life);
    if (life.shipped_us >= 0)
        shop_format_ts(life.shipped_us, shipped_s);
    else
        strcpy(shipped_s, "\\N");
    buf_printf(row, "%zu\t%u\t%u\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i + 1, h->order_store[i] + 1,
               h->order_customer[i] + 1, shop_status_name(life.status),
               shop_format_money(subtotal - discount, total_s),
               shop_format_money(discount, discount_s), cur->code,
               shop_format_ts(h->order_created[i], created_s),
               shop_format_ts(life.updated_us, updated_s), shipped_s);
}

static bool copy_orders(PGconn *conn, History *h, PfError *err)
{
    SimCopy cp;
    TimeUs t0 = clock_mono_us();

    if (!simcopy_begin(&cp, conn, "orders",
                       "id, store_id, customer_id, status, total_amount, discount, currency, "
                       "created_at, updated_at, shipped_at",
                       err))
        return false;
    for (size_t i = 0; i < h->n_orders; i++) {
        order_row(h, i, &cp.row);
        if (!simcopy_row_end(&cp, err)) {
            simcopy_abort(&cp);
            return false;
        }
    }
    if (!simcopy_end(&cp, err))
        return false;
    report(h, "orders", cp.rows, t0);
    return true;
}

static bool copy_items(PGconn *conn, History *h, PfError *err)
{
    SimCopy cp;
    TimeUs t0 = clock_mono_us();
    char money[SHOP_MONEY_SIZE];

    if (!simcopy_begin(&cp, conn, "order_items", "order_id, product_id, quantity, unit_price",
                       err))
        return false;
    for (size_t i = 0; i < h->n_orders; i++) {
        ShopItem items[SHOP_MAX_ITEMS];
        Rng r;
        int64_t subtotal;
        size_t n = order_lines(h, i, &r, items, &subtotal);

        for (size_t k = 0; k < n; k++)
            buf_printf(&cp.row, "%zu\t%zu\t%d\t%s\n", i + 1, items[k].product_index + 1,
                       items[k].quantity, shop_format_money(items[k].unit_cents, money));
        /* one call per order: a row count per order is enough for the report */
        cp.rows += (long long)n - 1;
        if (!simcopy_row_end(&cp, err)) {
            simcopy_abort(&cp);
            return false;
        }
    }
    if (!simcopy_end(&cp, err))
        return false;
    report(h, "order_items", cp.rows, t0);
    return true;
}

/* The shop must be empty: explicit ids would collide with existing rows. */
static bool check_empty(PGconn *conn, PfError *err)
{
    PGresult *res = simdb_query(
        conn, "check that the shop is empty",
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM countries LIMIT 1) a)"
        " + (SELECT count(*) FROM (SELECT 1 FROM stores LIMIT 1) b)"
        " + (SELECT count(*) FROM (SELECT 1 FROM customers LIMIT 1) c)"
        " + (SELECT count(*) FROM (SELECT 1 FROM orders LIMIT 1) d)",
        0, NULL, err);
    bool empty;

    if (!res)
        return false;
    empty = strcmp(PQgetvalue(res, 0, 0), "0") == 0;
    PQclear(res);
    if (!empty) {
        err_set(err, ERR_FATAL, "could not load the history: the shop already has rows");
        err_hint(err, "history fills an empty shop; reset it with psql -v ON_ERROR_STOP=1 -d "
                      "<database> -f deploy/shop/schema.sql");
    }
    return empty;
}

/*
 * Foreign-key triggers check every row one by one and make the load four to
 * five times slower; with session_replication_role = replica (superusers
 * only) they do not fire, and the references are checked here instead, set
 * by set, before the commit. Returns false with err set when a reference
 * is broken (a bug of the generator: nothing is committed).
 */
static bool check_references(PGconn *conn, PfError *err)
{
    static const char sql[] =
        "SELECT 'stores.country_id', count(*) FROM stores s"
        "  WHERE NOT EXISTS (SELECT 1 FROM countries c WHERE c.id = s.country_id)"
        " UNION ALL SELECT 'customers.country_id', count(*) FROM customers u"
        "  WHERE NOT EXISTS (SELECT 1 FROM countries c WHERE c.id = u.country_id)"
        " UNION ALL SELECT 'products.store_id', count(*) FROM products p"
        "  WHERE NOT EXISTS (SELECT 1 FROM stores s WHERE s.id = p.store_id)"
        " UNION ALL SELECT 'orders.store_id', count(*) FROM orders o"
        "  WHERE NOT EXISTS (SELECT 1 FROM stores s WHERE s.id = o.store_id)"
        " UNION ALL SELECT 'orders.customer_id', count(*) FROM orders o"
        "  WHERE NOT EXISTS (SELECT 1 FROM customers u WHERE u.id = o.customer_id)"
        " UNION ALL SELECT 'order_items.order_id', count(*) FROM order_items i"
        "  WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id)"
        " UNION ALL SELECT 'order_items.product_id', count(*) FROM order_items i"
        "  WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.id = i.product_id)";
    PGresult *res = simdb_query(conn, "check the loaded references", sql, 0, NULL, err);
    bool ok = res != NULL;

    for (int i = 0; ok && i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, 1), "0") != 0) {
            err_set(err, ERR_FATAL, "could not load the history: %s rows of %s point nowhere "
                                    "(a bug of pgfan-shop-sim; nothing was committed)",
                    PQgetvalue(res, i, 1), PQgetvalue(res, i, 0));
            ok = false;
        }
    }
    PQclear(res);
    return ok;
}

/* Turns per-row foreign-key checks off for this session if allowed. */
static bool skip_fk_triggers(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SET session_replication_role = replica");
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;

    PQclear(res);
    printf("history: %s\n",
           ok ? "foreign keys checked set-based after the COPYs (session_replication_role = "
                "replica)"
              : "foreign keys checked row by row (session_replication_role needs a "
                "superuser; a superuser loads about 4x faster)");
    return ok;
}

static bool load(PGconn *conn, History *h, PfError *err)
{
    static const char finish_sql[] =
        "SELECT setval(pg_get_serial_sequence('stores', 'id'), (SELECT max(id) FROM stores));"
        "SELECT setval(pg_get_serial_sequence('customers', 'id'), (SELECT max(id) FROM customers));"
        "SELECT setval(pg_get_serial_sequence('products', 'id'), (SELECT max(id) FROM products));"
        "SELECT setval(pg_get_serial_sequence('orders', 'id'),"
        "              (SELECT coalesce(max(id), 1) FROM orders));";
    bool skipped = skip_fk_triggers(conn);

    return simdb_exec(conn, "start the load transaction", "BEGIN", err) &&
           load_countries(conn, h, err) && copy_stores(conn, h, err) &&
           copy_products(conn, h, err) && copy_customers(conn, h, err) &&
           copy_orders(conn, h, err) && copy_items(conn, h, err) &&
           (!skipped || check_references(conn, err)) &&
           simdb_exec(conn, "move the id sequences past the loaded rows", finish_sql, err) &&
           simdb_exec(conn, "commit the history", "COMMIT", err) &&
           (!skipped ||
            simdb_exec(conn, "reset session_replication_role", "RESET session_replication_role",
                       err));
}

/* The same instant months earlier (calendar months, UTC). */
static int64_t months_before(int64_t t_us, int months)
{
    time_t secs = (time_t)(t_us / SHOP_US_PER_SEC);
    struct tm tm;

    gmtime_r(&secs, &tm);
    tm.tm_mon -= months;
    return (int64_t)timegm(&tm) * SHOP_US_PER_SEC + t_us % SHOP_US_PER_SEC;
}

bool sim_history_run(const HistoryOptions *opt, PfError *err)
{
    History h;
    PGconn *conn;
    TimeUs t0 = clock_mono_us(), t_load;
    char from[SHOP_TS_SIZE], to[SHOP_TS_SIZE];
    bool ok;

    memset(&h, 0, sizeof h);
    h.opt = opt;
    h.end_us = opt->end_us;
    h.start_us = months_before(opt->end_us, opt->months);
    h.n_stores = (size_t)opt->stores;
    h.n_customers = (size_t)opt->customers;
    h.n_orders = (size_t)opt->orders;
    conn = simdb_connect(opt->dsn, err);
    if (!conn)
        return false;
    ok = simdb_check_schema(conn, err) && check_empty(conn, err);
    if (ok) {
        make_stores(&h);
        make_customers(&h);
        make_orders(&h);
        printf("history: %d months from %.16s to %.16s UTC, seed %llu (generated in %.2f s)\n",
               opt->months, shop_format_ts(h.start_us, from), shop_format_ts(h.end_us, to),
               (unsigned long long)opt->seed, (double)(clock_mono_us() - t0) / 1e6);
        t_load = clock_mono_us();
        ok = load(conn, &h, err);
        if (ok) {
            double secs = (double)(clock_mono_us() - t_load) / 1e6;

            printf("history: loaded %lld rows in %.2f s: %.0f rows/s\n", h.rows_loaded, secs,
                   (double)h.rows_loaded / secs);
            fflush(stdout);
            ok = simdb_exec(conn, "analyze the shop's tables",
                            "ANALYZE countries, stores, customers, products, orders, order_items",
                            err);
        }
    }
    PQfinish(conn);
    history_free(&h);
    return ok;
}
