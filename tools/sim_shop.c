/*
 * sim_shop.c - the shop's domain as the simulator draws it.
 *
 * The probabilities are plausible for a marketplace, not measured from one:
 * about 7 % of orders end cancelled and 5 % refunded, a quarter carry a
 * discount, and most have one or two lines.
 */
#include "sim_shop.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const ShopCountry shop_countries[SHOP_N_COUNTRIES] = {
    {1, "US", "United States", 1.0 / 1},   {2, "DE", "Germany", 1.0 / 2},
    {3, "GB", "United Kingdom", 1.0 / 3},  {4, "FR", "France", 1.0 / 4},
    {5, "IN", "India", 1.0 / 5},           {6, "BR", "Brazil", 1.0 / 6},
    {7, "ES", "Spain", 1.0 / 7},           {8, "IT", "Italy", 1.0 / 8},
    {9, "NL", "Netherlands", 1.0 / 9},     {10, "PL", "Poland", 1.0 / 10},
    {11, "JP", "Japan", 1.0 / 11},         {12, "CA", "Canada", 1.0 / 12},
    {13, "AU", "Australia", 1.0 / 13},     {14, "MX", "Mexico", 1.0 / 14},
    {15, "SE", "Sweden", 1.0 / 15},        {16, "BE", "Belgium", 1.0 / 16},
    {17, "AT", "Austria", 1.0 / 17},       {18, "CH", "Switzerland", 1.0 / 18},
    {19, "PT", "Portugal", 1.0 / 19},      {20, "ZA", "South Africa", 1.0 / 20},
};

static const struct {
    const char *code;
    double per_usd;
    int64_t minor;
} currency_levels[] = {
    {"USD", 1.0, 1},  {"EUR", 0.92, 1},  {"GBP", 0.79, 1},  {"INR", 83.0, 1},
    {"BRL", 5.0, 1},  {"JPY", 150.0, 100}, {"CAD", 1.35, 1}, {"AUD", 1.5, 1},
    {"MXN", 17.0, 1}, {"PLN", 4.0, 1},   {"SEK", 10.5, 1},  {"CHF", 0.88, 1},
    {"ZAR", 18.5, 1},
};

void shop_currency_init(ShopCurrency *cur, const char *code)
{
    snprintf(cur->code, sizeof cur->code, "%s", code);
    cur->per_usd = 0.92;
    cur->minor = 1;
    for (size_t i = 0; i < sizeof currency_levels / sizeof currency_levels[0]; i++) {
        if (strcmp(currency_levels[i].code, code) == 0) {
            cur->per_usd = currency_levels[i].per_usd;
            cur->minor = currency_levels[i].minor;
        }
    }
}

const char *shop_status_name(OrderStatus status)
{
    static const char *const names[ORDER_N_STATUSES] = {
        "pending", "paid", "shipped", "delivered", "cancelled", "refunded",
    };

    return names[status];
}

/* 45 % one line, 25 % two, then 15, 10, 5 %. */
static size_t draw_line_count(Rng *r)
{
    static const double cdf[SHOP_MAX_ITEMS] = {0.45, 0.70, 0.85, 0.95, 1.0};

    return rng_pick_cdf(r, cdf, SHOP_MAX_ITEMS) + 1;
}

static int draw_quantity(Rng *r)
{
    static const double cdf[5] = {0.72, 0.91, 0.97, 0.99, 1.0};

    return (int)rng_pick_cdf(r, cdf, 5) + 1;
}

static size_t gcd(size_t a, size_t b)
{
    while (b) {
        size_t t = a % b;

        a = b;
        b = t;
    }
    return a;
}

size_t shop_draw_items(Rng *r, const ShopShelf *shelf, ShopItem items[SHOP_MAX_ITEMS],
                       int64_t *subtotal)
{
    size_t n = draw_line_count(r);
    size_t start = (size_t)rng_below(r, shelf->count);
    /* Stepping by a number coprime with count visits distinct products. */
    size_t step = shelf->count > 2 ? 1 + (size_t)rng_below(r, shelf->count - 1) : 1;

    while (gcd(shelf->count, step) != 1)
        step--;
    if (n > shelf->count)
        n = shelf->count;
    *subtotal = 0;
    for (size_t i = 0; i < n; i++) {
        size_t p = shelf->first + (start + i * step) % shelf->count;

        items[i].product_index = p;
        items[i].quantity = draw_quantity(r);
        items[i].unit_cents = shelf->price_cents[p];
        *subtotal += items[i].quantity * items[i].unit_cents;
    }
    return n;
}

static int64_t round_to_minor(int64_t cents, int64_t minor)
{
    return (cents + minor / 2) / minor * minor;
}

