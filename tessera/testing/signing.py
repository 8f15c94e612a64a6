"""A fake signer for tests that prove no signature reaches a file, a log or an output.

Configured as ``sign: python:tessera.testing.signing:fake_sas`` (`tessera.sources.DataSource.href_patcher`):
it appends `FAKE_SAS_QUERY`, shaped like an Azure SAS token, to every href at read time, so a test
can grep everything a run wrote for it and check that the COG host saw it.
"""

from __future__ import annotations

__all__ = ["FAKE_SAS_QUERY", "fake_sas"]

FAKE_SAS_QUERY = "st=2026-01-01&se=2099-01-01&sig=FAKE-SAS-SIGNATURE"
"""What `fake_sas` appends to an href's query string."""


def fake_sas(href: str) -> str:
    """``href`` with `FAKE_SAS_QUERY` appended to its query string."""
    sep = "&" if "?" in href else "?"
    return f"{href}{sep}{FAKE_SAS_QUERY}"
