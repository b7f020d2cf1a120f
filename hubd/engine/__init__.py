"""The hub's intake around its pure core (:mod:`hubd.core`): the pieces :mod:`hubd.engine.intake`
is built from. Each gathers facts, asks the core, and carries out what it says: envelopes
(inline, and the store's answers), chunked bodies, receipt batches, presence and hellos,
and the answers the hub signs.
"""
