#!/usr/bin/env bash
# docker-compose only (mounted into /docker-entrypoint-initdb.d/, run on the postgres container's
# first start): the database roles of the native stack, from the same file
# (scripts/localstack/sql/roles.sql), and the same rule that only `replicator` may use physical
# replication. The passwords come from the container's environment (compose reads .env) and
# reach psql on its standard input, never on a command line.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname payments <<SQL
\set payments_password '$PAYMENTS_DB_PASSWORD'
\set debezium_password '$DEBEZIUM_DB_PASSWORD'
\set replicator_password '$REPLICATOR_DB_PASSWORD'
\i /stack-sql/roles.sql
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
