-- postgres-init.sql - the role pgfan connects as, for compose.yaml. Runs once,
-- after the shop schema and data (docker-entrypoint-initdb.d, name order),
-- as the superuser, in the database POSTGRES_DB (shop).
--
-- REPLICATION lets the role create and stream from a logical slot; pg_hba of
-- the postgres image already allows password logins to every database from
-- the network, which is what a logical replication connection needs (it
-- matches database rows, not the `replication` keyword).

\set ON_ERROR_STOP on

CREATE ROLE pgfan WITH LOGIN REPLICATION PASSWORD 'pgfan';

-- Reading the catalog is enough to stream; SELECT lets pgfan check replica
-- identities and, later, load an initial snapshot.
GRANT USAGE ON SCHEMA public TO pgfan;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO pgfan;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO pgfan;
