-- workload.sql - procedures that change the shop's data like live traffic.
-- Load after schema.sql and seed.sql (they need stores, customers, products):
--   psql -v ON_ERROR_STOP=1 -d shop -f deploy/shop/workload.sql
--
-- CALL shop_workload(n_changes, seed)
--   Realistic traffic for demos and integration tests: new orders with
--   their items, status progress (pending -> paid -> shipped -> delivered,
--   some cancelled or refunded), quantity/amount changes on open orders and
--   deletes of abandoned or cancelled orders, in transactions of 1-10
--   operations (COMMIT inside the procedure). n_changes counts row changes
--   (an order with 3 items is 4); the last operation may overshoot by a few
--   rows.
--
-- CALL bench_workload(n, seed, big_txn_rows)
--   The benchmark mix on orders only: exactly round(0.70 n) INSERTs,
--   round(0.25 n) UPDATEs (status, total_amount, updated_at) and the rest
--   (5%) DELETEs, shuffled into transactions of 1-10 rows (P(k) ~ 1/k, mean
--   3.4), plus three big transactions of big_txn_rows rows each at 25/50/75%
--   of the run (INSERT ... SELECT, UPDATE of the oldest orders, INSERT ...
--   SELECT), as in reference/baseline.md section 4. big_txn_rows defaults to
--   n/10; 0 disables them. Updates hit the newest 10% of ids 80% of the
--   time; deletes only hit orders the run created (no cascaded item
--   deletes). Ends with a NOTICE giving the counts.
--
-- Both are deterministic for a given seed (setseed(), range -1..1) and a
-- given starting state, when nothing else writes to the tables meanwhile.
-- Neither may be called inside an explicit transaction block (they COMMIT).

\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE OR REPLACE PROCEDURE shop_workload(n_changes int, seed float8 DEFAULT 0.42)
LANGUAGE plpgsql AS $proc$
DECLARE
    -- P(transaction of k operations) ~ 1/k, k = 1..10
    txn_cdf float8[];
    v_done int := 0;
    v_txn_ops int;
    v_r float8;
    v_lo bigint;
    v_hi bigint;
    v_window bigint;
    v_x bigint;
    v_store_ids int[];
    v_store_currencies char(3)[];
    v_customer_lo bigint;
    v_customer_hi bigint;
    v_idx int;
    v_store int;
    v_currency char(3);
    v_order bigint;
    v_status text;
    v_new_status text;
    v_product_ids bigint[];
    v_prices numeric[];
    v_qtys int[];
    v_pick bigint[];
    v_pick_prices numeric[];
    v_n_items int;
    v_start int;
    v_total numeric;
    v_product bigint;
    v_qty int;
    v_price numeric;
    v_rows int;
