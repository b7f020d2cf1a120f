"""What hub and spoke run on alike, beyond the wire contract in ``schemas``.

The MQTT link (:mod:`runtime.mqtt`, its protocol :mod:`runtime.link` and the in-memory
:mod:`runtime.fakelink`), key files and atomic writes (:mod:`runtime.files`), logging and
the event loop (:mod:`runtime.startup`) and broker addresses (:mod:`runtime.brokers`).
It may import ``schemas``, never ``hubd`` or ``spoke``.
"""
