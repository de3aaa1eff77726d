-- What Debezium may read, applied after every migrate (native: scripts/localstack/postgres.py;
-- compose: the db-grants service): SELECT on exactly the tables of the connector's
-- table.include.list (tests/unit/test_stack_config.py keeps the two in step) and UPDATE on the
-- heartbeat row its heartbeat.action.query bumps. No default privileges on purpose: a table a
-- later migration adds stays unreadable to Debezium until it is streamed and listed here.
GRANT SELECT ON public.payments, public.dbz_heartbeat TO debezium;
GRANT UPDATE ON public.dbz_heartbeat TO debezium;
