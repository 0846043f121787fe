"""
Where stateful decorators keep shared state: ``MemoryStore`` (default, one process).

.. versionadded:: 0.1.0
"""

from resilience.stores._memory import MemoryStore


__all__ = ["MemoryStore"]
