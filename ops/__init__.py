"""The operations snapshot: one module per source (Kafka, Connect, PostgreSQL, workers)."""
