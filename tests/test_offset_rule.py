"""The S2 +1000 offset decision (`tessera.s2.offset_applies`): our processing-baseline rule and the
reference's acquisition-date rule, on both sides of every case where they disagree."""

from __future__ import annotations

import datetime as dt

import pytest

from tessera.s2 import REFERENCE_CUTOVER, needs_offset_by_date, offset_applies

D = dt.date
PC, ES = False, True  # harmonised: Planetary Computer (offset still in the values) / Earth Search


def _props(baseline: str | None, **extra: object) -> dict[str, object]:
    props: dict[str, object] = dict(extra)
    if baseline is not None:
        props["s2:processing_baseline"] = baseline
    return props


@pytest.mark.parametrize(
    ("case", "props", "acquired", "harmonised", "by_baseline", "by_date"),
    [
        # where the rules agree
        ("old item, old date", _props("03.01"), D(2021, 6, 1), PC, False, False),
        ("new item, new date", _props("04.00"), D(2022, 6, 1), PC, True, True),
        # reprocessed pre-2022 item (collection 1, baseline 05.00): it carries the offset
        ("reprocessed 2021 item", _props("05.00"), D(2021, 6, 1), PC, True, False),
        ("reprocessed 2018 item", _props("05.09"), D(2018, 3, 3), PC, True, False),
        # the cut-over day: the reference corrects only acquisitions strictly after 2022-01-25
        ("cut-over day", _props("04.00"), D(2022, 1, 25), PC, True, False),
        ("day after cut-over", _props("04.00"), D(2022, 1, 26), PC, True, True),
        ("old baseline after cut-over", _props("03.01"), D(2022, 1, 26), PC, False, True),
        # items without the property: unknown baseline is left alone, the date rule corrects them
        ("no baseline, after cut-over", _props(None), D(2022, 6, 1), PC, False, True),
        ("no baseline, before cut-over", _props(None), D(2021, 6, 1), PC, False, False),
        ("unparsable baseline", _props("N/A"), D(2022, 6, 1), PC, False, True),
        # Earth Search is harmonised: the reference never corrects it; we do only when it says it did not
        ("earth search new item", _props("05.10"), D(2023, 6, 1), ES, False, False),
        (
            "earth search not applied",
            _props("05.10", **{"earthsearch:boa_offset_applied": False}),
            D(2023, 6, 1),
            ES,
            True,
            False,
        ),
    ],
)
def test_offset_rules(
    case: str, props: dict[str, object], acquired: dt.date, harmonised: bool, by_baseline: bool, by_date: bool
) -> None:
    assert offset_applies("processing-baseline", props, harmonised, acquired) is by_baseline, case
    assert offset_applies("acquisition-date", props, harmonised, acquired) is by_date, case


def test_earth_search_configured_not_harmonised() -> None:
    """An Earth Search source set to ``harmonised: false``: our rule reads each item's baseline, the
    reference's never corrects Earth Search, whatever the date."""
    props, acquired = _props("05.10"), D(2023, 6, 1)
    assert offset_applies("processing-baseline", props, PC, acquired, "earth-search")
    assert not offset_applies("acquisition-date", props, PC, acquired, "earth-search")
    # a generic STAC source that is not harmonised is treated as the Planetary Computer is
    assert offset_applies("acquisition-date", props, PC, acquired, "stac")
    assert offset_applies("acquisition-date", props, PC, acquired, "planetary-computer")


def test_reference_cutover_is_strict() -> None:
    assert D(2022, 1, 25) == REFERENCE_CUTOVER
    assert not needs_offset_by_date(REFERENCE_CUTOVER, harmonised=False)
    assert needs_offset_by_date(REFERENCE_CUTOVER + dt.timedelta(days=1), harmonised=False)
    assert not needs_offset_by_date(D(2030, 1, 1), harmonised=True)


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown s2 offset rule 'by-moon'"):
        offset_applies("by-moon", {}, False, D(2022, 6, 1))
