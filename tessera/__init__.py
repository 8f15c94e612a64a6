"""tessera-pipeline: TESSERA embeddings from a region of interest and a year."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tessera-pipeline")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
