"""
A live page of a store's breakers, limiters, pools and budgets, and this process's metrics.

``serve(port=8321)`` starts it inside an application (its memory store and rolling metrics);
``python -m resilience dashboard --store redis://...`` serves a fleet's Redis store. One
self-contained page (no CDN, no build step: the HTML and its script ship in the package)
updates over server-sent events at most once a second, open breakers first.

It is read-only, shows only redacted names and messages, and binds to 127.0.0.1 unless
told otherwise; it has no authentication of its own, so expose it only behind a reverse
proxy that authenticates (see ``docs/operating.md``).

.. versionadded:: 0.1.0
"""

from resilience import _exports
from resilience.dashboard._server import Dashboard, serve


__all__ = ["Dashboard", "serve"]

_exports.publish(__name__, globals())
