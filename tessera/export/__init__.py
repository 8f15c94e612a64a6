"""Exports of the stitched products into the layouts other tools read.

* `tessera.export.geotessera`: geotessera's 0.1-degree tiles, landmasks and Parquet registries
  (`tessera.export.geotessera.export_geotessera`).
* `tessera.export.cells`: geotessera's tile naming and tile grids.

Nothing is imported here, so that registering ``tessera export`` keeps the CLI quick to start.
"""

__all__: list[str] = []
