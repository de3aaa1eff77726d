"""The change stream's contract: Debezium envelope decoding, connector config and registration."""
