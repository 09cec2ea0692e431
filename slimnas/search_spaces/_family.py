"""What slimnas needs from a space family, declared once (see ``docs/design.md``, "Extension points"). Plain Python.

A *space family* is a kind of network slimnas can search: EfficientFormer
(:mod:`slimnas.search_spaces.efficientformer`) is one; an outside package adds another by subclassing
:class:`SpaceFamily` and naming an instance in the ``slimnas.spaces`` entry-point group (:mod:`slimnas.registry`).

The encoding every family shares (:class:`~slimnas.search_spaces.Arch`, :class:`~slimnas.search_spaces.SearchSpace`):
a network is ``num_stages`` stages, each with a width (a multiple of ``width_step``) and a sequence of *slots*; a slot
is one MetaPath of the supernet and holds a block kind or the identity ``"id"``. A family has a *lead* block kind and
optionally a *tail* kind; in every stage the tail blocks form a contiguous run at the end of the active blocks
(EfficientFormer: MB4D blocks, then MB3D blocks, the paper's dimension-consistent design). Every counting, sampling,
slimming action (the tail kind is what the paper's "remove an MB3D" action removes) and baseline encoding of slimnas is
written against this encoding, so a family declares only its constants and its networks:

================================  =================================================================================
member                            what it is
================================  =================================================================================
constants                         ``name``, ``lead``, ``tail``, ``num_stages``, ``strides``, ``width_step``,
                                  ``img_step``, ``default_kinds`` (each stage's allowed kinds), ``kind_codes``
``space_presets``/``arch_presets``  named spaces and named archs
``max_arch(space)``               the densest standalone arch of a space (default: every slot the lead kind, the last
                                  stage all tail when it may)
``parts`` / ``parts_of_space``    the parts a network is made of: the entries of a latency table (:class:`Part`)
``part_groups``                   part kinds a table's calibration corrects together
``features`` / ``part_sums``      optional vectorized prediction (default: a loop over ``parts``)
``part_module``                   the module and example input a latency backend times for one part (torch)
``network_parts``                 a whole network and the modules it runs, one per part, in order (torch)
``build_model`` / ``deploy``      the standalone network of an arch and its deployment (inference) form (torch)
``supernet``                      the weight-sharing supernet of a space (torch; see :class:`SuperNetLike`)
================================  =================================================================================

The torch members import torch only when called, so the family itself (and with it the encoding) loads without torch.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from slimnas.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ._arch import Arch
    from ._space import SearchSpace

__all__ = ["IDENTITY", "DEFAULT_FAMILY", "Part", "SpaceFamily", "SuperNetLike", "get_family"]

#: The identity kind: a slot that holds no block (the MetaPath's ``I`` path). Shared by every family.
IDENTITY = "id"
#: The family of an arch or space that names none (files written before families existed are EfficientFormer's).
DEFAULT_FAMILY = "efficientformer"


@dataclass(frozen=True, order=True)
class Part:
    """One latency-table entry: a part ``kind`` of stage ``stage`` (0-based) with ``c_in`` input and ``c_out`` output
    channels. The kinds are the family's (:attr:`SpaceFamily.part_kinds`)."""

    kind: str
    stage: int
    c_in: int
    c_out: int

    def __str__(self) -> str:
        if self.kind == "downsample":
            return f"downsample(stage {self.stage + 1}, {self.c_in}->{self.c_out})"
        if self.kind == "stem":
            return f"stem(width {self.c_out})"
        if self.kind == "head":
            return f"head(width {self.c_in}, {self.c_out} classes)"
        return f"{self.kind}(stage {self.stage + 1}, width {self.c_out})"


class SuperNetLike(Protocol):
    """What the trainers, the evaluator and the search job use of a family's supernet (a ``torch.nn.Module``).

    ``space``, ``num_classes``, ``tau``; ``forward(x, arch=None)`` (Gumbel-sampled mixture, or exactly ``arch``);
    ``arch_parameters()`` (alpha, one tensor per MetaPath, ordered like :attr:`SearchSpace.kinds` of its stage);
    ``weight_parameters()``; ``alphas()``; ``importance()`` (an :class:`~slimnas.search_spaces.Importance`);
    ``set_sampling(mode, tau, noise)``; ``seed_sampling(seed)``; ``extract(arch)`` (the standalone network with the
    supernet's weights). Optional: ``sort_channels()`` with ``channel_groups()`` (channel importance ordering),
    ``no_weight_decay()``, ``load_timm(path)``, ``distilled_training``.
    """

    space: Any
    num_classes: int

    def extract(self, arch: Any) -> Any: ...

    def importance(self) -> Any: ...


