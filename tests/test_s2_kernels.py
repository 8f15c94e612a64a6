"""Sentinel-2 kernels against the reference-spec numbers (sections 1.3, 1.5, 9)."""

from __future__ import annotations

import numpy as np

from tessera import s2
from tessera.layout import S2_BANDS, SCL_INVALID, SCL_VALID


def test_band_order_and_scl_classes() -> None:
    assert S2_BANDS == ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12")
    classes = np.arange(12, dtype=np.float32)
    assert np.flatnonzero(s2.scl_valid(classes)).tolist() == [4, 5, 6, 7, 10, 11]
    assert set(SCL_VALID) | set(SCL_INVALID) == set(range(12))
    assert not s2.scl_valid(np.array([np.nan], np.float32))[0]


def test_day_of_year_leap() -> None:
    assert s2.day_of_year("2024-01-01") == 1
    assert s2.day_of_year("2024-12-31") == 366
    assert s2.day_of_year("2023-12-31") == 365
    assert s2.day_of_year("2024-02-29") == 60


def test_needs_offset_by_baseline_not_date() -> None:
    assert not s2.needs_offset({"s2:processing_baseline": "03.01"}, harmonised=False)
    assert s2.needs_offset({"s2:processing_baseline": "04.00"}, harmonised=False)
    assert s2.needs_offset({"s2:processing_baseline": "05.10"}, harmonised=False)
    assert not s2.needs_offset({}, harmonised=False)
    assert not s2.needs_offset({"s2:processing_baseline": "05.10"}, harmonised=True)
    es = {"s2:processing_baseline": "05.10", "earthsearch:boa_offset_applied": False}
    assert s2.needs_offset(es, harmonised=True)
    assert not s2.needs_offset({**es, "earthsearch:boa_offset_applied": True}, harmonised=True)


def test_offset_and_uint16_truncation() -> None:
    v = np.array([0, 500, 999.9, 1000, 1000.7, 2500.5, np.nan, 70000], np.float32)
    out = s2.to_uint16(s2.apply_baseline_offset(v))
    assert out.tolist() == [0, 500, 999, 0, 0, 1500, 0, 65535]
    assert s2.to_uint16(v).tolist() == [0, 500, 999, 1000, 1000, 2500, 0, 65535]


def test_date_merger_first_valid_wins() -> None:
    m = s2.DateMerger(1, 4, 1)
    # pixel:        0    1    2    3
    m.add(np.array([[[10, 11, 12, 0]]], np.float32), np.array([[9, 4, 9, 0]], np.float32))
    m.add(np.array([[[20, 21, 22, 23]]], np.float32), np.array([[4, 4, 8, 9]], np.float32))
    m.add(np.array([[[30, 31, 32, 33]]], np.float32), np.array([[5, 5, 3, 9]], np.float32))
    bands, mask = m.result(np.array([[1, 1, 1, 0]], np.uint8))
    # 0: first valid is item 2; 1: item 1; 2: none valid -> first with data (item 1), mask 0; 3: outside ROI
    assert bands[..., 0].tolist() == [[20, 11, 12, 0]]
    assert mask.tolist() == [[1, 1, 0, 0]]
    assert bands.dtype == np.uint16 and bands.shape == (1, 4, 1)


def test_date_merger_single_item_values_as_read() -> None:
    m = s2.DateMerger(1, 3, 2)
    m.add(np.array([[[100, 200, np.nan]], [[5, 6, 7]]], np.float32), np.array([[4, 9, 4]], np.float32))
    bands, mask = m.result(np.ones((1, 3), np.uint8))
    assert bands[0].tolist() == [[100, 5], [200, 6], [0, 7]]
    assert mask.tolist() == [[1, 0, 1]]
