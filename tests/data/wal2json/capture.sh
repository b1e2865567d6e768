#!/bin/bash
# capture.sh - re-captures the golden wal2json inputs (NAME.in) of this directory.
#
# Needs a running PostgreSQL 15 with wal_level=logical and wal2json allowed in
# output_plugin_libraries, reachable as a superuser through PGHOST/PGPORT/PGUSER
# (e.g. the throwaway cluster of tests/harness). Each scenario runs in its own
# scratch database: setup SQL, then a new slot, then the scenario, then
# pg_logical_slot_get_changes with the options and session settings the daemon uses.
# Afterwards regenerate and REVIEW the dumps:
#   PGFAN_UPDATE_GOLDEN=1 ./test_decoder && git diff tests/data/wal2json
# Commit times, xids and LSNs differ on every capture.
set -euo pipefail
OUT=${1:-$(dirname "$0")}
P="psql -X -q -v ON_ERROR_STOP=1"

capture() {
    local name=$1 setup=$2 scenario=$3 db="pgfan_golden_$1"
    $P -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    $P -d "$db" <<<"$setup" >/dev/null
    $P -d "$db" -At -c "SELECT pg_create_logical_replication_slot('golden', 'wal2json')" >/dev/null
    # Through stdin, not -c: -c would run all statements as one transaction.
    $P -d "$db" <<<"$scenario" >/dev/null
    $P -d "$db" -At -c "SET TimeZone='UTC'" -c "SET DateStyle='ISO'" -c "SET bytea_output='hex'" \
        -c "SELECT data FROM pg_logical_slot_get_changes('golden', NULL, NULL,
              'format-version', '2', 'include-lsn', '1', 'include-xids', '1',
              'include-timestamp', '1', 'include-pk', '1')" >"$OUT/$name.in"
    $P -d "$db" -At -c "SELECT pg_drop_replication_slot('golden')" >/dev/null
    $P -c "DROP DATABASE $db" >/dev/null
}

capture dml_default "$(cat <<'SQL'
CREATE TABLE orders (id bigint PRIMARY KEY, store_id integer NOT NULL, status text, total_amount numeric(12,2), currency character(3), created_at timestamptz, updated_at timestamp);
SQL
)" "$(cat <<'SQL'
BEGIN;
INSERT INTO orders VALUES (9000001, 7, 'pending', 129.90, 'EUR', '2026-11-20 10:00:00+00', '2026-11-20 10:00:00');
INSERT INTO orders VALUES (9000002, 8, 'paid', 0.05, 'USD', '2026-11-20 10:00:00.5+05:30', '2026-11-20 10:00:00.123456');
COMMIT;
UPDATE orders SET status = 'paid', total_amount = 119.90, updated_at = '2026-11-20 10:05:00' WHERE id = 9000001;
UPDATE orders SET id = 9000003 WHERE id = 9000002;
DELETE FROM orders WHERE id = 9000001;
INSERT INTO orders VALUES (-1, -2147483648, NULL, -99999.99, NULL, NULL, NULL);
SQL
)"

capture dml_full "$(cat <<'SQL'
CREATE TABLE orders (id bigint PRIMARY KEY, store_id integer NOT NULL, status text, total_amount numeric(12,2), currency character(3), created_at timestamptz);
ALTER TABLE orders REPLICA IDENTITY FULL;
INSERT INTO orders VALUES (1, 7, 'pending', 129.90, 'EUR', '2026-11-20 10:00:00+00');
INSERT INTO orders VALUES (2, 8, 'paid', 10.00, 'USD', '2026-11-21 11:00:00+00');
SQL
)" "$(cat <<'SQL'
UPDATE orders SET status = 'shipped', total_amount = 119.90 WHERE id = 1;
UPDATE orders SET id = 3, status = NULL WHERE id = 2;
DELETE FROM orders WHERE id = 1;
BEGIN;
UPDATE orders SET store_id = store_id + 1;
DELETE FROM orders;
COMMIT;
SQL
)"

capture toast "$(cat <<'SQL'
CREATE TABLE docs (id integer PRIMARY KEY, title text, body text);
CREATE TABLE docs_full (id integer PRIMARY KEY, title text, body text);
ALTER TABLE docs_full REPLICA IDENTITY FULL;
SQL
)" "$(cat <<'SQL'
SELECT setseed(0.42);
INSERT INTO docs SELECT 1, 'first title', string_agg(md5(random()::text), '') FROM generate_series(1, 320);
UPDATE docs SET title = 'second title' WHERE id = 1;
INSERT INTO docs_full SELECT 1, 'first title', string_agg(md5(random()::text), '') FROM generate_series(1, 320);
UPDATE docs_full SET title = 'second title' WHERE id = 1;
DELETE FROM docs WHERE id = 1;
SQL
)"