BEGIN
    IF n_changes IS NULL OR n_changes < 0 THEN
        RAISE EXCEPTION 'could not run shop_workload: n_changes must be >= 0, got %', n_changes;
    END IF;
    IF seed IS NULL OR seed < -1 OR seed > 1 THEN
        RAISE EXCEPTION 'could not run shop_workload: seed must be between -1 and 1, got %', seed;
    END IF;
    PERFORM setseed(seed);

    SELECT array_agg(s.id ORDER BY s.id), array_agg(shop_currency(c.code) ORDER BY s.id)
    INTO v_store_ids, v_store_currencies
    FROM stores s JOIN countries c ON c.id = s.country_id;
    SELECT min(id), max(id) INTO v_customer_lo, v_customer_hi FROM customers;
    IF v_store_ids IS NULL OR v_customer_lo IS NULL THEN
        RAISE EXCEPTION 'could not run shop_workload: no stores or customers'
            USING HINT = 'Load deploy/shop/seed.sql first.';
    END IF;
    SELECT coalesce(min(id), 1), coalesce(max(id), 1) INTO v_lo, v_hi FROM orders;

    SELECT array_agg(s ORDER BY k) INTO txn_cdf
    FROM (SELECT k, sum(1.0 / k) OVER (ORDER BY k) / sum(1.0 / k) OVER () AS s
          FROM generate_series(1, 10) AS k) w;

    WHILE v_done < n_changes LOOP
        v_r := random();
        v_txn_ops := 1;
        WHILE txn_cdf[v_txn_ops] < v_r LOOP
            v_txn_ops := v_txn_ops + 1;
        END LOOP;

        FOR op IN 1 .. v_txn_ops LOOP
            EXIT WHEN v_done >= n_changes;
            v_r := random();
            -- Most updates hit recent orders: only they are still open.
            v_window := greatest((v_hi - v_lo) / 10, 1);
            v_x := v_hi - floor(random() * v_window)::bigint;
            v_order := NULL;

            IF v_r < 0.45 THEN
                -- New order: 1-4 consecutive products of a store (big stores
                -- are more likely), all starting as pending.
                v_idx := 1 + floor(random() * random() * array_length(v_store_ids, 1))::int;
                v_store := v_store_ids[v_idx];
                v_currency := v_store_currencies[v_idx];
                SELECT array_agg(id ORDER BY id), array_agg(price ORDER BY id)
                INTO v_product_ids, v_prices
                FROM products WHERE store_id = v_store;
                IF v_product_ids IS NULL THEN
                    CONTINUE;
                END IF;
                v_n_items := least(1 + floor(random() * random() * 4)::int, array_length(v_product_ids, 1));
                v_start := floor(random() * array_length(v_product_ids, 1))::int;
                v_pick := '{}';
                v_pick_prices := '{}';
                v_qtys := '{}';
                v_total := 0;
                FOR i IN 0 .. v_n_items - 1 LOOP
                    v_idx := 1 + (v_start + i) % array_length(v_product_ids, 1);
                    v_qty := 1 + floor(random() * random() * 3)::int;
                    v_pick := v_pick || v_product_ids[v_idx];
                    v_pick_prices := v_pick_prices || v_prices[v_idx];
                    v_qtys := v_qtys || v_qty;
                    v_total := v_total + v_qty * v_prices[v_idx];
                END LOOP;
                INSERT INTO orders (store_id, customer_id, status, total_amount, currency, created_at, updated_at)
                VALUES (v_store,
                        v_customer_lo + floor(random() * (v_customer_hi - v_customer_lo + 1))::bigint,
                        'pending', v_total, v_currency,
                        now(), now())
                RETURNING id INTO v_order;
                INSERT INTO order_items (order_id, product_id, quantity, unit_price)
                SELECT v_order, p, q, pr FROM unnest(v_pick, v_qtys, v_pick_prices) AS u(p, q, pr);
                v_hi := greatest(v_hi, v_order);
                v_done := v_done + 1 + v_n_items;

            ELSIF v_r < 0.85 THEN
                -- Status progress of an open order.
                SELECT id, status INTO v_order, v_status
                FROM orders WHERE id >= v_x AND status IN ('pending', 'paid', 'shipped')
                ORDER BY id LIMIT 1;
                IF v_order IS NULL THEN
                    CONTINUE;
                END IF;
                v_r := random();
                v_new_status := CASE v_status
                    WHEN 'pending' THEN CASE WHEN v_r < 0.92 THEN 'paid' ELSE 'cancelled' END
                    WHEN 'paid' THEN CASE WHEN v_r < 0.95 THEN 'shipped'
                                          WHEN v_r < 0.98 THEN 'refunded' ELSE 'cancelled' END
                    ELSE CASE WHEN v_r < 0.97 THEN 'delivered' ELSE 'refunded' END
                END;
                UPDATE orders SET status = v_new_status, updated_at = now() WHERE id = v_order;
                v_done := v_done + 1;

            ELSIF v_r < 0.87 THEN
                -- A delivered order (any age) gets refunded.
                v_x := v_lo + floor(random() * (v_hi - v_lo + 1))::bigint;
                UPDATE orders SET status = 'refunded', updated_at = now()
                WHERE id = (SELECT id FROM orders WHERE id >= v_x AND status = 'delivered'
                            ORDER BY id LIMIT 1);
                GET DIAGNOSTICS v_rows = ROW_COUNT;
                v_done := v_done + v_rows;

            ELSIF v_r < 0.95 THEN
                -- The customer changes a quantity before paying: the item and
                -- the order total change in the same transaction.
                SELECT id INTO v_order
                FROM orders WHERE id >= v_x AND status = 'pending' ORDER BY id LIMIT 1;
                IF v_order IS NULL THEN
                    CONTINUE;
                END IF;
                SELECT product_id, quantity, unit_price INTO v_product, v_qty, v_price
                FROM order_items WHERE order_id = v_order ORDER BY product_id LIMIT 1;
                IF v_product IS NULL THEN
                    CONTINUE;
                END IF;
                UPDATE order_items SET quantity = v_qty + 1
                WHERE order_id = v_order AND product_id = v_product;
                UPDATE orders SET total_amount = total_amount + v_price, updated_at = now()
                WHERE id = v_order;
                v_done := v_done + 2;

            ELSE
                -- An abandoned (pending) or cancelled order is removed with its items.
                SELECT id INTO v_order
                FROM orders WHERE id >= v_x AND status IN ('pending', 'cancelled')
                ORDER BY id LIMIT 1;
                IF v_order IS NULL THEN
                    CONTINUE;
                END IF;
                DELETE FROM order_items WHERE order_id = v_order;
                GET DIAGNOSTICS v_rows = ROW_COUNT;
                DELETE FROM orders WHERE id = v_order;
                v_done := v_done + 1 + v_rows;
            END IF;
        END LOOP;
        COMMIT;
    END LOOP;
