"""Standardisation tables of every model family (reference-spec sections 3.2, 4.2 and 5.1).

Each table is the per-band mean and standard deviation the checkpoint was trained with; inputs
become ``(x - mean) / (std + 1e-9)``. S2 values are in ``bands.npy`` order
(B04, B02, B03, B08, B8A, B05, B06, B07, B11, B12), S1 values in [VV, VH] order. The numbers are
data, copied from the specification, and must not be "tidied": they are part of the checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.errors import ConfigError
from tessera.models.spec import InputSpec

__all__ = ["V1_0", "V1_1_AWS", "V1_1_MPC", "V2_STUDENT", "NormTable", "v1_1_table"]


@dataclass(frozen=True)
class NormTable:
    """Per-band standardisation statistics of one model family (and data source)."""

    s2_mean: tuple[float, ...]
    """S2 mean per band, 10 values."""
    s2_std: tuple[float, ...]
    """S2 standard deviation per band, 10 values."""
    s1a_mean: tuple[float, ...]
    """[VV, VH] mean of ascending frames."""
    s1a_std: tuple[float, ...]
    """[VV, VH] standard deviation of ascending frames."""
    s1d_mean: tuple[float, ...]
    """[VV, VH] mean of descending frames."""
    s1d_std: tuple[float, ...]
    """[VV, VH] standard deviation of descending frames."""

    def input_spec(self, **fields: Any) -> InputSpec:
        """An `InputSpec` standardising with this table; ``fields`` give the family's other settings."""
        stats = {
            name: getattr(self, name) for name in ("s2_mean", "s2_std", "s1a_mean", "s1a_std", "s1d_mean", "s1d_std")
        }
        return InputSpec(**stats, **fields)


_V1_0_S1_MEAN = (5484.0407, 3003.7812)
_V1_0_S1_STD = (1871.2334, 1726.0670)

V1_0 = NormTable(
    s2_mean=(
        1711.0938,
        1308.8511,
        1546.4543,
        3010.1293,
        3106.5083,
        2068.3044,
        2685.0845,
        2931.5889,
        2514.6928,
        1899.4922,
    ),
    s2_std=(
        1926.1026,
        1862.9751,
        1803.1792,
        1741.7837,
        1677.4543,
        1888.7862,
        1736.3090,
        1715.8104,
        1514.5199,
        1398.4779,
    ),
    # v1.0 has one S1 table for both orbit directions
    s1a_mean=_V1_0_S1_MEAN,
    s1a_std=_V1_0_S1_STD,
    s1d_mean=_V1_0_S1_MEAN,
    s1d_std=_V1_0_S1_STD,
)
"""v1.0 float and v1.0-QAT (reference ``ssl_dataset.py``)."""

V1_1_MPC = NormTable(
    s2_mean=(
        2683.4553,
        2223.3630,
        2432.0950,
        3633.1970,
        3602.1755,
        3006.4324,
        3400.2710,
        3515.6392,
        2456.9163,
        1983.8783,
    ),
    s2_std=(
        2739.5217,
        2846.2993,
        2690.8250,
        2290.0439,
        2088.8970,
        2673.1106,
        2381.4521,
        2229.5225,
        1601.0942,
        1495.3545,
    ),
    s1a_mean=(5588.3291, 3025.6270),
    s1a_std=(1713.4646, 1693.0471),
    s1d_mean=(5552.9683, 2955.0520),
    s1d_std=(1685.5857, 1677.6414),
)
"""v1.1 trained on Planetary Computer data (``tessera_v1_1_mpc_encoder.pt``)."""

V1_1_AWS = NormTable(
    s2_mean=(
        2793.6589,
        2356.7776,
        2551.0496,
        3741.9229,
        3713.7844,
        3120.1997,
        3516.3342,
        3637.0342,
        2501.0283,
        2038.1504,
    ),
    s2_std=(
        2810.0093,
        2933.8835,
        2755.6360,
        2344.5027,
        2145.7986,
        2743.9019,
        2438.8601,
        2286.5977,
        1680.7367,
        1585.5529,
    ),
    s1a_mean=(5697.0859, 2838.6687),
    s1a_std=(1671.3737, 1789.4116),
    s1d_mean=(5759.1367, 2873.2854),
    s1d_std=(1583.2858, 1747.8390),
)
"""v1.1 trained on Earth-search S2 + OPERA S1 data (``tessera_v1_1_aws_encoder.pt``)."""

V2_STUDENT = NormTable(
    s2_mean=(
        1633.0042,
        1341.1090,
        1539.5536,
        3054.8269,
        3117.4658,
        2004.1648,
        2694.7275,
        2945.1504,
        2266.6079,
        1657.3094,
    ),
    s2_std=(
        1999.4603,
        2014.7549,
        1929.2201,
        1754.2493,
        1649.9807,
        1936.8988,
        1748.6041,
        1708.6991,
        1207.5250,
        1108.6046,
    ),
    s1a_mean=(5909.3921, 3405.0322),
    s1a_std=(1507.1750, 1531.2615),
    s1d_mean=(5816.1382, 3277.7576),
    s1d_std=(1554.6475, 1546.4733),
)
"""v2 students nano/small/medium/large (reference ``student/model.py``)."""

# The reference names its v1.1 tables by platform; our config names data providers.
_V1_1_BY_SOURCE = {
    "planetary-computer": V1_1_MPC,
    "stac": V1_1_MPC,
    "mpc": V1_1_MPC,
    "earth-search": V1_1_AWS,
    "opera": V1_1_AWS,
    "aws": V1_1_AWS,
}


def v1_1_table(source: str) -> NormTable:
    """Return the v1.1 table for a data source.

    Args:
        source: A config data source (``planetary-computer``, ``stac``, ``earth-search``, ``opera``)
            or the reference's own names ``mpc`` / ``aws``.

    Returns:
        The MPC table for Planetary Computer data (and generic STAC APIs, assumed to mirror it),
        the AWS table for Earth-search / OPERA data.

    Raises:
        ConfigError: For an unknown source name.
    """
    try:
        return _V1_1_BY_SOURCE[source]
    except KeyError:
        known = ", ".join(sorted(_V1_1_BY_SOURCE))
        raise ConfigError(
            f"unknown data source {source!r} for the v1.1 normalisation tables; use one of: {known}"
        ) from None
