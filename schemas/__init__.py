"""The wire contract shared by hub and spoke: labels, ids, envelope, receipts, directory.

Pure code: no sockets, no clocks, no databases. (``schemas.localfs`` is the one module
that writes files; see docs/architecture.md.)
"""
