"""The named errors: each is a `TesseraError` and also the builtin error it is."""

from __future__ import annotations

import builtins

import pytest

import tessera.errors as errors

NAMED = [getattr(errors, name) for name in errors.__all__ if name != "TesseraError"]
BUILTIN_ERRORS = {obj for obj in vars(builtins).values() if isinstance(obj, type) and issubclass(obj, Exception)}
GENERIC = {Exception, BaseException}


@pytest.mark.parametrize("cls", NAMED, ids=lambda c: c.__name__)
def test_every_named_error_is_also_a_specific_builtin(cls: type[Exception]) -> None:
    assert issubclass(cls, errors.TesseraError)
    builtin_bases = [base for base in cls.__mro__ if base in BUILTIN_ERRORS and base not in GENERIC]
    assert builtin_bases, f"{cls.__name__} subclasses no builtin error but Exception"
    # and it can be raised and caught as that builtin, with its message intact
    with pytest.raises(builtin_bases[0], match="what went wrong"):
        raise cls("what went wrong; how to fix it")


def test_a_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        raise errors.ConfigError("bad value")
    assert issubclass(errors.TransportError, RuntimeError) and issubclass(errors.NoScenesError, RuntimeError)
