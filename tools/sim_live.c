/*
 * sim_live.c - pgfan-shop-sim live: the shop's API at a target rate of row
 * changes per second.
 *
 * Each step is one request of the API, one transaction: create an order
 * with its lines (one statement: the order and its items commit together),
 * move an order along its lifecycle (pay or cancel a pending one; ship,
 * cancel or refund a paid one; deliver a shipped one; refund a delivered
 * one), or sign a customer up. Orders created here move on after a few
 * seconds, so their whole life shows up in the sinks during a demo; the
 * open orders of the history (loaded at start) move on when no live order
 * is due. Updates say which status they expect (WHERE status = ...), so
 * other writers can share the database.
 *
 * Pacing: the loop wakes on an absolute CLOCK_MONOTONIC schedule (every
 * 10 ms, clock_nanosleep TIMER_ABSTIME) and works until the number of
 * changes reaches rate * elapsed time, so the time the statements take
 * does not add up to drift. When the database cannot keep up, at most one
 * second of backlog is kept (no burst after a stall) and the per-second
 * line says so.
 */
#include "../common/mem.h"
#include "sim.h"
#include "sim_db.h"
#include "sim_shop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PER_SEC INT64_C(1000000000)
#define TICK_NS (10 * INT64_C(1000000))
#define MAX_DELIVERED_KEPT 10000 /* refund candidates kept in memory */

/* ---- catalog --------------------------------------------------------------- */

typedef struct LiveCountry {
    long id;
    ShopCurrency currency;
    int64_t *customers; /* ids of its customers */
    size_t n_customers, cap_customers;
} LiveCountry;

typedef struct LiveStore {
    long id;
    size_t country; /* index into countries */
    size_t first_product, n_products;
} LiveStore;

/* A FIFO of order ids, each with the monotonic time it may move on. */
typedef struct Queue {
    int64_t *id;
    int64_t *ready_ns;
    size_t head, len, cap;
} Queue;

/* What happened, per second and in total. */
typedef struct Counts {
    long long changes, txns, orders, items, signups;
    long long to_status[ORDER_N_STATUSES];
} Counts;

typedef struct Live {
    const LiveOptions *opt;
    PGconn *conn;
    Rng rng;

    LiveCountry *countries;
    size_t n_countries;
    LiveStore *stores; /* only stores with products */
    size_t n_stores;
    double *store_cdf; /* by orders so far: big stores stay big */
    int64_t *product_id;
    int64_t *price_cents;
    size_t n_products;

    /* orders waiting to move on from pending, paid, shipped, delivered:
     * created here (ready after a delay) and from the history (ready now) */
    Queue fresh[ORDER_N_STATUSES];
    Queue backlog[ORDER_N_STATUSES];

    Counts second, total;
    int64_t start_ns;
    long long skipped; /* changes given up when more than 1 s behind */
} Live;

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static void queue_push(Queue *q, int64_t id, int64_t ready_ns)
{
    if (q->len == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 256;
        int64_t *ids = xmalloc(cap * sizeof *ids), *ready = xmalloc(cap * sizeof *ready);

        for (size_t i = 0; i < q->len; i++) {
            ids[i] = q->id[(q->head + i) % q->cap];
            ready[i] = q->ready_ns[(q->head + i) % q->cap];
        }
        free(q->id);
        free(q->ready_ns);
        q->id = ids;
        q->ready_ns = ready;
        q->head = 0;
        q->cap = cap;
    }
    q->id[(q->head + q->len) % q->cap] = id;
    q->ready_ns[(q->head + q->len) % q->cap] = ready_ns;
    q->len++;
}