END
$proc$;

CREATE OR REPLACE PROCEDURE bench_workload(n int DEFAULT 1000000, seed float8 DEFAULT 0.42,
                                           big_txn_rows int DEFAULT NULL)
LANGUAGE plpgsql AS $proc$
DECLARE
    txn_cdf float8[];
    v_big int := coalesce(big_txn_rows, n / 10);
    v_ins_total int := round(n * 0.70)::int;
    v_upd_total int := round(n * 0.25)::int;
    v_del_total int;
    -- operations left for the small transactions
    v_ins_left int;
    v_upd_left int;
    v_del_left int;
    v_big_done int := 0;       -- big transactions done so far (0..3)
    v_done bigint := 0;        -- row changes so far, all kinds
    v_ins int := 0;
    v_upd int := 0;
    v_del int := 0;
    v_txns int := 0;
    v_txn_ops int;
    v_r float8;
    v_lo bigint;
    v_hi bigint;
    v_first_new bigint;        -- orders with id >= this were created by this run
    v_x bigint;
    v_rows int;
    v_kind int;
    v_store_ids int[];
    v_store_currencies char(3)[];
    v_n_stores int;
    v_customer_lo bigint;
    v_customer_hi bigint;
    v_idx int;
    statuses constant text[] := ARRAY['pending', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded'];
BEGIN
    IF n IS NULL OR n < 0 THEN
        RAISE EXCEPTION 'could not run bench_workload: n must be >= 0, got %', n;
    END IF;
    IF seed IS NULL OR seed < -1 OR seed > 1 THEN
        RAISE EXCEPTION 'could not run bench_workload: seed must be between -1 and 1, got %', seed;
    END IF;
    IF v_big < 0 THEN
        RAISE EXCEPTION 'could not run bench_workload: big_txn_rows must be >= 0, got %', v_big;
    END IF;
    v_del_total := n - v_ins_total - v_upd_total;
    -- The big transactions take their rows out of the totals; shrink them
    -- when n is too small to hold them.
    IF 2 * v_big > v_ins_total OR v_big > v_upd_total THEN
        v_big := least(v_ins_total / 2, v_upd_total);
    END IF;
    v_ins_left := v_ins_total - 2 * v_big;
    v_upd_left := v_upd_total - v_big;
    v_del_left := v_del_total;
    PERFORM setseed(seed);

    SELECT array_agg(s.id ORDER BY s.id), array_agg(shop_currency(c.code) ORDER BY s.id)
    INTO v_store_ids, v_store_currencies
    FROM stores s JOIN countries c ON c.id = s.country_id;
    SELECT min(id), max(id) INTO v_customer_lo, v_customer_hi FROM customers;
    IF v_store_ids IS NULL OR v_customer_lo IS NULL THEN
        RAISE EXCEPTION 'could not run bench_workload: no stores or customers'
            USING HINT = 'Load deploy/shop/seed.sql first.';
    END IF;
    v_n_stores := array_length(v_store_ids, 1);
    SELECT coalesce(min(id), 1), coalesce(max(id), 0) INTO v_lo, v_hi FROM orders;
    v_first_new := v_hi + 1;

    SELECT array_agg(s ORDER BY k) INTO txn_cdf
    FROM (SELECT k, sum(1.0 / k) OVER (ORDER BY k) / sum(1.0 / k) OVER () AS s
          FROM generate_series(1, 10) AS k) w;

    WHILE v_ins_left + v_upd_left + v_del_left > 0 OR v_big_done < 3 AND v_big > 0 LOOP
        -- The big transactions, when the run passes 25%, 50% and 75%.
        IF v_big > 0 AND v_big_done < 3 AND (v_done >= n * (v_big_done + 1) / 4
                                             OR v_ins_left + v_upd_left + v_del_left = 0) THEN
            IF v_big_done = 1 THEN
                UPDATE orders SET status = 'delivered', updated_at = now()
                WHERE id IN (SELECT id FROM orders ORDER BY id LIMIT v_big);
                GET DIAGNOSTICS v_rows = ROW_COUNT;
                -- A table smaller than v_big: the small transactions make up
                -- the difference, so the totals stay exact.
                v_upd_left := v_upd_left + (v_big - v_rows);
                v_upd := v_upd + v_rows;
            ELSE
                INSERT INTO orders (store_id, customer_id, status, total_amount, currency, created_at, updated_at)
                SELECT v_store_ids[i], v_customer_lo + floor(r2 * (v_customer_hi - v_customer_lo + 1))::bigint,
                       'pending', round((2 * power(250, r3))::numeric, 2), v_store_currencies[i], now(), now()
                FROM (SELECT 1 + floor(random() * random() * v_n_stores)::int AS i,
                             random() AS r2, random() AS r3
                      FROM generate_series(1, v_big)) g;
                GET DIAGNOSTICS v_rows = ROW_COUNT;
                v_ins := v_ins + v_rows;
                SELECT max(id) INTO v_hi FROM orders;
            END IF;
            v_done := v_done + v_rows;
            v_big_done := v_big_done + 1;
            v_txns := v_txns + 1;
            COMMIT;
            CONTINUE;
        END IF;

        v_r := random();
        v_txn_ops := 1;
        WHILE txn_cdf[v_txn_ops] < v_r LOOP
            v_txn_ops := v_txn_ops + 1;
        END LOOP;

        FOR op IN 1 .. v_txn_ops LOOP
            EXIT WHEN v_ins_left + v_upd_left + v_del_left = 0;
            -- Draw without replacement from what is left: an exact shuffle
            -- of the remaining inserts, updates and deletes.
            v_r := random() * (v_ins_left + v_upd_left + v_del_left);
            v_kind := CASE WHEN v_r < v_ins_left THEN 0
                           WHEN v_r < v_ins_left + v_upd_left THEN 1
                           ELSE 2 END;
            IF v_kind = 2 THEN
                -- Delete one of the orders this run created (they have no
                -- items, so no cascade).
                v_x := v_first_new + floor(random() * (v_hi - v_first_new + 1))::bigint;
                DELETE FROM orders
                WHERE id = coalesce((SELECT id FROM orders WHERE id >= v_x ORDER BY id LIMIT 1),
                                    (SELECT id FROM orders WHERE id >= v_first_new ORDER BY id LIMIT 1));
                GET DIAGNOSTICS v_rows = ROW_COUNT;
                IF v_rows = 1 THEN
                    v_del_left := v_del_left - 1;
                    v_del := v_del + 1;
                    v_done := v_done + 1;
                    CONTINUE;
                END IF;
                -- Nothing created yet: insert now, delete later.
                IF v_ins_left = 0 THEN
                    RAISE EXCEPTION 'bench_workload: no order left to delete';
                END IF;
                v_kind := 0;
            END IF;
            IF v_kind = 0 THEN
                v_idx := 1 + floor(random() * random() * v_n_stores)::int;
                INSERT INTO orders (store_id, customer_id, status, total_amount, currency, created_at, updated_at)
                VALUES (v_store_ids[v_idx],
                        v_customer_lo + floor(random() * (v_customer_hi - v_customer_lo + 1))::bigint,
                        'pending', round((2 * power(250, random()))::numeric, 2),
                        v_store_currencies[v_idx], now(), now())
                RETURNING id INTO v_hi;
                v_ins_left := v_ins_left - 1;
                v_ins := v_ins + 1;
            ELSE
                IF random() < 0.8 THEN
                    v_x := v_hi - floor(random() * greatest((v_hi - v_lo) / 10, 1))::bigint;
                ELSE
                    v_x := v_lo + floor(random() * (v_hi - v_lo + 1))::bigint;
                END IF;
                UPDATE orders
                SET status = statuses[1 + floor(random() * 6)::int],
                    total_amount = round((2 * power(250, random()))::numeric, 2),
                    updated_at = now()
                WHERE id = coalesce((SELECT id FROM orders WHERE id >= v_x ORDER BY id LIMIT 1),
                                    (SELECT id FROM orders ORDER BY id LIMIT 1));
                GET DIAGNOSTICS v_rows = ROW_COUNT;
                IF v_rows <> 1 THEN
                    RAISE EXCEPTION 'bench_workload: no order to update';
                END IF;
                v_upd_left := v_upd_left - 1;
                v_upd := v_upd + 1;
            END IF;
            v_done := v_done + 1;
        END LOOP;
        v_txns := v_txns + 1;
        COMMIT;
    END LOOP;

    RAISE NOTICE 'bench_workload: % changes (% inserts, % updates, % deletes) in % transactions',
        v_ins + v_upd + v_del, v_ins, v_upd, v_del, v_txns;
END
$proc$;
