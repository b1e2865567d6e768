-- seed.sql - deterministic sample data for the shop schema (schema.sql).
--
-- Sizes are psql variables with small defaults (a demo loads in ~2 s):
--   psql -v ON_ERROR_STOP=1 -d shop -f deploy/shop/seed.sql \
--        [-v stores=200] [-v customers=5000] [-v orders=20000] \
--        [-v products_per_store=10] [-v months=3] [-v seed=0.42] \
--        [-v end_date=2026-11-23]
-- end_date (default: today, UTC) is the day the order history ends; the
-- orders span the `months` before it. The same variables give the same rows
-- (setseed(), single-process plans, random values drawn only from
-- generate_series so join order cannot change the draw order).
--
-- The tables must be empty (run schema.sql first). Shape of the data:
--   20 countries; stores spread over them (more in big markets);
--   products_per_store products per store, prices 2..500 (log-uniform);
--   orders skewed towards big stores (the top 10% of stores get ~30% of the
--   orders) and towards recent days (volume grows over the period), with
--   1-4 items each; total_amount = sum(quantity * unit_price);
--   status depends on age: old orders are mostly delivered (some cancelled
--   or refunded), recent ones pending/paid/shipped.

\set ON_ERROR_STOP on
SET client_min_messages = warning;

\if :{?stores}
\else
\set stores 200
\endif
\if :{?customers}
\else
\set customers 5000
\endif
\if :{?orders}
\else
\set orders 20000
\endif
\if :{?products_per_store}
\else
\set products_per_store 10
\endif
\if :{?months}
\else
\set months 3
\endif
\if :{?seed}
\else
\set seed 0.42
\endif
\if :{?end_date}
\else
SELECT (now() AT TIME ZONE 'UTC')::date AS end_date \gset
\endif
SELECT (:'end_date'::date - make_interval(months => :months))::date AS start_date \gset

-- A parallel plan would draw random() in several processes: not repeatable.
SET max_parallel_workers_per_gather = 0;
SET TimeZone = 'UTC';
SELECT setseed(:seed) \g /dev/null

BEGIN;

INSERT INTO countries (id, code, name) VALUES
    (1, 'US', 'United States'), (2, 'DE', 'Germany'), (3, 'GB', 'United Kingdom'),
    (4, 'FR', 'France'), (5, 'IN', 'India'), (6, 'BR', 'Brazil'), (7, 'ES', 'Spain'),
    (8, 'IT', 'Italy'), (9, 'NL', 'Netherlands'), (10, 'PL', 'Poland'), (11, 'JP', 'Japan'),
    (12, 'CA', 'Canada'), (13, 'AU', 'Australia'), (14, 'MX', 'Mexico'), (15, 'SE', 'Sweden'),
    (16, 'BE', 'Belgium'), (17, 'AT', 'Austria'), (18, 'CH', 'Switzerland'),
    (19, 'PT', 'Portugal'), (20, 'ZA', 'South Africa');

-- Country weights: country k has weight ~ 1/k (the US is the biggest market).
-- A draw u in [0,1) is mapped to the country whose cumulative share covers it.
CREATE TEMP TABLE seed_country_cdf ON COMMIT DROP AS
SELECT id, sum(1.0 / id) OVER (ORDER BY id) / sum(1.0 / id) OVER () AS cdf
FROM countries;

CREATE TEMP TABLE seed_draws ON COMMIT DROP AS
SELECT g AS id, random() AS u1, random() AS u2
FROM generate_series(1, :stores) AS g;

INSERT INTO stores (id, country_id, name, created_at)
SELECT d.id,
       (SELECT c.id FROM seed_country_cdf c WHERE c.cdf >= d.u1 ORDER BY c.cdf LIMIT 1),
       (ARRAY['Corner', 'Urban', 'Green', 'Blue', 'Happy', 'Prime', 'Little', 'Grand',
              'Nordic', 'Sunny'])[1 + (d.id % 10)]
       || ' ' ||
       (ARRAY['Books', 'Shoes', 'Gadgets', 'Garden', 'Toys', 'Kitchen', 'Outdoor',
              'Pets', 'Music', 'Coffee', 'Tools'])[1 + (d.id * 7 % 11)]
       || ' #' || d.id,
       :'start_date'::timestamptz - make_interval(days => 1 + floor(d.u2 * 730)::int)
FROM seed_draws d;

DROP TABLE seed_draws;
CREATE TEMP TABLE seed_draws ON COMMIT DROP AS
SELECT g AS id, random() AS u1, random() AS u2, random() AS u3
FROM generate_series(1, :customers) AS g;

INSERT INTO customers (id, email, name, country_id, created_at)
SELECT d.id,
       'customer' || d.id || '@example.com',
       (ARRAY['Ana', 'Ben', 'Chloe', 'David', 'Emma', 'Felix', 'Grace', 'Hiro', 'Ines',
              'Jonas', 'Kofi', 'Lena', 'Mateo', 'Nora', 'Omar', 'Priya'])[1 + floor(d.u2 * 16)::int]
       || ' ' ||
       (ARRAY['Silva', 'Smith', 'Müller', 'Dubois', 'Rossi', 'Kowalski', 'Tanaka', 'Patel',
              'Jansen', 'Garcia', 'Nielsen', 'Costa'])[1 + floor(d.u3 * 12)::int],
       (SELECT c.id FROM seed_country_cdf c WHERE c.cdf >= d.u1 ORDER BY c.cdf LIMIT 1),
       :'start_date'::timestamptz - make_interval(days => floor(d.u2 * 365)::int)
FROM seed_draws d;

DROP TABLE seed_draws;
CREATE TEMP TABLE seed_draws ON COMMIT DROP AS
SELECT g AS id, random() AS u1
FROM generate_series(1, :stores * :products_per_store) AS g;

