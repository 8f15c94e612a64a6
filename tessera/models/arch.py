"""Named model architectures: the sizes `tessera.train` builds and the sizes a checkpoint records.

Reference checkpoints carry only a state dict (v1.x) or the student ``args`` (v2), and the loader
knows each family's released sizes. A checkpoint trained by `tessera.train` may have any size, so it
also carries an ``arch`` entry (`Architecture.to_dict`) from which `tessera.models.load` rebuilds
the module; the reference's own loaders ignore the extra key.

========== ========= ======= ===== ====== ===== ===========================================
name       family    d_model heads layers FF    parameters
========== ========= ======= ===== ====== ===== ===========================================
demo       v1.0      64      2     2      64    the small demo model's sizes
v1.0       v1.0      512     8     8      4096  87,841,922 (released)
v1.0-qat   v1.0-qat  512     4     4      4096  45,828,226 (released)
v1.1       v1.1      768     4     4      2048  57,708,738 (released)
v2-nano    v2        64      4     6      512   1,071,874 (derived; the README says 1.07 M)
v2-small   v2        256     4     4      1024  7,112,322 (derived; 7.11 M)
v2-medium  v2        480     4     2      3840  21,028,930 (derived; 21.03 M)
v2-large   v2        640     4     4      2560  43,831,170 (derived; 43.83 M)
========== ========= ======= ===== ====== ===== ===========================================

The v2 sizes are not in the reference repository; these reproduce the published parameter counts
(reference-spec 5.1) and nano/medium are one of several ways to do so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from tessera.errors import ArchitectureError, CheckpointError
from tessera.models import demo, v1, v1_1, v1_qat, v2
from tessera.models.blocks import TwoStreamModel
from tessera.models.spec import InputSpec

__all__ = ["ARCHITECTURES", "Architecture", "architecture", "default_for_family"]


@dataclass(frozen=True)
class Architecture:
    """Sizes of one two-stream TESSERA model."""

    name: str
    """Registry name (`ARCHITECTURES`), or ``custom``."""
    family: str
    """``v1.0``, ``v1.0-qat``, ``v1.1`` or ``v2``: block types, state-dict keys and inputs."""
    d_model: int
    """Backbone width (4 x the reference's ``latent_dim``)."""
    nhead: int
    """Attention heads per layer."""
    num_layers: int
    """Encoder layers per backbone."""
    dim_feedforward: int
    """Feed-forward width."""
    qk_norm: bool = False
    """v2 only: QK-norm encoder layers."""

    def __post_init__(self) -> None:
        if self.family not in _BUILDERS:
            raise ArchitectureError(f"unknown model family {self.family!r}; use one of {', '.join(_BUILDERS)}")
        if min(self.d_model, self.nhead, self.num_layers, self.dim_feedforward) < 1 or self.d_model % self.nhead:
            raise ArchitectureError(
                f"architecture {self.name}: d_model {self.d_model} must be a positive multiple of nhead {self.nhead} "
                "and every size positive; fix the sizes"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as stored under ``arch`` in a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Architecture:
        """Inverse of `to_dict`.

        Raises:
            CheckpointError: If an entry is missing or not a number.
        """
        try:
            return cls(
                name=str(values["name"]),
                family=str(values["family"]),
                d_model=int(values["d_model"]),
                nhead=int(values["nhead"]),
                num_layers=int(values["num_layers"]),
                dim_feedforward=int(values["dim_feedforward"]),
                qk_norm=bool(values.get("qk_norm", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the checkpoint's 'arch' entry {dict(values)!r} is incomplete ({exc}); re-save it with tessera train"
            ) from exc

    def student_args(self) -> v2.StudentArgs:
        """The v2 ``args`` of these sizes (v2 family only)."""
        return v2.StudentArgs(
            latent_dim=self.d_model // 4,
            num_layers=self.num_layers,
            nhead=self.nhead,
            dim_feedforward=self.dim_feedforward,
            enable_qk_norm=self.qk_norm,
        )

    def build(self, seed: int | None = None) -> TwoStreamModel:
        """The model in training mode; ``seed`` makes PyTorch's default initialisation reproducible.

        The global RNG is left as it was (the draws happen inside ``fork_rng``).
        """
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return _BUILDERS[self.family](self)

    def input_spec(self, source: str = "planetary-computer") -> InputSpec:
        """How inference builds this model's inputs (v1.1: the norm table of ``source``)."""
        if self.family == v1_1.FAMILY:
            return v1_1.input_spec(source)
        if self.family == v2.FAMILY:
            return v2.input_spec(128)
        return v1.input_spec()

    def output_dim(self) -> int:
        """Width of ``forward``'s output (v1.1: 192, of which 128 are saved)."""
        return v1_1.OUTPUT_DIM if self.family == v1_1.FAMILY else 128

    def encoder_payload(self, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """A checkpoint dict shaped like the reference's for this family, plus ``arch``.

        v1.x: ``{"model_state_dict": state}`` (reference-spec 3.3, 4.1, 4.2); v2: ``{"args", "model"}`` (5.1).
        """
        if self.family == v2.FAMILY:
            return {"args": self.student_args().to_dict(), "model": dict(state), "arch": self.to_dict()}
        return {"model_state_dict": dict(state), "arch": self.to_dict()}


def _build_v2(arch: Architecture) -> TwoStreamModel:
    return v2.build(arch.student_args())


def _sizes(arch: Architecture) -> dict[str, int]:
    return {
        "d_model": arch.d_model,
        "nhead": arch.nhead,
        "num_layers": arch.num_layers,
        "dim_feedforward": arch.dim_feedforward,
    }


_BUILDERS = {
    v1.FAMILY: lambda a: v1.build(**_sizes(a)),
    v1_qat.FAMILY: lambda a: v1_qat.build(**_sizes(a)),
    v1_1.FAMILY: lambda a: v1_1.build(**_sizes(a)),
    v2.FAMILY: _build_v2,
}

ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(demo.FAMILY, v1.FAMILY, 64, 2, 2, 64),
        Architecture(v1.FAMILY, v1.FAMILY, 512, 8, 8, 4096),
        Architecture(v1_qat.FAMILY, v1_qat.FAMILY, 512, 4, 4, 4096),
        Architecture(v1_1.FAMILY, v1_1.FAMILY, 768, 4, 4, 2048),
        Architecture("v2-nano", v2.FAMILY, 64, 4, 6, 512),
        Architecture("v2-small", v2.FAMILY, 256, 4, 4, 1024),
        Architecture("v2-medium", v2.FAMILY, 480, 4, 2, 3840),
        Architecture("v2-large", v2.FAMILY, 640, 4, 4, 2560),
    )
}
"""Every architecture `tessera train` can build, by name."""


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``.

    Raises:
        ArchitectureError: If the package does not know the name.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ArchitectureError(f"unknown architecture {name!r}; use one of {', '.join(ARCHITECTURES)}") from None


def default_for_family(family: str, student: v2.StudentArgs | None = None) -> Architecture:
    """The released sizes of a family (v2: the sizes in the student's ``args``)."""
    if family == v2.FAMILY and student is not None:
        return Architecture(
            "custom",
            v2.FAMILY,
            4 * student.latent_dim,
            student.nhead,
            student.num_layers,
            student.dim_feedforward,
            student.enable_qk_norm,
        )
    return architecture(family)
