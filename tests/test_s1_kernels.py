"""Sentinel-1 encoding and merge against reference-spec section 9."""

from __future__ import annotations

import numpy as np

from tessera import s1


def test_encoding_check_values() -> None:
    exact = np.array([1, 0.5, 0.25, 0.125, 0.0625, 0.00390625, 0.001953125], np.float32)
    assert s1.encode_db(exact).tolist() == [10000, 8795, 7591, 6387, 5183, 367, 0]
    inexact = np.array([0.01, 0.1, 0.05], np.float32)
    assert s1.encode_db(inexact).tolist() == [1999, 6000, 4795]


def test_encoding_nodata_and_clip() -> None:
    v = np.array([0.0, -1.0, np.nan, np.inf, 1e30], np.float32)
    out = s1.encode_db(v)
    assert out.dtype == np.int16
    assert out.tolist() == [0, 0, 0, 0, 32767]


def test_merge_first_nonzero_per_band() -> None:
    a = np.array([[[0, 5]], [[7, 0]]], np.int16)
    b = np.array([[[1, 2]], [[3, 4]]], np.int16)
    c = np.array([[[9, 9]], [[9, 9]]], np.int16)
    acc = s1.merge_first_nonzero(None, a)
    acc = s1.merge_first_nonzero(acc, b)
    acc = s1.merge_first_nonzero(acc, c)
    assert acc.tolist() == [[[1, 5]], [[7, 4]]]
    assert a.tolist() == [[[0, 5]], [[7, 0]]]  # input untouched
