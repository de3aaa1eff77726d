"""The operations snapshot: one module per source (Kafka, Connect, PostgreSQL, workers).

``ops.snapshot`` runs every section on its own thread with a timeout and builds the plain dict
that ``/ops``, ``/ops.json``, ``/metrics`` (through ``ops.snapshot.BackgroundSnapshot``) and
``make status`` (``ops.text``) show. No framework here, and nothing connects until a section is
collected.
"""
