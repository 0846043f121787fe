"""``@throttled``: Google SRE adaptive throttling (face, state, layer, Redis twin)."""
