"""The hub's durable store: tables, the row writer, the ledger, the spool and migrations."""
