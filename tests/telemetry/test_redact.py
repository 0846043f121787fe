"""Tests for redaction of sensitive keys and values."""

from __future__ import annotations

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience.telemetry import REDACTED, add_sensitive, redact, sensitive_names


class TestRedact:
    def test_headers(self):
        """Authorization, cookies, API keys and proxy auth are redacted, case-insensitively."""
        data = {
            "Authorization": "Bearer abc",
            "Cookie": "a=b",
            "set-cookie": "c=d",
            "X-Api-Key": "k",
            "Proxy-Authorization": "Basic Zm9v",
            "access_token": "t",
            "db_password": "p",
            "client_secret": "s",
            "name": "fetch",
        }
        clean = redact(data)
        assert {"fetch"} == {v for v in clean.values() if v != REDACTED}
        assert "Bearer abc" == data["Authorization"]

    def test_nested_and_pairs(self):
        """Nested mappings, lists and (name, value) header pairs are walked."""
        data = {"request": {"headers": [("Authorization", "x"), ("Accept", "json")], "url": "u"}}
        clean = redact(data)
        assert [("Authorization", REDACTED), ("Accept", "json")] == clean["request"]["headers"]
        assert "u" == clean["request"]["url"]

    def test_credential_values(self):
        """A value that reads like a credential is redacted under any key."""
        assert {"note": REDACTED} == redact({"note": "Bearer eyJhbGci"})

    def test_user_marked(self):
        """Names added by the user, process-wide or per call, are redacted."""
        add_sensitive("SSN")
        assert "ssn" in sensitive_names()
        assert {"user_ssn": REDACTED, "tenant": REDACTED} == redact(
            {"user_ssn": "1", "tenant": "acme"}, sensitive=["tenant"]
        )

    def test_reset(self):
        """reset() forgets the user's names (the autouse fixture resets between tests)."""
        assert "ssn" not in sensitive_names()

    def test_bad_name(self):
        """An empty sensitive name is refused."""
        with pytest.raises(ValueError, match="non-empty"):
            add_sensitive(" ")

    @given(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=10))
    def test_property(self, data):
        """Keys are kept, and every key containing a sensitive name has its value redacted."""
        clean = redact(data)
        assert set(data) == set(clean)
        for key in data:
            if any(name in key.lower() for name in sensitive_names()):
                assert REDACTED == clean[key]