-- Products of store s have ids (s-1)*products_per_store + 1 .. s*products_per_store:
-- order items below pick distinct products of the order's store from that range.
INSERT INTO products (id, store_id, name, price)
SELECT d.id,
       1 + (d.id - 1) / :products_per_store,
       (ARRAY['Classic', 'Deluxe', 'Mini', 'Eco', 'Pro', 'Vintage', 'Smart', 'Travel'])[1 + (d.id % 8)]
       || ' ' ||
       (ARRAY['Mug', 'Lamp', 'Backpack', 'Notebook', 'Kettle', 'Sneaker', 'Speaker',
              'Plant pot', 'Puzzle', 'Blanket'])[1 + (d.id * 3 % 10)],
       round((2 * power(250, d.u1))::numeric, 2)
FROM seed_draws d;

DROP TABLE seed_draws;
-- u_store^2 skews orders towards low store ids (the "big" stores);
-- sqrt(u_time) makes recent days busier than old ones.
CREATE TEMP TABLE seed_draws ON COMMIT DROP AS
SELECT g AS draw, random() AS u_store, random() AS u_customer, random() AS u_time,
       random() AS u_hour, random() AS u_status, random() AS u_items, random() AS u_product,
       random() AS u_qty
FROM generate_series(1, :orders) AS g;

CREATE TEMP TABLE seed_orders ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY c.created_at, t.draw) AS id, t.*, c.created_at
FROM (
    SELECT d.*,
           1 + floor(d.u_store * d.u_store * :stores)::int AS store_id,
           1 + floor(d.u_customer * :customers)::bigint AS customer_id,
           -- a point in the period, recent days more likely; created_at below
           -- keeps its day and minutes and moves it to an hour in 08-24 UTC
           :'start_date'::timestamptz
               + (:'end_date'::date - :'start_date'::date) * sqrt(d.u_time) * interval '1 day' AS day_point,
           1 + floor(d.u_items * d.u_items * 4)::int AS n_items
    FROM seed_draws d
) t
CROSS JOIN LATERAL (
    SELECT date_trunc('day', t.day_point)
           + make_interval(hours => (8 + floor(t.u_hour * 16)::int) % 24)
           + make_interval(secs => extract(epoch FROM t.day_point)::bigint % 3600) AS created_at
) c;

-- Item i (0-based) of an order takes product (start + 3*i) mod P of its store:
-- distinct for up to P items because 3 is coprime with the default P=10.
CREATE TEMP TABLE seed_items ON COMMIT DROP AS
SELECT o.id AS order_id,
       (o.store_id - 1)::bigint * :products_per_store
           + 1 + (floor(o.u_product * :products_per_store)::int + 3 * i) % :products_per_store AS product_id,
       1 + (floor(o.u_qty * 1000)::int >> (2 * i)) % 3 AS quantity
FROM seed_orders o
CROSS JOIN LATERAL generate_series(0, least(o.n_items, :products_per_store) - 1) AS i;

INSERT INTO orders (id, store_id, customer_id, status, total_amount, currency, created_at, updated_at)
SELECT o.id, o.store_id, o.customer_id, s.status,
       coalesce(tot.amount, 0), shop_currency(co.code), o.created_at,
       least(o.created_at + s.age_step, :'end_date'::timestamptz)
FROM seed_orders o
JOIN stores st ON st.id = o.store_id
JOIN countries co ON co.id = st.country_id
LEFT JOIN (
    SELECT i.order_id, sum(i.quantity * p.price) AS amount
    FROM seed_items i JOIN products p ON p.id = i.product_id
    GROUP BY i.order_id
) tot ON tot.order_id = o.id
CROSS JOIN LATERAL (
    SELECT CASE
               WHEN :'end_date'::timestamptz - o.created_at > interval '14 days' THEN
                   CASE WHEN o.u_status < 0.85 THEN 'delivered'
                        WHEN o.u_status < 0.93 THEN 'cancelled'
                        ELSE 'refunded' END
               WHEN :'end_date'::timestamptz - o.created_at > interval '3 days' THEN
                   CASE WHEN o.u_status < 0.55 THEN 'delivered'
                        WHEN o.u_status < 0.90 THEN 'shipped'
                        WHEN o.u_status < 0.96 THEN 'cancelled'
                        ELSE 'refunded' END
               ELSE
                   CASE WHEN o.u_status < 0.35 THEN 'pending'
                        WHEN o.u_status < 0.70 THEN 'paid'
                        WHEN o.u_status < 0.95 THEN 'shipped'
                        ELSE 'cancelled' END
           END AS status,
           make_interval(hours => 1 + floor(o.u_status * 96)::int) AS age_step
) s
ORDER BY o.id;

INSERT INTO order_items (order_id, product_id, quantity, unit_price)
SELECT i.order_id, i.product_id, i.quantity, p.price
FROM seed_items i JOIN products p ON p.id = i.product_id
ORDER BY i.order_id, i.product_id;

-- Let the identity columns continue after the explicit ids.
SELECT setval(pg_get_serial_sequence('stores', 'id'), (SELECT max(id) FROM stores)) \g /dev/null
SELECT setval(pg_get_serial_sequence('customers', 'id'), (SELECT max(id) FROM customers)) \g /dev/null
SELECT setval(pg_get_serial_sequence('products', 'id'), (SELECT max(id) FROM products)) \g /dev/null
SELECT setval(pg_get_serial_sequence('orders', 'id'), (SELECT coalesce(max(id), 1) FROM orders)) \g /dev/null

COMMIT;

ANALYZE countries, stores, customers, products, orders, order_items;
