"""PostgreSQL: pools, and one module per store (payments, audit, inbox, cursors)."""
