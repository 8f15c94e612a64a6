"""Test and demo helpers, kept apart from production code (as ``odc.stac.testing``).

* `tessera.testing.world`: the seeded Sentinel-like demo world (``tessera demo-data``).
* `tessera.testing.servers`: a real pgstac STAC API on 127.0.0.1 (``tessera serve``).
* `tessera.testing.rangeserver`: a range-serving COG host with seeded fault injection.
* `tessera.testing.demo`: ``tessera demo``, the offline demo end to end.
* `tessera.testing.signing`: a fake signer (``sign: python:tessera.testing.signing:fake_sas``).

The demo ROI and run config are package data under ``tessera/testing/data``.
"""
