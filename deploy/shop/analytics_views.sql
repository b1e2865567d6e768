-- analytics_views.sql - the shop's KPIs as views over the aggregate tables
-- that pgfan keeps current (deploy/shop/aggregates.conf).
--
--   psql -v ON_ERROR_STOP=1 -d shop -f deploy/shop/analytics_views.sql
--
-- Run it once pgfan has created the tables (its log says "sink.aggregates:
-- ready"); it is idempotent (CREATE OR REPLACE). The views read a few
-- thousand aggregate rows instead of every order, so they answer in
-- milliseconds and are current to within pgfan's lag (seconds).
--
-- Money is never added across currencies: every amount is per currency,
-- and shares are shares of that currency's total. Days and months are UTC.
-- Each view's comment shows how to ask it the question it answers.
--
-- If an aggregate is rebuilt with other columns (rebuild = yes after a
-- change of its group_by or measures), pgfan refuses to drop its table
-- while these views use it: drop them (DROP VIEW ... CASCADE), restart
-- pgfan, and run this file again.

\set ON_ERROR_STOP on
SET client_min_messages = warning;

BEGIN;

-- GMV by country, with the country's share of its currency's total.
--   SELECT * FROM analytics.gmv_by_country ORDER BY currency, gmv DESC;
-- For a period, use analytics.gmv_by_country_between(from, to) below.
CREATE OR REPLACE VIEW analytics.gmv_by_country AS
SELECT c.code AS country,
       c.name AS country_name,
       g.currency,
       sum(g.orders)::bigint AS orders,
       sum(g.gmv) AS gmv,
       round(100 * sum(g.gmv) / nullif(sum(sum(g.gmv)) OVER (PARTITION BY g.currency), 0), 2)
           AS pct_of_currency_total
FROM analytics.gmv_daily g
JOIN public.stores s ON s.id = g.store_id
JOIN public.countries c ON c.id = s.country_id
GROUP BY c.code, c.name, g.currency;

-- The same for days from .. until (inclusive).
--   SELECT * FROM analytics.gmv_by_country_between(current_date - 6, current_date);
CREATE OR REPLACE FUNCTION analytics.gmv_by_country_between(from_day date, until_day date)
RETURNS TABLE (country char(2), country_name text, currency char(3), orders bigint,
               gmv numeric, pct_of_currency_total numeric)
LANGUAGE sql STABLE AS $$
    SELECT c.code, c.name, g.currency, sum(g.orders)::bigint, sum(g.gmv),
           round(100 * sum(g.gmv) / nullif(sum(sum(g.gmv)) OVER (PARTITION BY g.currency), 0), 2)
    FROM analytics.gmv_daily g
    JOIN public.stores s ON s.id = g.store_id
    JOIN public.countries c ON c.id = s.country_id
    WHERE g.day BETWEEN from_day AND until_day
    GROUP BY c.code, c.name, g.currency
$$;

-- Stores ranked by GMV within their currency.
--   Top 10:  SELECT * FROM analytics.store_gmv_rank WHERE gmv_rank <= 10 ORDER BY currency, gmv_rank;
--   For a period: SELECT * FROM analytics.top_stores(10, current_date - 29, current_date);
CREATE OR REPLACE VIEW analytics.store_gmv_rank AS
SELECT g.store_id,
       s.name AS store_name,
       c.code AS country,
       g.currency,
       sum(g.orders)::bigint AS orders,
       sum(g.gmv) AS gmv,
       rank() OVER (PARTITION BY g.currency ORDER BY sum(g.gmv) DESC) AS gmv_rank
FROM analytics.gmv_daily g
JOIN public.stores s ON s.id = g.store_id
JOIN public.countries c ON c.id = s.country_id
GROUP BY g.store_id, s.name, c.code, g.currency;

CREATE OR REPLACE FUNCTION analytics.top_stores(n int, from_day date DEFAULT '-infinity',
                                                until_day date DEFAULT 'infinity')
RETURNS TABLE (gmv_rank bigint, store_id int, store_name text, country char(2),
               currency char(3), orders bigint, gmv numeric)
LANGUAGE sql STABLE AS $$
    SELECT r.gmv_rank, r.store_id, r.store_name, r.country, r.currency, r.orders, r.gmv
    FROM (SELECT g.store_id, s.name AS store_name, c.code AS country, g.currency,
                 sum(g.orders)::bigint AS orders, sum(g.gmv) AS gmv,
                 rank() OVER (PARTITION BY g.currency ORDER BY sum(g.gmv) DESC) AS gmv_rank
          FROM analytics.gmv_daily g
          JOIN public.stores s ON s.id = g.store_id
          JOIN public.countries c ON c.id = s.country_id
          WHERE g.day BETWEEN from_day AND until_day
          GROUP BY g.store_id, s.name, c.code, g.currency) r
    WHERE r.gmv_rank <= n
    ORDER BY r.currency, r.gmv_rank, r.store_id
$$;

-- Merchant (store) sales per month and currency.
--   SELECT * FROM analytics.merchant_monthly_sales WHERE store_id = 7 ORDER BY month;
CREATE OR REPLACE VIEW analytics.merchant_monthly_sales AS
SELECT m.month,
       m.store_id,
       s.name AS store_name,
       m.currency,
       m.orders,
       m.gmv,
       round(m.gmv / nullif(m.orders, 0), 2) AS avg_order_value
FROM analytics.store_monthly m
JOIN public.stores s ON s.id = m.store_id;

-- Store cohorts: a store's cohort is the month of its first (not cancelled)
-- order; retention after k months is the share of the cohort's stores with
-- at least one order in month cohort + k (in any currency).
--   SELECT * FROM analytics.store_cohort_retention ORDER BY cohort, months_since;
CREATE OR REPLACE VIEW analytics.store_cohort_retention AS
WITH active AS (
    SELECT DISTINCT store_id, month FROM analytics.store_monthly
), cohorts AS (
    SELECT store_id, min(month) AS cohort FROM active GROUP BY store_id
), sizes AS (
    SELECT cohort, count(*) AS stores FROM cohorts GROUP BY cohort
)
SELECT c.cohort,
       z.stores AS cohort_stores,
       ((extract(year FROM a.month) - extract(year FROM c.cohort)) * 12
        + extract(month FROM a.month) - extract(month FROM c.cohort))::int AS months_since,
       count(*) AS active_stores,
       round(100.0 * count(*) / z.stores, 1) AS retention_pct
FROM cohorts c
JOIN active a ON a.store_id = c.store_id
JOIN sizes z ON z.cohort = c.cohort
GROUP BY c.cohort, z.stores, months_since;

-- The same as a table: one row per cohort, retention % in months 0..6.
--   SELECT * FROM analytics.store_cohort_table ORDER BY cohort;
CREATE OR REPLACE VIEW analytics.store_cohort_table AS
SELECT cohort,
       cohort_stores,
       max(retention_pct) FILTER (WHERE months_since = 0) AS m0,
       max(retention_pct) FILTER (WHERE months_since = 1) AS m1,
       max(retention_pct) FILTER (WHERE months_since = 2) AS m2,
       max(retention_pct) FILTER (WHERE months_since = 3) AS m3,
       max(retention_pct) FILTER (WHERE months_since = 4) AS m4,
       max(retention_pct) FILTER (WHERE months_since = 5) AS m5,
       max(retention_pct) FILTER (WHERE months_since = 6) AS m6
FROM analytics.store_cohort_retention
GROUP BY cohort, cohort_stores;

-- A customer's spend and order count per day and currency.
--   SELECT * FROM analytics.customer_daily_spend WHERE day = current_date ORDER BY spend DESC;
CREATE OR REPLACE VIEW analytics.customer_daily_spend AS
SELECT d.day,
       d.customer AS customer_id,
       cu.name AS customer_name,
       cu.email,
       d.currency,
       d.orders,
       d.spend
FROM analytics.customer_daily d
JOIN public.customers cu ON cu.id = d.customer;

-- Customers ranked by all-time spend within each currency.
--   Top 20: SELECT * FROM analytics.top_customers WHERE spend_rank <= 20 ORDER BY currency, spend_rank;
CREATE OR REPLACE VIEW analytics.top_customers AS
SELECT m.customer AS customer_id,
       cu.name AS customer_name,
       m.currency,
       sum(m.orders)::bigint AS orders,
       sum(m.spend) AS spend,
       rank() OVER (PARTITION BY m.currency ORDER BY sum(m.spend) DESC) AS spend_rank
FROM analytics.customer_monthly m
JOIN public.customers cu ON cu.id = m.customer
GROUP BY m.customer, cu.name, m.currency;

-- Repeat customers: customers with more than one (not cancelled) order, and
-- their share of all customers who ordered.
--   SELECT * FROM analytics.repeat_customers;
CREATE OR REPLACE VIEW analytics.repeat_customers AS
WITH per_customer AS (
    SELECT customer, sum(orders) AS orders FROM analytics.customer_monthly GROUP BY customer
)
SELECT count(*) AS customers,
       count(*) FILTER (WHERE orders > 1) AS repeat_customers,
       round(100.0 * count(*) FILTER (WHERE orders > 1) / nullif(count(*), 0), 2)
           AS repeat_customers_pct
FROM per_customer;

-- Repeat customers' share of GMV, per currency.
--   SELECT * FROM analytics.repeat_customer_gmv_share ORDER BY currency;
CREATE OR REPLACE VIEW analytics.repeat_customer_gmv_share AS
WITH per_customer AS (
    SELECT customer, sum(orders) AS orders FROM analytics.customer_monthly GROUP BY customer
)
SELECT m.currency,
       sum(m.spend) AS gmv,
       coalesce(sum(m.spend) FILTER (WHERE p.orders > 1), 0) AS repeat_gmv,
       round(100 * coalesce(sum(m.spend) FILTER (WHERE p.orders > 1), 0)
             / nullif(sum(m.spend), 0), 2) AS repeat_gmv_pct
FROM analytics.customer_monthly m
JOIN per_customer p ON p.customer = m.customer
GROUP BY m.currency;

-- The top 10 % of customers by monthly volume (spend), per month and
-- currency (the first of ten equal-sized groups; ties broken by customer id).
--   SELECT * FROM analytics.top_decile_customers_monthly
--   WHERE month = date_trunc('month', current_date) ORDER BY currency, spend DESC;
CREATE OR REPLACE VIEW analytics.top_decile_customers_monthly AS
SELECT month, currency, customer_id, customer_name, orders, spend, customers_in_month
FROM (SELECT m.month,
             m.currency,
             m.customer AS customer_id,
             cu.name AS customer_name,
             m.orders,
             m.spend,
             count(*) OVER w_all AS customers_in_month,
             ntile(10) OVER (PARTITION BY m.month, m.currency
                             ORDER BY m.spend DESC, m.customer) AS decile
      FROM analytics.customer_monthly m
      JOIN public.customers cu ON cu.id = m.customer
      WINDOW w_all AS (PARTITION BY m.month, m.currency)) t
WHERE decile = 1;

COMMIT;
