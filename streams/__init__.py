"""The stream processor: a Faust worker over the Debezium change stream of `payments`."""