class SpaceFamily(abc.ABC):
    """A family of networks slimnas can search (see the module docstring for the members)."""

    name: ClassVar[str] = ""
    lead: ClassVar[str] = ""
    tail: ClassVar[str | None] = None
    num_stages: ClassVar[int] = 0
    strides: ClassVar[tuple[int, ...]] = ()
    width_step: ClassVar[int] = 16
    img_step: ClassVar[int] = 32
    #: Each stage's allowed kinds in a space that does not say (identity included where a stage may shrink).
    default_kinds: ClassVar[tuple[tuple[str, ...], ...]] = ()
    #: One character per kind for ``str(arch)``.
    kind_codes: ClassVar[Mapping[str, str]] = {}
    #: A readable name per kind for messages (EfficientFormer: ``MB4D``, ``MB3D``).
    kind_labels: ClassVar[Mapping[str, str]] = {}
    #: Named spaces: ``SearchSpace`` fields (``img_size``, ``max_widths``, ``slots``, optional ``kinds``, ...).
    space_presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Named archs: ``widths``, ``depths`` and ``num_tail`` (tail blocks closing the last stage).
    arch_presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: The part kinds of this family's latency tables, in build order.
    part_kinds: ClassVar[tuple[str, ...]] = ()
    #: Groups of part kinds that a calibrated table corrects with one coefficient (default: one group per kind).
    part_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    # ------------------------------------------------------------------ the encoding
    @property
    def block_kinds(self) -> tuple[str, ...]:
        """The active kinds in stage order: lead, then tail."""
        return (self.lead,) if self.tail is None else (self.lead, self.tail)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every slot kind, in the order a supernet keeps its architecture parameters (identity last)."""
        return self.block_kinds + (IDENTITY,)

    def group_of(self, part_kind: str) -> str:
        """The calibration group of a part kind."""
        for group, members in self.part_groups.items():
            if part_kind in members:
                return group
        return part_kind

    def max_arch(self, space: SearchSpace) -> Arch:
        """The densest standalone arch of ``space``: maximum widths, every slot active; the last stage all tail
        blocks when it allows them (EfficientFormer's L7 ends that way), every other stage all lead blocks."""
        from ._arch import Arch

        blocks = []
        last = self.num_stages - 1
        for s in range(self.num_stages):
            allowed = space.kinds[s]
            kind = self.tail if (s == last and self.tail in allowed) or self.lead not in allowed else self.lead
            blocks.append((kind,) * space.slots[s])
        return Arch(space.img_size, space.max_widths, tuple(blocks), family=self.name)

    # ------------------------------------------------------------------ latency parts (plain Python)
    @abc.abstractmethod
    def parts(self, arch: Arch, num_classes: int = 1000, in_chans: int = 3) -> list[Part]:
        """The parts of ``arch``'s standalone network, in network order (identities contribute nothing)."""

    @abc.abstractmethod
    def parts_of_space(self, space: SearchSpace, num_classes: int = 1000, in_chans: int = 3) -> list[Part]:
        """Every part any arch of ``space`` can be made of (the entries of a complete table), in build order."""

    def features(self, archs: Sequence[Arch]) -> Any:
        """Many archs in the form :meth:`part_sums` reads (picklable: the latency service receives it)."""
        return tuple(archs)

    def num_rows(self, feats: Any) -> int:
        """How many archs ``feats`` holds."""
        return len(feats)

    def part_summer(self, values: Mapping[Part, float], space: SearchSpace, num_classes: int, in_chans: int,
                    repeat_values: Mapping[Part, float] | None = None) -> Callable[[Any], dict[str, Any]]:
        """A function from :meth:`features` to, per part kind, each arch's sum of ``values`` over its parts (float
        arrays; ``nan`` where a part has no value). Built once per table and statistic. ``repeat_values``: the value
        of a part that comes right after an identical part (a repeated block; default: ``values``). The default
        loops over :meth:`parts`; a family may vectorize it (EfficientFormer does)."""
        import numpy as np

        repeats = values if repeat_values is None else repeat_values

        def sums(feats: Any) -> dict[str, Any]:
            archs = list(feats)
            out = {kind: np.zeros(len(archs)) for kind in self.part_kinds}
            for row, arch in enumerate(archs):
                previous = None
                for part in self.parts(arch, num_classes, in_chans):
                    out[part.kind][row] += (repeats if part == previous else values).get(part, np.nan)
                    previous = part
            return out

        return sums

    def parts_of_row(self, feats: Any, row: int, num_classes: int, in_chans: int) -> list[Part]:
        """The parts of arch ``row`` of ``feats``, in network order (to name a missing entry)."""
        return self.parts(list(feats)[row], num_classes, in_chans)

    # ------------------------------------------------------------------ networks (torch, imported when called)
    @abc.abstractmethod
    def build_model(self, arch: Arch, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> Any:
        """The standalone network of ``arch`` (a ``torch.nn.Module``; ``kwargs``: e.g. ``drop_rate``)."""

    def deploy(self, model: Any) -> Any:
        """The deployment (inference) form of a standalone network (default: the network itself)."""
        return model

    @abc.abstractmethod
    def supernet(self, space: SearchSpace, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> Any:
        """The supernet of ``space`` (see :class:`SuperNetLike`; ``kwargs``: ``mode``, ``tau``, ``noise``,
        ``drop_rate``, ``drop_path_rate``)."""

    @abc.abstractmethod
    def part_module(self, part: Part, img_size: int, batch: int = 1, form: str = "fused") -> tuple[Any, Any]:
        """``(module, example input)`` a backend times for one part, eval mode, float32, on CPU (``form``:
        ``"fused"``, the deployment form, or ``"eager"``, the ``build_model`` modules)."""

    @abc.abstractmethod
    def network_parts(self, arch: Arch, batch: int = 1, form: str = "fused", num_classes: int = 1000,
                      in_chans: int = 3) -> tuple[Any, list[Any], Any]:
        """``(network, modules, example)``: the network in ``form`` and the modules it runs, one per part of
        :meth:`parts` (calling them in turn computes the network)."""

    def reference_archs(self, space: SearchSpace) -> list[tuple[str, Arch]]:
        """``(name, arch)`` of the family's named archs that lie in ``space`` (validated first by ``lut validate``);
        default: the :attr:`arch_presets` that fit the space's input size and slots."""
        from ._arch import Arch

        out = []
        for name in self.arch_presets:
            try:
                arch = Arch.preset(name, img_size=space.img_size, slots=space.slots, family=self.name)
            except ValueError:
                continue
            if space.contains(arch):
                out.append((name, arch))
        return out

    def __repr__(self) -> str:
        return f"<space family {self.name!r}>"


_FAMILIES: dict[str, SpaceFamily] = {}


def get_family(name: str) -> SpaceFamily:
    """The space family registered under ``name`` (:data:`slimnas.registry.SPACES`), checked and cached."""
    family = _FAMILIES.get(name)
    if family is not None:
        return family
    from slimnas.registry import SPACES

    family = SPACES.get(name)
    if not isinstance(family, SpaceFamily):
        raise InputError(f"space family {name!r}: expected a SpaceFamily instance, got {type(family).__name__}")
    if family.name != name:
        raise InputError(f"space family {name!r}: the object says its name is {family.name!r}")
    if len(family.strides) != family.num_stages or len(family.default_kinds) != family.num_stages:
        raise InputError(f"space family {name!r}: strides and default_kinds need {family.num_stages} stages")
    _FAMILIES[name] = family
    return family


def forget_family(name: str) -> None:
    """Drop a cached family (after :meth:`slimnas.registry.Registry.unregister`)."""
    _FAMILIES.pop(name, None)


def iter_families() -> Iterable[SpaceFamily]:
    """Every registered family (imports them)."""
    from slimnas.registry import SPACES

    return [get_family(name) for name in SPACES.names()]
