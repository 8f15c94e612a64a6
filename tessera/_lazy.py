"""Names of a package imported on first use (PEP 562), so that importing the package stays cheap."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, exports: Mapping[str, str], name: str) -> Any:
    """The module ``__getattr__`` of ``package``: ``name`` imported from the module ``exports`` names.

    The value is cached on the package, so each name is imported once.

    Raises:
        AttributeError: ``name`` is not one of ``exports`` (as for any missing module attribute).
    """
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    setattr(sys.modules[package], name, value)
    return value
