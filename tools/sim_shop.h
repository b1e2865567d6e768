/*
 * sim_shop.h - the shop's domain as the simulator draws it: countries and
 * their markets, currencies and their price levels, names, prices, order
 * items, discounts and the order status lifecycle.
 *
 * Shared by the history generator and the live traffic, so an order created
 * live looks like one from the history. Money is int64_t in cents of the
 * order's currency (numeric(12,2) in the schema), never a double; a
 * currency without minor units (JPY) uses whole multiples of 100 cents.
 * Times are int64_t microseconds since the Unix epoch (UTC).
 */
#ifndef PGFAN_SIM_SHOP_H
#define PGFAN_SIM_SHOP_H

#include "sim_rng.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHOP_N_COUNTRIES 20
#define SHOP_MAX_ITEMS 5
#define SHOP_CURRENCY_SIZE 4 /* "EUR" + NUL */
#define SHOP_MONEY_SIZE 24   /* "-92233720368547758.08" + NUL */
#define SHOP_TS_SIZE 40      /* "2026-11-23 14:05:09.123456+00" + NUL */
#define SHOP_NAME_SIZE 96

#define SHOP_US_PER_SEC INT64_C(1000000)
#define SHOP_US_PER_MIN (60 * SHOP_US_PER_SEC)
#define SHOP_US_PER_HOUR (3600 * SHOP_US_PER_SEC)
#define SHOP_US_PER_DAY (86400 * SHOP_US_PER_SEC)

/* The 20 countries of the sample shop, the same ids and codes as seed.sql. */
typedef struct ShopCountry {
    int id;
    const char *code;
    const char *name;
    double market_weight; /* share of stores and customers (1/id, the US first) */
} ShopCountry;

extern const ShopCountry shop_countries[SHOP_N_COUNTRIES];

/* How prices look in one currency (the code comes from the database's
 * shop_currency()). */
typedef struct ShopCurrency {
    char code[SHOP_CURRENCY_SIZE];
    double per_usd;    /* price level: a 10 USD item costs 10 * per_usd */
    int64_t minor;     /* smallest amount in cents: 1, or 100 without minor units */
} ShopCurrency;

/* Fills cur for code (unknown codes get the EUR price level). */
void shop_currency_init(ShopCurrency *cur, const char *code);

/* The status of an order (orders.status). */
typedef enum OrderStatus {
    ORDER_PENDING = 0,
    ORDER_PAID,
    ORDER_SHIPPED,
    ORDER_DELIVERED,
    ORDER_CANCELLED,
    ORDER_REFUNDED,
} OrderStatus;

#define ORDER_N_STATUSES 6

/* "pending", "paid", ... */
const char *shop_status_name(OrderStatus status);

/* One line of an order; product_index is the caller's product numbering. */
typedef struct ShopItem {
    size_t product_index;
    int quantity;
    int64_t unit_cents;
} ShopItem;

/* A store's products as the item picker sees them (borrowed arrays). */
typedef struct ShopShelf {
    size_t first;         /* index of the store's first product */
    size_t count;         /* > 0 */
    const int64_t *price_cents; /* indexed by product index */
} ShopShelf;

/*
 * Draws 1-5 lines (mostly 1-2) of distinct products from shelf into items,
 * quantities mostly 1. Returns the number of lines; *subtotal is the sum of
 * quantity * unit price.
 */
size_t shop_draw_items(Rng *r, const ShopShelf *shelf, ShopItem items[SHOP_MAX_ITEMS],
                       int64_t *subtotal);

/*
 * The discount of an order with this subtotal: none for most orders, a
 * percentage or a coupon for the rest; never more than the subtotal, in
 * multiples of the currency's minor unit.
 */
int64_t shop_draw_discount(Rng *r, const ShopCurrency *cur, int64_t subtotal);

/* A product's price: 2-300 USD worth (log-uniform), often ending in .99. */
int64_t shop_draw_price(Rng *r, const ShopCurrency *cur);

/*
 * The planned life of an order created at created_us, seen at now_us:
 * pending, paid after minutes (bank transfers: days), shipped after hours
 * to days, delivered days later, some cancelled (before shipping) or
 * refunded (before shipping or after delivery).
 */
typedef struct ShopLifecycle {
    OrderStatus status; /* the status at now_us */
    int64_t updated_us; /* when it took that status (created_us when pending) */
    int64_t shipped_us; /* when it shipped, or -1 if not by now_us */
} ShopLifecycle;

void shop_draw_lifecycle(Rng *r, int64_t created_us, int64_t now_us, ShopLifecycle *out);

/* Names (UTF-8, no tab, newline or backslash: safe in COPY text format). */
void shop_person_name(Rng *r, char out[SHOP_NAME_SIZE], char first_ascii[32], char last_ascii[32]);
void shop_store_name(Rng *r, int64_t store_id, char out[SHOP_NAME_SIZE]);
void shop_product_name(Rng *r, char out[SHOP_NAME_SIZE]);

/* "1234.50" (cents >= 0). Returns out. */
const char *shop_format_money(int64_t cents, char out[SHOP_MONEY_SIZE]);

/* Parses a numeric(12,2) text ("12.3", "7", "0.05") into cents; false on
 * anything else. */
bool shop_parse_money(const char *text, int64_t *cents);

/* "2026-11-23 14:05:09.123456+00". Returns out. */
const char *shop_format_ts(int64_t unix_us, char out[SHOP_TS_SIZE]);

#endif