/* Pops the head if it is ready at now_ns. */
static bool queue_pop_ready(Queue *q, int64_t now_ns, int64_t *id)
{
    if (q->len == 0 || q->ready_ns[q->head] > now_ns)
        return false;
    *id = q->id[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return true;
}

static void queue_free(Queue *q)
{
    free(q->id);
    free(q->ready_ns);
}

static void live_free(Live *l)
{
    for (size_t c = 0; c < l->n_countries; c++)
        free(l->countries[c].customers);
    free(l->countries);
    free(l->stores);
    free(l->store_cdf);
    free(l->product_id);
    free(l->price_cents);
    for (int s = 0; s < ORDER_N_STATUSES; s++) {
        queue_free(&l->fresh[s]);
        queue_free(&l->backlog[s]);
    }
}

static LiveCountry *country_by_id(Live *l, long id)
{
    for (size_t c = 0; c < l->n_countries; c++) {
        if (l->countries[c].id == id)
            return &l->countries[c];
    }
    return NULL;
}

static void country_add_customer(LiveCountry *c, int64_t id)
{
    if (c->n_customers == c->cap_customers) {
        c->cap_customers = c->cap_customers ? 2 * c->cap_customers : 64;
        c->customers = xrealloc(c->customers, c->cap_customers * sizeof *c->customers);
    }
    c->customers[c->n_customers++] = id;
}

static bool load_countries(Live *l, PfError *err)
{
    PGresult *res = simdb_query(l->conn, "read the countries",
                                "SELECT id, shop_currency(code) FROM countries ORDER BY id", 0,
                                NULL, err);

    if (!res)
        return false;
    l->n_countries = (size_t)PQntuples(res);
    l->countries = xcalloc(l->n_countries + 1, sizeof *l->countries);
    for (size_t c = 0; c < l->n_countries; c++) {
        l->countries[c].id = atol(PQgetvalue(res, (int)c, 0));
        shop_currency_init(&l->countries[c].currency, PQgetvalue(res, (int)c, 1));
    }
    PQclear(res);
    return true;
}

static bool load_customers(Live *l, PfError *err)
{
    PGresult *res = simdb_query(l->conn, "read the customers",
                                "SELECT id, country_id FROM customers ORDER BY id", 0, NULL, err);
    size_t n = 0;

    if (!res)
        return false;
    for (int i = 0; i < PQntuples(res); i++) {
        LiveCountry *c = country_by_id(l, atol(PQgetvalue(res, i, 1)));

        if (c) {
            country_add_customer(c, atoll(PQgetvalue(res, i, 0)));
            n++;
        }
    }
    PQclear(res);
    if (n == 0) {
        err_set(err, ERR_FATAL, "could not start live traffic: the shop has no customers");
        err_hint(err, "load a history first: pgfan-shop-sim history --dsn DSN");
        return false;
    }
    return true;
}

/* Stores (weighted by their orders so far) and their products. */
static bool load_stores(Live *l, PfError *err)
{
    static const char sql[] =
        "SELECT s.id, s.country_id, coalesce(o.n, 0), p.id, p.price"
        " FROM stores s"
        " JOIN products p ON p.store_id = s.id"
        " LEFT JOIN (SELECT store_id, count(*) AS n FROM orders GROUP BY store_id) o"
        "   ON o.store_id = s.id"
        " ORDER BY s.id, p.id";
    PGresult *res = simdb_query(l->conn, "read the stores and products", sql, 0, NULL, err);
    int n = res ? PQntuples(res) : 0;
    double sum = 0;

    if (!res)
        return false;
    l->stores = xcalloc((size_t)n + 1, sizeof *l->stores);
    l->store_cdf = xcalloc((size_t)n + 1, sizeof *l->store_cdf);
    l->product_id = xcalloc((size_t)n + 1, sizeof *l->product_id);
    l->price_cents = xcalloc((size_t)n + 1, sizeof *l->price_cents);
    for (int i = 0; i < n; i++) {
        long store = atol(PQgetvalue(res, i, 0));
        LiveCountry *c = country_by_id(l, atol(PQgetvalue(res, i, 1)));
        LiveStore *s;

        if (!c || !shop_parse_money(PQgetvalue(res, i, 4), &l->price_cents[l->n_products]))
            continue; /* a row the simulator did not write: leave it alone */
        if (l->n_stores == 0 || l->stores[l->n_stores - 1].id != store) {
            s = &l->stores[l->n_stores++];
            s->id = store;
            s->country = (size_t)(c - l->countries);
            s->first_product = l->n_products;
            sum += 1.0 + atof(PQgetvalue(res, i, 2));
            l->store_cdf[l->n_stores - 1] = sum;
        }
        l->stores[l->n_stores - 1].n_products++;
        l->product_id[l->n_products++] = atoll(PQgetvalue(res, i, 3));
    }
    PQclear(res);
    if (l->n_stores == 0) {
        err_set(err, ERR_FATAL, "could not start live traffic: the shop has no stores with "
                                "products");
        err_hint(err, "load a history first: pgfan-shop-sim history --dsn DSN");
        return false;
    }
    return true;
}

static OrderStatus status_parse(const char *s)
{
    for (int i = 0; i < ORDER_N_STATUSES; i++) {
        if (strcmp(shop_status_name((OrderStatus)i), s) == 0)
            return (OrderStatus)i;
    }
    return ORDER_CANCELLED; /* not movable */
}

/* Open orders of the history, oldest first, and recent deliveries. */
static bool load_backlog(Live *l, PfError *err)
{
    static const char sql[] =
        "(SELECT id, status FROM orders WHERE status IN ('pending', 'paid', 'shipped')"
        "  ORDER BY updated_at, id)"
        " UNION ALL"
        " (SELECT id, status FROM orders WHERE status = 'delivered'"
        "  ORDER BY updated_at DESC, id DESC LIMIT 5000)";
    PGresult *res = simdb_query(l->conn, "read the open orders", sql, 0, NULL, err);

    if (!res)
        return false;
    for (int i = 0; i < PQntuples(res); i++)
        queue_push(&l->backlog[status_parse(PQgetvalue(res, i, 1))], atoll(PQgetvalue(res, i, 0)),
                   0);
    PQclear(res);
    return true;
}

static bool prepare(Live *l, PfError *err)
{
    return simdb_prepare(
               l->conn, "new_order",
               "WITH o AS (INSERT INTO orders (store_id, customer_id, status, total_amount,"
               " discount, currency) VALUES ($1, $2, 'pending', $3, $4, $5) RETURNING id)"
               " INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
               " SELECT o.id, u.p, u.q, u.pr"
               " FROM o, unnest($6::bigint[], $7::int[], $8::numeric[]) AS u(p, q, pr)"
               " RETURNING order_id",
               err) &&
           simdb_prepare(l->conn, "advance",
                         "UPDATE orders SET status = $2::text, updated_at = now(),"
                         " shipped_at = CASE WHEN $2::text = 'shipped' THEN now()"
                         " ELSE shipped_at END"
                         " WHERE id = $1 AND status = $3::text",
                         err) &&
           simdb_prepare(l->conn, "signup",
                         "INSERT INTO customers (id, email, name, country_id)"
                         " SELECT n, $1::text || '.' || n::text || '@example.com', $2, $3"
                         " FROM nextval(pg_get_serial_sequence('customers', 'id')) AS n"
                         " RETURNING id",
                         err);
}

/* ---- the API's requests ----------------------------------------------------- */

static void count(Live *l, long long changes)
{
    l->second.changes += changes;
    l->second.txns++;
}

static int64_t seconds_ns(Live *l, double lo, double hi)
{
    return (int64_t)((lo + (hi - lo) * rng_double(&l->rng)) * (double)NS_PER_SEC);
}

/* A customer of country c, or of any country when c has none yet (load_customers
 * made sure there is one). */
static int64_t draw_customer(Live *l, const LiveCountry *c)
{
    size_t k = (size_t)rng_below(&l->rng, l->n_countries);

    for (size_t i = 0; c->n_customers == 0 && i < l->n_countries; i++)
        c = &l->countries[(k + i) % l->n_countries];
    return c->customers[rng_below(&l->rng, c->n_customers)];
}

static bool create_order(Live *l, PfError *err)
{
    LiveStore *s = &l->stores[rng_pick_cdf(&l->rng, l->store_cdf, l->n_stores)];
    LiveCountry *c = &l->countries[s->country];
    ShopShelf shelf = {s->first_product, s->n_products, l->price_cents};
    ShopItem items[SHOP_MAX_ITEMS];
    int64_t subtotal, discount, customer;
    char store_s[24], customer_s[24], total_s[SHOP_MONEY_SIZE], discount_s[SHOP_MONEY_SIZE];
    char money[SHOP_MONEY_SIZE];
    Buf ids = BUF_INIT, qtys = BUF_INIT, prices = BUF_INIT;
    const char *params[8];
    size_t n = shop_draw_items(&l->rng, &shelf, items, &subtotal);
    PGresult *res;

    discount = shop_draw_discount(&l->rng, &c->currency, subtotal);
    customer = draw_customer(l, c);
    for (size_t i = 0; i < n; i++) {
        buf_printf(&ids, "%s%lld", i ? "," : "{", (long long)l->product_id[items[i].product_index]);
        buf_printf(&qtys, "%s%d", i ? "," : "{", items[i].quantity);
        buf_printf(&prices, "%s%s", i ? "," : "{", shop_format_money(items[i].unit_cents, money));
    }
    buf_append_char(&ids, '}');
    buf_append_char(&qtys, '}');
    buf_append_char(&prices, '}');
    snprintf(store_s, sizeof store_s, "%ld", s->id);
    snprintf(customer_s, sizeof customer_s, "%lld", (long long)customer);
    params[0] = store_s;
    params[1] = customer_s;
    params[2] = shop_format_money(subtotal - discount, total_s);
    params[3] = shop_format_money(discount, discount_s);
    params[4] = c->currency.code;
    params[5] = ids.data;
    params[6] = qtys.data;
    params[7] = prices.data;
    res = simdb_exec_prepared(l->conn, "create an order", "new_order", 8, params, err);
    buf_free(&ids);
    buf_free(&qtys);
    buf_free(&prices);
    if (!res)
        return false;
    if (PQntuples(res) > 0) {
        queue_push(&l->fresh[ORDER_PENDING], atoll(PQgetvalue(res, 0, 0)),
                   mono_ns() + seconds_ns(l, 1, 4));
        count(l, 1 + PQntuples(res));
        l->second.orders++;
        l->second.items += PQntuples(res);
    }
    PQclear(res);
    return true;
}

/* Where an order in status from goes next, and when it may move again. */
static OrderStatus next_status(Live *l, OrderStatus from, int64_t *delay_ns)
{
    double u = rng_double(&l->rng);

    switch (from) {
    case ORDER_PENDING:
        *delay_ns = seconds_ns(l, 2, 8);
        return u < 0.94 ? ORDER_PAID : ORDER_CANCELLED;
    case ORDER_PAID:
        *delay_ns = seconds_ns(l, 3, 12);
        return u < 0.96 ? ORDER_SHIPPED : u < 0.985 ? ORDER_CANCELLED : ORDER_REFUNDED;
    case ORDER_SHIPPED:
        *delay_ns = seconds_ns(l, 5, 20);
        return ORDER_DELIVERED;
    default:
        *delay_ns = 0;
        return ORDER_REFUNDED;
    }
}

/*
 * Moves one order on from status from: a due order created here, else one
 * from the history. *done is false when there was none.
 */
static bool advance(Live *l, OrderStatus from, bool *done, PfError *err)
{
    int64_t id, delay;
    int64_t now = mono_ns();
    OrderStatus to;
    char id_s[24];
    const char *params[3];
    PGresult *res;
    long long rows;

    *done = queue_pop_ready(&l->fresh[from], now, &id) ||
            queue_pop_ready(&l->backlog[from], now, &id);
    if (!*done)
        return true;
    to = next_status(l, from, &delay);
    snprintf(id_s, sizeof id_s, "%lld", (long long)id);
    params[0] = id_s;
    params[1] = shop_status_name(to);
    params[2] = shop_status_name(from);
    res = simdb_exec_prepared(l->conn, "update an order's status", "advance", 3, params, err);
    if (!res)
        return false;
    rows = atoll(PQcmdTuples(res));
    PQclear(res);
    count(l, rows);
    if (rows == 0)
        return true; /* someone else moved it: forget it */
    l->second.to_status[to]++;
    if (to == ORDER_PAID || to == ORDER_SHIPPED ||
        (to == ORDER_DELIVERED && l->fresh[to].len < MAX_DELIVERED_KEPT))
        queue_push(&l->fresh[to], id, now + delay);
    return true;
}

/* A country weighted by its customers so far: big markets grow fastest. */
static LiveCountry *draw_signup_country(Live *l)
{
    double total = 0, u;
    size_t c = 0;

    for (size_t i = 0; i < l->n_countries; i++)
        total += (double)l->countries[i].n_customers + 1.0;
    u = rng_double(&l->rng) * total;
    while (c + 1 < l->n_countries && (u -= (double)l->countries[c].n_customers + 1.0) >= 0)
        c++;
    return &l->countries[c];
}

static bool sign_up(Live *l, PfError *err)
{
    LiveCountry *c = draw_signup_country(l);
    char name[SHOP_NAME_SIZE], first[32], last[32], local[72], country_s[24];
    const char *params[3] = {local, name, country_s};
    PGresult *res;

    shop_person_name(&l->rng, name, first, last);
    snprintf(local, sizeof local, "%s.%s", first, last);
    snprintf(country_s, sizeof country_s, "%ld", c->id);
    res = simdb_exec_prepared(l->conn, "sign a customer up", "signup", 3, params, err);
    if (!res)
        return false;
    country_add_customer(c, atoll(PQgetvalue(res, 0, 0)));
    PQclear(res);
    count(l, 1);
    l->second.signups++;
    return true;
}

/* One request, drawn by weight; a lifecycle step with no order due becomes
 * a new order. */
static bool step(Live *l, PfError *err)
{
    /* create, pay/cancel, ship, deliver, refund a delivered order, sign up */
    static const double cdf[] = {1.0, 2.0, 3.0, 4.0, 4.03, 4.08};
    size_t pick = rng_pick_cdf(&l->rng, cdf, sizeof cdf / sizeof cdf[0]);
    bool done = false;

    switch (pick) {
    case 1:
        if (!advance(l, ORDER_PENDING, &done, err))
            return false;
        break;
    case 2:
        if (!advance(l, ORDER_PAID, &done, err))
            return false;
        break;
    case 3:
        if (!advance(l, ORDER_SHIPPED, &done, err))
            return false;
        break;
    case 4:
        if (!advance(l, ORDER_DELIVERED, &done, err))
            return false;
        break;
    case 5:
        return sign_up(l, err);
    default:
        break;
    }
    return done || create_order(l, err);
}

/* ---- the loop --------------------------------------------------------------- */

static void add_counts(Counts *total, const Counts *c)
{
    total->changes += c->changes;
    total->txns += c->txns;
    total->orders += c->orders;
    total->items += c->items;
    total->signups += c->signups;
    for (int s = 0; s < ORDER_N_STATUSES; s++)
        total->to_status[s] += c->to_status[s];
}

static void print_second(Live *l, long second, bool behind)
{
    const Counts *c = &l->second;

    printf("live: %4lds %6lld changes/s (target %ld)%s | orders +%lld (%lld items) paid +%lld "
           "shipped +%lld delivered +%lld cancelled +%lld refunded +%lld | signups +%lld\n",
           second, c->changes, l->opt->rate, behind ? " BEHIND" : "", c->orders, c->items,
           c->to_status[ORDER_PAID], c->to_status[ORDER_SHIPPED], c->to_status[ORDER_DELIVERED],
           c->to_status[ORDER_CANCELLED], c->to_status[ORDER_REFUNDED], c->signups);
    fflush(stdout);
    add_counts(&l->total, c);
    memset(&l->second, 0, sizeof l->second);
}

static void print_summary(Live *l, int64_t now_ns)
{
    double secs = (double)(now_ns - l->start_ns) / (double)NS_PER_SEC;
    const Counts *t = &l->total;

    add_counts(&l->total, &l->second);
    memset(&l->second, 0, sizeof l->second);
    printf("live: stopped after %.1f s: %lld row changes (%.1f/s, target %ld/s) in %lld "
           "transactions; orders %lld with %lld items, paid %lld, shipped %lld, delivered %lld, "
           "cancelled %lld, refunded %lld; signups %lld\n",
           secs, t->changes, secs > 0 ? (double)t->changes / secs : 0.0, l->opt->rate, t->txns,
           t->orders, t->items, t->to_status[ORDER_PAID], t->to_status[ORDER_SHIPPED],
           t->to_status[ORDER_DELIVERED], t->to_status[ORDER_CANCELLED],
           t->to_status[ORDER_REFUNDED], t->signups);
    fflush(stdout);
}

/* Sleeps until the absolute monotonic time deadline_ns (or a signal). */
static void sleep_until(int64_t deadline_ns)
{
    struct timespec ts = {(time_t)(deadline_ns / NS_PER_SEC), (long)(deadline_ns % NS_PER_SEC)};

    (void)clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static long long done_changes(const Live *l)
{
    return l->total.changes + l->second.changes;
}

/*
 * Works until the changes reach what is due by now (at most one second
 * behind: older debt is dropped) or the next tick, prints the seconds that
 * have passed, sleeps until the next tick.
 */
static bool run_loop(Live *l, const volatile sig_atomic_t *stop, PfError *err)
{
    int64_t end_ns = l->opt->seconds ? l->start_ns + l->opt->seconds * NS_PER_SEC : INT64_MAX;
    long second = 0;
    bool behind = false;

    for (;;) {
        int64_t now = mono_ns();
        bool last = now >= end_ns;
        int64_t elapsed = (last ? end_ns : now) - l->start_ns;
        /* the last round gets one more tick to finish what is due */
        int64_t tick_end = last ? now + TICK_NS : l->start_ns + (elapsed / TICK_NS + 1) * TICK_NS;
        /* rate <= 10^6 and elapsed in microseconds: no overflow for 290 years */
        long long due = l->opt->rate * (elapsed / 1000) / 1000000 - l->skipped;

        if (due - done_changes(l) > l->opt->rate) {
            l->skipped += due - done_changes(l) - l->opt->rate;
            due = done_changes(l) + l->opt->rate;
            behind = true;
        }
        while (!*stop && done_changes(l) < due && mono_ns() < tick_end) {
            if (!step(l, err))
                return false;
        }
        now = mono_ns();
        while (!*stop && now - l->start_ns >= (int64_t)(second + 1) * NS_PER_SEC &&
               l->start_ns + (int64_t)(second + 1) * NS_PER_SEC <= end_ns) {
            print_second(l, ++second, behind);
            behind = false;
        }
        if (*stop || last)
            return true;
        sleep_until(tick_end < end_ns ? tick_end : end_ns);
    }
}

bool sim_live_run(const LiveOptions *opt, const volatile sig_atomic_t *stop, PfError *err)
{
    Live l;
    bool ok;
    size_t backlog = 0;

    memset(&l, 0, sizeof l);
    l.opt = opt;
    rng_seed(&l.rng, opt->seed);
    l.conn = simdb_connect(opt->dsn, err);
    if (!l.conn)
        return false;
    ok = simdb_check_schema(l.conn, err) && load_countries(&l, err) && load_customers(&l, err) &&
         load_stores(&l, err) && load_backlog(&l, err) && prepare(&l, err);
    if (ok) {
        for (int s = 0; s < ORDER_N_STATUSES; s++)
            backlog += l.backlog[s].len;
        printf("live: %zu stores, %zu products, %zu open or recent orders; target %ld row "
               "changes/s%s\n",
               l.n_stores, l.n_products, backlog, opt->rate,
               opt->seconds ? "" : " until SIGINT/SIGTERM");
        fflush(stdout);
        l.start_ns = mono_ns();
        ok = run_loop(&l, stop, err);
        print_summary(&l, mono_ns());
    }
    PQfinish(l.conn);
    live_free(&l);
    return ok;
}