capture truncate "$(cat <<'SQL'
CREATE TABLE scratch_a (id integer PRIMARY KEY);
CREATE TABLE scratch_b (id integer);
INSERT INTO scratch_a VALUES (1), (2);
INSERT INTO scratch_b VALUES (1);
SQL
)" "$(cat <<'SQL'
TRUNCATE scratch_a, scratch_b;
BEGIN;
INSERT INTO scratch_a VALUES (3);
TRUNCATE scratch_a;
COMMIT;
SQL
)"

capture messages "$(cat <<'SQL'
CREATE TABLE countries (id smallint PRIMARY KEY, code character(2), name text);
SQL
)" "$(cat <<'SQL'
BEGIN;
INSERT INTO countries VALUES (21, 'NZ', 'New Zealand');
SELECT pg_logical_emit_message(true, 'cdc-test', 'transactional message');
UPDATE countries SET name = 'Aotearoa New Zealand' WHERE id = 21;
COMMIT;
SELECT pg_logical_emit_message(false, 'cdc-test', 'non-transactional message');
SELECT pg_logical_emit_message(false, 'cdc_hb', E'quote " backslash \\ newline \n tab \t ctl \x01 Zürich ✓ 😀');
SELECT pg_logical_emit_message(true, 'pre"fix', '');
SQL
)"

capture types "$(cat <<'SQL'
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE "Mood" AS ENUM ('Sad', 'Happy');
CREATE TABLE types (
  id integer PRIMARY KEY,
  t text, vc character varying(40), ch character(3), nm name,
  n40 numeric(40,0), n30 numeric(40,30), n numeric, r real, d double precision, s smallint, b bigint, o oid,
  flag boolean,
  ia integer[], ta text[],
  j json, jb jsonb, by bytea, u uuid, e mood, e2 "Mood", e2a "Mood"[],
  ts timestamp, ts3 timestamp(3) with time zone, tstz timestamptz, dt date, tm time, tmtz time with time zone, iv interval,
  "weird ""col"" name" text
);
SQL
)" "$(cat <<'SQL'
INSERT INTO types VALUES (1,
  'Zürich ✓ 😀', 'quote " backslash \ end', 'ab', 'pg_class',
  1234567890123456789012345678901234567890, 0.123456789012345678901234567890, 12345678901234567890.1234567890123,
  1.5, 0.1, -32768, 9223372036854775807, 4294967295,
  true,
  '{1,2,NULL,-3}', '{"a b","c\"d","e\\f",NULL,"NULL",""}',
  '{"k": [1, 2.50, "x\ny"], "u": "\u00e9"}', '{"k": [1, 2.50, "x\ny"], "u": "\u00e9"}', '\x00ff10deadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 'Happy', '{Sad,Happy}',
  '2026-11-20 10:00:00.5', '2026-11-20 10:00:00.123+05:30', '2026-11-20 23:59:59.999999-08', '2026-11-20', '10:11:12.5', '10:11:12+02', '1 year 2 months 3 days 04:05:06.7',
  E'line1\nline2\ttab \x01 ctl / slash');
INSERT INTO types (id, n, r, d, t, ts, tstz, dt) VALUES (2, 'NaN', 'Infinity', '-1e30', E'\\u0041 not an escape', 'infinity', '-infinity', '4713-01-01 BC');
INSERT INTO types (id, n, d, tstz, ts) VALUES (3, -0.000000000000000000000000000001, 1.0e-300, '0044-03-15 12:00:00 BC', '10000-01-01 00:00:00');
INSERT INTO types (id) VALUES (4);
SQL
)"

capture empty_txn "$(cat <<'SQL'
CREATE TABLE keep (id integer PRIMARY KEY);
SQL
)" "$(cat <<'SQL'
CREATE TABLE scratch (id integer);
ALTER TABLE keep REPLICA IDENTITY FULL;
BEGIN;
CREATE INDEX ON scratch (id);
DROP TABLE scratch;
COMMIT;
INSERT INTO keep VALUES (1);
SQL
)"

capture no_pk "$(cat <<'SQL'
CREATE TABLE events (at timestamptz, kind text, payload jsonb);
CREATE TABLE events_full (at timestamptz, kind text);
ALTER TABLE events_full REPLICA IDENTITY FULL;
SQL
)" "$(cat <<'SQL'
INSERT INTO events VALUES ('2026-11-24 00:00:00+00', 'login', '{"user": 1}');
UPDATE events SET kind = 'logout';
DELETE FROM events;
INSERT INTO events_full VALUES ('2026-11-24 00:00:00+00', 'login');
UPDATE events_full SET kind = 'logout';
DELETE FROM events_full;
SQL
)"
