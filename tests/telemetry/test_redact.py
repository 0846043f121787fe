"""Tests for redaction of sensitive keys and values."""

from __future__ import annotations

import re

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience.telemetry import (
    REDACTED,
    add_pattern,
    add_sensitive,
    redact,
    scrub,
    sensitive_names,
)


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


class TestKeyNames:
    @pytest.mark.parametrize(
        "key", ["X-Access-Key", "jwt", "private-key", "PassPhrase", "x_api_key", "Set-Cookie"]
    )
    def test_spellings(self, key):
        """Key names match case- and separator-insensitively."""
        assert {key: REDACTED} == redact({key: "v"})

    def test_user_names_are_separator_insensitive(self):
        """A name added as ``account_number`` catches ``Account-Number`` and text pairs."""
        add_sensitive("account_number")
        assert {"Account-Number": REDACTED} == redact({"Account-Number": "1"})
        assert "accountNumber=[REDACTED]" == scrub("accountNumber=12345")

    def test_separator_only_name_refused(self):
        """A name of separators alone would match everything: refused."""
        with pytest.raises(ValueError, match="letter or digit"):
            add_sensitive("-_")


CARRIERS = [
    ("https://bob:hunter2@host.test/x", "https://[REDACTED]@host.test/x"),
    ("redis://:hunter2@cache:6379/0", "redis://[REDACTED]@cache:6379/0"),
    ("GET /v1?api_key=abc123&page=2", "GET /v1?api_key=[REDACTED]&page=2"),
    ("/x?key=abc&sig=def&q=1", "/x?key=[REDACTED]&sig=[REDACTED]&q=1"),
    ("?access_token=a&signature=b&password=c&secret=d", None),
    ("Authorization: Bearer abc.def", "Authorization: [REDACTED]"),
    ("proxy-authorization=Basic Zm9vOmJhcg==", "proxy-authorization=[REDACTED]"),
    ("Cookie: a=1; b=2\nnext", "Cookie: [REDACTED]\nnext"),
    ("set-cookie: sid=xyz; Path=/", "set-cookie: [REDACTED]"),
    ("{'Authorization': 'Bearer xyz'}", "{'Authorization': '[REDACTED]'}"),
    ("sent Bearer abc123 to it", "sent Bearer [REDACTED] to it"),
    ("header Basic dXNlcjpwYXNz here", "header Basic [REDACTED] here"),
    ("password=hunter2 user=bob", "password=[REDACTED] user=bob"),
    ('{"client_secret": "s3", "id": 7}', '{"client_secret": "[REDACTED]", "id": 7}'),
    ("passphrase: open sesame", "passphrase: [REDACTED]"),  # the whole value, to the line's end
    ("passphrase: open sesame\nnext: 1", "passphrase: [REDACTED]\nnext: 1"),
    ("passphrase: open sesame, user: bob", "passphrase: [REDACTED], user: bob"),
    ("token=a b; secret=c&d=1,e", "token=[REDACTED] b; secret=[REDACTED]&d=1,e"),
    ("ValueError: said password=x y", "ValueError: said password=[REDACTED] y"),
    ("X-Access-Key=abc", "X-Access-Key=[REDACTED]"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", REDACTED),
    ("key sk-abcdefghijklmnop0123 leaked", "key [REDACTED] leaked"),
    ("sk-ant-api03-abcdefghijklmnopqrstuvwx", REDACTED),
    ("AKIAIOSFODNN7EXAMPLE", REDACTED),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123", REDACTED),
    ("xoxb-1234-5678-abcdefgh", REDACTED),
    ("sk_live_abcdefghijkl0123", REDACTED),
]


class TestScrub:
    @pytest.mark.parametrize(("text", "expected"), CARRIERS)
    def test_carriers(self, text, expected):
        """Each carrier of a credential is cut out, the context kept."""
        clean = scrub(text)
        if expected is not None:
            assert expected == clean
        assert REDACTED in clean

    @pytest.mark.parametrize(
        "text",
        [
            "Basic authentication failed",
            "ValueError: invalid literal for int() with base 10: 'x'",
            "rate limit for key 'user-1' reached; retry in 1.000 s",
            "the next wait of 2.000 s would cross the timeout of 5 s",
            "circuit breaker 'payments' is open; a probe call is allowed in 3.000 s",
            "https://api.test/v1/items?page=2&limit=10",
            "bearer of bad news",
            'Traceback (most recent call last):\n  File "x.py", line 1, in <module>',
        ],
    )
    def test_plain_text_is_kept(self, text):
        """Text without a credential comes out as it went in."""
        assert text == scrub(text)

    def test_user_pattern(self):
        """A user's pattern is scrubbed whole, or only its ``secret`` group."""
        add_pattern(r"acct-(?P<secret>\d{8})")
        add_pattern(re.compile(r"PIN \d{4}"))
        assert "acct-[REDACTED] and [REDACTED]" == scrub("acct-12345678 and PIN 1234")

    @pytest.mark.parametrize("bad", ["(", "a*"])
    def test_bad_pattern(self, bad):
        """A pattern that does not compile or matches nothing at all is refused."""
        with pytest.raises(ValueError, match="add_pattern"):
            add_pattern(bad)

    def test_values_in_mappings_are_scrubbed(self):
        """Strings under harmless keys are scrubbed too; rendering turns objects into text."""
        error = OSError("failed for https://u:p@h.test/?token=t1")
        clean = redact({"url": "https://h.test/?api_key=k1", "error": error}, render=True)
        assert {
            "url": "https://h.test/?api_key=[REDACTED]",
            "error": "OSError: failed for https://[REDACTED]@h.test/?token=[REDACTED]",
        } == clean

    def test_exception_objects_kept_without_render(self):
        """Without *render*, non-string values are left as they are."""
        error = OSError("x")
        assert error is redact({"error": error})["error"]

    @given(
        st.text(max_size=30),
        st.sampled_from([s for s, _ in CARRIERS]),
        st.text(alphabet=" \n,;()[]<>", max_size=3),
        st.text(max_size=30),
    )
    def test_embedded_secret_never_survives(self, before, carrier, gap, after):
        """A carrier inside arbitrary text is still scrubbed (the gap keeps it a token)."""
        clean = scrub(f"{before} {gap}{carrier}{gap} {after}")
        assert REDACTED in clean

    @given(st.text(max_size=200))
    def test_never_raises_and_is_idempotent(self, text):
        """Scrubbing any text works, and scrubbing twice changes nothing more."""
        once = scrub(text)
        assert once == scrub(once)
