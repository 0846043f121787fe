"""
Where stateful decorators keep shared state.

``MemoryStore`` (the default) keeps it in this process; ``RedisStore`` keeps it in Redis, for
many processes and machines sharing one upstream (redis-py is imported only when a
``RedisStore`` is made).

.. versionadded:: 0.1.0
"""

from resilience.stores._memory import MemoryStore
from resilience.stores._redis import RedisStore


__all__ = ["MemoryStore", "RedisStore"]
