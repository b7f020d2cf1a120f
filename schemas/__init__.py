"""The wire contract shared by hub and spoke: labels, ids, envelope, receipts, directory.

Pure code: no sockets, no clocks, no databases. What hub and spoke share beyond the
contract (the MQTT link, key files and atomic writes, logging) is the ``runtime`` package.
"""
