"""Concurrency pools and their backends. Plain Python, no Django.

A :class:`Pool` hands out :class:`PoolLease` objects: at most ``limit`` per key
at a time. Where the count lives is the :class:`Backend`'s business:

* :class:`ProcessBackend` (``process.py``): a dict in this process.
* :class:`HostBackend` (``host.py``): Linux open-file-description locks on one
  byte per slot, in a file per (pool, key). The kernel drops such a lock the
  moment the process holding it dies, so a SIGKILLed gunicorn worker gives its
  slots back at once; no lease, no heartbeat, no cleaner.
* A cluster backend (Redis) implements the same :class:`Backend` protocol.
"""

from __future__ import annotations

from .adaptive import Adaptive, Gradient
from .backend import Backend, Lease
from .host import HostBackend
from .pool import Pool, PoolLease
from .process import ProcessBackend

__all__ = [
    "Adaptive",
    "Backend",
    "Gradient",
    "HostBackend",
    "Lease",
    "Pool",
    "PoolLease",
    "ProcessBackend",
]