int64_t shop_draw_discount(Rng *r, const ShopCurrency *cur, int64_t subtotal)
{
    static const int percents[] = {5, 10, 15, 20};
    static const int coupons_usd[] = {5, 10, 20};
    double u = rng_double(r);
    int64_t d;

    if (u < 0.75)
        return 0;
    if (u < 0.90) {
        int pct = percents[rng_below(r, 4)];

        /* round half up in cents, then to the currency's minor unit */
        d = round_to_minor((subtotal * pct + 50) / 100, cur->minor);
    } else {
        int usd = coupons_usd[rng_below(r, 3)];

        d = round_to_minor((int64_t)llround(usd * cur->per_usd * 100.0), cur->minor);
    }
    return d > subtotal ? subtotal : d;
}

int64_t shop_draw_price(Rng *r, const ShopCurrency *cur)
{
    double usd = 2.0 * pow(150.0, rng_double(r));
    int64_t cents = (int64_t)llround(usd * cur->per_usd * 100.0);

    if (cur->minor > 1)
        return round_to_minor(cents, cur->minor);
    if (rng_chance(r, 0.6) && cents >= 100)
        cents = cents / 100 * 100 - 1; /* 19.99 rather than 20.13 */
    return cents;
}

/* A uniform duration in [lo_us, hi_us]. */
static int64_t draw_between(Rng *r, int64_t lo_us, int64_t hi_us)
{
    return rng_range(r, lo_us, hi_us);
}

/* Records that the order took status at t, if t has happened by now. */
static bool happen(ShopLifecycle *out, OrderStatus status, int64_t t, int64_t now_us)
{
    if (t > now_us)
        return false;
    out->status = status;
    out->updated_us = t;
    return true;
}

void shop_draw_lifecycle(Rng *r, int64_t created_us, int64_t now_us, ShopLifecycle *out)
{
    double u = rng_double(r), v = rng_double(r);
    int64_t paid, shipped, delivered;

    out->status = ORDER_PENDING;
    out->updated_us = created_us;
    out->shipped_us = -1;
    if (u < 0.05) { /* abandoned before paying */
        happen(out, ORDER_CANCELLED,
               created_us + draw_between(r, 10 * SHOP_US_PER_MIN, 36 * SHOP_US_PER_HOUR), now_us);
        return;
    }
    if (rng_chance(r, 0.8)) /* card: minutes */
        paid = created_us + 30 * SHOP_US_PER_SEC +
               (int64_t)fmin(rng_exp(r, 10.0 * 60.0), 6.0 * 3600.0) * SHOP_US_PER_SEC;
    else /* bank transfer or invoice: hours to days */
        paid = created_us + draw_between(r, 2 * SHOP_US_PER_HOUR, 72 * SHOP_US_PER_HOUR);
    if (!happen(out, ORDER_PAID, paid, now_us))
        return;
    if (v < 0.02) { /* cancelled by the store before shipping */
        happen(out, ORDER_CANCELLED,
               paid + draw_between(r, 30 * SHOP_US_PER_MIN, 24 * SHOP_US_PER_HOUR), now_us);
        return;
    }
    if (v < 0.03) { /* out of stock: refunded before shipping */
        happen(out, ORDER_REFUNDED,
               paid + draw_between(r, SHOP_US_PER_HOUR, 48 * SHOP_US_PER_HOUR), now_us);
        return;
    }
    shipped = paid + draw_between(r, 4 * SHOP_US_PER_HOUR, 72 * SHOP_US_PER_HOUR);
    if (!happen(out, ORDER_SHIPPED, shipped, now_us))
        return;
    out->shipped_us = shipped;
    delivered = shipped + draw_between(r, 20 * SHOP_US_PER_HOUR, 7 * SHOP_US_PER_DAY);
    if (!happen(out, ORDER_DELIVERED, delivered, now_us))
        return;
    if (rng_chance(r, 0.04)) /* returned */
        happen(out, ORDER_REFUNDED,
               delivered + draw_between(r, SHOP_US_PER_DAY, 30 * SHOP_US_PER_DAY), now_us);
}

