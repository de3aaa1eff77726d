-- The database roles of the local stack, run as the superuser in the `payments` database by
-- the native stack (scripts/localstack/postgres.py, every `make up`) and by docker-compose
-- (scripts/compose/postgres-init.sh, on the first start). Idempotent.
--
-- The passwords come in as psql variables. The native stack passes SCRAM verifiers computed on
-- the client, so no plaintext password reaches the server (or its log); compose passes the
-- generated values from .env.

-- The application: owns the database and, because the migrations run as it, every table and
-- the publication payments_pub (a publication's owner must own its tables). No SUPERUSER, no
-- REPLICATION. pg_monitor: read-only statistics (pg_stat_replication, the slots' lag) for the
-- /ops page and `make status`; it reads no table data.
DO $$ BEGIN CREATE ROLE payments; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
ALTER ROLE payments WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'payments_password';
GRANT pg_monitor TO payments;

-- Debezium: logical replication of what it streams. REPLICATION to open the slot, CONNECT on
-- this database, and the table rights in grants.sql (applied after every migrate). pg_hba.conf
-- keeps it off physical replication.
DO $$ BEGIN CREATE ROLE debezium; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
ALTER ROLE debezium WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
    PASSWORD :'debezium_password';

-- The replicas (pg_basebackup, WAL streaming): physical replication only. pg_hba.conf lets
-- only this role use the `replication` pseudo-database; it cannot connect to any database.
DO $$ BEGIN CREATE ROLE replicator; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
ALTER ROLE replicator WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
    PASSWORD :'replicator_password';

ALTER DATABASE payments OWNER TO payments;
REVOKE ALL ON DATABASE payments FROM PUBLIC;
GRANT CONNECT ON DATABASE payments TO debezium;
