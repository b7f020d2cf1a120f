"""The hub's decisions, pure.

Imports nothing but :mod:`schemas` and the standard library: no asyncio, SQLAlchemy,
structlog, paho or aiomqtt, and no clock reads (the time comes in as ``now_ms: int``). The
shells around it (intake, dispatch) gather the facts, ask the core, and carry out what it
says.
"""