static const struct {
    const char *name;
    const char *ascii;
} first_names[] = {
    {"Ana", "ana"},     {"Ben", "ben"},       {"Chloé", "chloe"}, {"David", "david"},
    {"Emma", "emma"},   {"Felix", "felix"},   {"Grace", "grace"}, {"Hiro", "hiro"},
    {"Inês", "ines"},   {"Jonas", "jonas"},   {"Kofi", "kofi"},   {"Lena", "lena"},
    {"Mateo", "mateo"}, {"Nora", "nora"},     {"Omar", "omar"},   {"Priya", "priya"},
    {"Quinn", "quinn"}, {"Rosa", "rosa"},     {"Sven", "sven"},   {"Taro", "taro"},
    {"Uma", "uma"},     {"Víctor", "victor"}, {"Wen", "wen"},     {"Zoë", "zoe"},
}, last_names[] = {
    {"Silva", "silva"},     {"Smith", "smith"},     {"Müller", "muller"},
    {"Dubois", "dubois"},   {"Rossi", "rossi"},     {"Kowalski", "kowalski"},
    {"Tanaka", "tanaka"},   {"Patel", "patel"},     {"Jansen", "jansen"},
    {"García", "garcia"},   {"Nielsen", "nielsen"}, {"Costa", "costa"},
    {"Novak", "novak"},     {"Andersson", "andersson"}, {"Okafor", "okafor"},
    {"Martin", "martin"},
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

void shop_person_name(Rng *r, char out[SHOP_NAME_SIZE], char first_ascii[32], char last_ascii[32])
{
    size_t f = (size_t)rng_below(r, N_OF(first_names));
    size_t l = (size_t)rng_below(r, N_OF(last_names));

    snprintf(out, SHOP_NAME_SIZE, "%s %s", first_names[f].name, last_names[l].name);
    snprintf(first_ascii, 32, "%s", first_names[f].ascii);
    snprintf(last_ascii, 32, "%s", last_names[l].ascii);
}

void shop_store_name(Rng *r, int64_t store_id, char out[SHOP_NAME_SIZE])
{
    static const char *const adjectives[] = {"Corner", "Urban", "Green", "Blue", "Happy",
                                             "Prime", "Little", "Grand", "Nordic", "Sunny",
                                             "Golden", "Wild"};
    static const char *const kinds[] = {"Books", "Shoes", "Gadgets", "Garden", "Toys",
                                        "Kitchen", "Outdoor", "Pets", "Music", "Coffee",
                                        "Tools", "Fashion", "Beauty", "Sports"};

    snprintf(out, SHOP_NAME_SIZE, "%s %s #%lld", adjectives[rng_below(r, N_OF(adjectives))],
             kinds[rng_below(r, N_OF(kinds))], (long long)store_id);
}

void shop_product_name(Rng *r, char out[SHOP_NAME_SIZE])
{
    static const char *const styles[] = {"Classic", "Deluxe", "Mini", "Eco", "Pro",
                                         "Vintage", "Smart", "Travel", "Organic", "Max"};
    static const char *const things[] = {"Mug", "Lamp", "Backpack", "Notebook", "Kettle",
                                         "Sneaker", "Speaker", "Plant pot", "Puzzle",
                                         "Blanket", "Headphones", "Candle", "Jacket", "Bottle"};

    snprintf(out, SHOP_NAME_SIZE, "%s %s", styles[rng_below(r, N_OF(styles))],
             things[rng_below(r, N_OF(things))]);
}

const char *shop_format_money(int64_t cents, char out[SHOP_MONEY_SIZE])
{
    snprintf(out, SHOP_MONEY_SIZE, "%lld.%02lld", (long long)(cents / 100),
             (long long)(cents % 100));
    return out;
}

bool shop_parse_money(const char *text, int64_t *cents)
{
    int64_t units = 0, frac = 0;
    int frac_digits = 0;
    const char *p = text;

    if (!(*p >= '0' && *p <= '9'))
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (units > INT64_MAX / 1000)
            return false;
        units = units * 10 + (*p - '0');
    }
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++) {
            if (frac_digits == 2)
                return false; /* more than cents */
            frac = frac * 10 + (*p - '0');
            frac_digits++;
        }
    }
    if (*p != '\0')
        return false;
    if (frac_digits == 1)
        frac *= 10;
    *cents = units * 100 + frac;
    return true;
}

/* Writes v as exactly n decimal digits (zero-padded) at p. */
static void put_digits(char *p, long v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/*
 * Formatted by hand, without gmtime_r and snprintf: it runs several times
 * per order row. Days to civil date after Howard Hinnant's days_from_civil
 * inverse (proleptic Gregorian calendar, years 0..9999).
 */
const char *shop_format_ts(int64_t unix_us, char out[SHOP_TS_SIZE])
{
    int64_t secs = unix_us / SHOP_US_PER_SEC, frac = unix_us % SHOP_US_PER_SEC;
    int64_t days, sod, era, doe, yoe, doy, mp, y;
    long month, day;

    if (frac < 0) {
        frac += SHOP_US_PER_SEC;
        secs--;
    }
    days = secs / 86400;
    sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    days += 719468;
    era = (days >= 0 ? days : days - 146096) / 146097;
    doe = days - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    day = (long)(doy - (153 * mp + 2) / 5 + 1);
    month = (long)(mp < 10 ? mp + 3 : mp - 9);
    y = yoe + era * 400 + (month <= 2);
    if (y < 0)
        y = 0;
    if (y > 9999)
        y = 9999;
    memcpy(out, "0000-00-00 00:00:00.000000+00", sizeof "0000-00-00 00:00:00.000000+00");
    put_digits(out, (long)y, 4);
    put_digits(out + 5, month, 2);
    put_digits(out + 8, day, 2);
    put_digits(out + 11, (long)(sod / 3600), 2);
    put_digits(out + 14, (long)(sod / 60 % 60), 2);
    put_digits(out + 17, (long)(sod % 60), 2);
    put_digits(out + 20, (long)frac, 6);
    return out;
}
