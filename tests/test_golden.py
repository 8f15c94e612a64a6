"""Today's embeddings of seeded tiles against the record in ``tests/data/golden`` (`tests.golden`).

The no-seams tests show that a pixel's embedding does not depend on tiling, batching or the run;
this one shows that it does not change from one commit to the next. On the machine that wrote the
record the bytes are equal; elsewhere CPU kernels (another SIMD width, another summation order)
may move the last bits of float32, so values are compared to 1e-5 relative. A change in what the
input preparation does (a band, a normalisation constant, a sampler draw, a nodata rule) moves
values by orders of magnitude more, and which pixels are embedded must match exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.golden import CASES, RECORD, embed


@pytest.fixture(scope="module")
def record() -> dict[str, np.ndarray]:
    with np.load(RECORD) as data:
        return {name: data[name] for name in data.files}


def test_the_record_holds_every_case(record: dict[str, np.ndarray]) -> None:
    assert sorted(record) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_embeddings_match_the_record(record: dict[str, np.ndarray], name: str) -> None:
    want, got = record[name], embed(name)
    assert got.shape == want.shape and got.dtype == want.dtype
    embedded = np.isfinite(want[..., 0])
    assert embedded.any() and (~embedded).any()  # the case exercises both sides of the nodata rule
    assert np.array_equal(np.isfinite(got[..., 0]), embedded), "another set of pixels is embedded"
    np.testing.assert_allclose(
        got[embedded],
        want[embedded],
        rtol=1e-5,
        atol=1e-5 * float(np.abs(want[embedded]).max()),
        err_msg=f"embeddings of {name} changed; if on purpose, see tests/golden.py",
    )
