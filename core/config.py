"""Typed, validated configuration: ``params.yaml``, composed from ``conf/`` by Hydra.

``conf/config.yaml`` holds every knob with its default-profile value; ``conf/profile/<P>.yaml``
lists only what profile ``P`` changes. ``params.yaml`` is the flat, complete composition of one
profile plus any overrides; DVC tracks it, every stage reads it, and nothing else holds values,
so what a stage ran with is exactly what ``dvc.lock`` records. Two ways to compose it, same bytes:
``dvc exp run -S profile=ci -S masks.alpha=1e-4`` (DVC's Hydra integration, .dvc/config) and
``python -m core.config compose --profile ci masks.alpha=1e-4`` (run by ``make repro``). See
docs/architecture.md, "Parameters".

Every bad value stops with one :class:`ConfigError` naming the file, the key and what was
expected (unknown and missing keys, wrong types, bounds, non-finite numbers, non-text files).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.device import PRECISIONS, DeviceError, check_device_name
from core.io import atomic_write_text
from core.tasks import FAMILIES, SHAPES

# one file per profile in conf/profile/ (tests check the two agree)
PROFILES = ("ci", "default", "paper", "paper_smoke")
CONF = Path(__file__).resolve().parents[1] / "conf"  # the Hydra config folder
CONFIGURATIONS = (
    "center_single",
    "distribute_four",
    "distribute_nine",
    "left_center_single_right_center_single",
    "up_center_single_down_center_single",
    "in_center_single_out_center_single",
    "in_distribute_four_out_center_single",
)
SUBNETS = ("vision", "attribute", "ff_residual", "relation", "logit")
SEED_MAX = 2**32 - 1  # numpy's seed range (torch accepts more)
OVERRIDE_KEY = "outside_range"  # top-level list of keys allowed outside their plausible range


class ConfigError(ValueError):
    """A bad parameter: the message names the file, the key and what was expected."""


def _spec(**kw: Any) -> dict[str, Any]:
    """Field metadata: gt/ge/lt/le bounds, choices, divisible_by, nonempty, increasing;
    ``plausible``: (lo, hi), the documented range of sensible values (both included): a value
    outside it is refused unless its key is listed in the top-level ``outside_range`` (e.g.
    ``make repro SET='masks.alpha=2 +outside_range=[masks.alpha]'``);
    ``absent``: the value of a key added after parameter files were exported, used when such a
    file lacks it (the behaviour before the key existed), so committed results stay readable;
    ``role``: what the key decides, the one place each stage and fingerprint learns which keys
    it depends on (:func:`keys`; :data:`ROLES`)."""
    return kw


# What a key decides (field metadata ``role``; a key without one shapes what it names in its
# own way, e.g. the curves a mask run logs): each fingerprint and each stage's params follow.
ROLES = {
    "plan": "which runs exist (networks, mask tasks, seeds, families): never a run's identity",
    "run": "a run's own value, recorded beside its seed and set (masks.alpha)",
    "method": "how one mask is trained: the mask method the validation suite validates",
    "evaluation": "how finished masks are evaluated (evals.nc), not how they are trained",
    "inclusion": "which finished mask runs enter the numbers (the convergence flag)",
    "execution": "how the work is computed (threads, grouping): may move floats by ~1e-7",
    "spread": "how the work is spread over processes: never changes a byte",
}


def f(**kw: Any) -> Any:
    return field(metadata=_spec(**kw))


@dataclass(frozen=True)
class DataConfig:
    image_size: int = f(gt=0, divisible_by=16, plausible=(16, 512))  # px; the original: 160
    answers: str = f(choices=("iraven", "raven"))
    configs: list[str] = f(choices=CONFIGURATIONS, nonempty=True, unique=True)
    n_per_config: int = f(ge=10, plausible=(10, 10**6))  # problems per configuration, split 6/2/2 train/val/test
    task_n: int = f(ge=10, plausible=(10, 10**6))  # problems per task-family set (task, complement, ...), split 6/2/2
    # task families to build (core.tasks.FAMILIES)
    families: list[str] = f(choices=tuple(FAMILIES), nonempty=True, unique=True)
    mmap: bool = f()  # store panels uncompressed so loaders memory-map them (large data sets)
    public_dir: str | None = f()  # folder of public RAVEN/I-RAVEN npz files; null: generate
    workers: int = f(ge=1, plausible=(1, 1024))  # generator processes


@dataclass(frozen=True)
class ModelConfig:
    arch: str = f(choices=("scl", "cnn_mlp"))
    conv_channels: list[int] = f(gt=0, nonempty=True, plausible=(1, 4096))  # per conv layer
    conv_out: int = f(gt=0, plausible=(1, 4096))  # features per panel
    attr_heads: int = f(gt=0, plausible=(1, 1024))  # attribute groups
    attr_hidden: list[int] = f(gt=0, plausible=(1, 16384))  # attribute MLP widths
    rel_heads: int = f(gt=0, plausible=(1, 1024))  # relation groups
    rel_hidden: list[int] = f(gt=0, nonempty=True, plausible=(1, 16384))  # relation MLP widths
    ff_expansion: int = f(gt=0, plausible=(1, 64))  # residual MLP width factor


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = f(choices=("adam", "adamw"))
    lr: float = f(gt=0, plausible=(1e-7, 1.0))  # SCL: 5e-3 (AdamW), the original 1e-4 (Adam)
    weight_decay: float = f(ge=0, plausible=(0, 1))  # AdamW's decoupled decay
    scheduler: str = f(choices=("constant", "cosine"))
    warmup_steps: int = f(ge=0, plausible=(0, 10**7))  # linear lr warm-up steps
    batch_size: int = f(gt=0, plausible=(1, 16384))  # problems per step
    epochs: int = f(gt=0, plausible=(1, 10**5))  # passes over the training split
    grad_clip: float = f(ge=0, plausible=(0, 10**3))  # 0 disables clipping
    milestones: list[float] = f(gt=0, lt=100, nonempty=True, increasing=True)
    val_every: int = f(gt=0, plausible=(1, 10**7))  # most steps between validations (adaptive schedule, core.train)
    val_min_every: int = f(gt=0, plausible=(1, 10**7))  # fewest steps between validations (near a milestone)
    milestone_tolerance: float = f(gt=0, plausible=(0, 50))  # points a kept checkpoint may miss its milestone by
    eval_batch_size: int = f(gt=0, plausible=(1, 65536))  # problems per inference batch (validation and test)
    val_n: int = f(ge=0, plausible=(0, 10**7))  # validation problems per check (0: the whole val split)
    checkpoint_every: int = f(gt=0, plausible=(1, 10**7))  # steps between last.pt saves
    threads: int = f(ge=1, plausible=(1, 1024))  # torch intra-op threads
    nproc: int = f(ge=1, plausible=(1, 1024))  # processes; > 1 launches torchrun
    jobs: int = f(role="spread", ge=1, plausible=(1, 1024))  # networks trained at once (`--net all`), one process each
    networks: list[int] = f(role="plan", ge=0, nonempty=True, unique=True, plausible=(0, SEED_MAX))  # one SCL per seed: data/train/net<s>
    restart_after: int = f(ge=0, absent=0, plausible=(0, 10**7))  # a network still at chance this many steps in is re-initialised (0: never)
    max_restarts: int = f(ge=0, absent=0, plausible=(0, 100))  # at most this many re-initialisations per network

    def __post_init__(self) -> None:
        check_cross_keys(self)


@dataclass(frozen=True)
class MaskConfig:
    tasks: list[str] = f(role="plan", choices=SHAPES, nonempty=True, unique=True)
    alpha: float = f(role="run", gt=0, plausible=(1e-12, 1.0))  # main runs (all checkpoints x tasks x seeds)
    alpha_sweep: list[float] = f(role="plan", gt=0, unique=True, plausible=(1e-12, 1.0))  # at the last checkpoint, seed seeds[0]
    seeds: list[int] = f(role="plan", ge=0, nonempty=True, unique=True, plausible=(0, SEED_MAX))
    steps: int = f(role="method", gt=0, plausible=(1, 10**7))  # mask-training steps per run
    lr: float = f(role="method", gt=0, plausible=(1e-6, 10.0))  # Adam on the logits; studied 0.01-0.3
    init: float = f(role="method", plausible=(-20, 20))  # initial logit (sigmoid 2e-9..1-2e-9 at the ends)
    tau: float = f(role="method", gt=0, plausible=(1e-3, 100))  # Gumbel-sigmoid temperature
    batch_size: int = f(role="method", gt=0, plausible=(1, 16384))  # problems per mask step
    n_samples: int = f(role="method", ge=1, plausible=(1, 1024))  # mask samples per step
    log_every: int = f(gt=0, plausible=(1, 10**7))  # steps between curve points
    eval_n: int = f(role="evaluation", ge=0, plausible=(0, 10**7))  # problems for final accuracies (0: the whole eval split)
    include: list[str] = f()  # parameter-name prefixes to mask; empty: every parameter
    curve_n: int = f(ge=0, plausible=(0, 10**7))  # task val problems for the logged curve accuracies (0: all)
    snapshots: int = f(ge=1, plausible=(1, 1000))  # logged steps whose logits of one parameter are kept (figure)
    snapshot_param: str | None = f()  # that parameter; null: the most nearly square 2-D one
    threads: int = f(role="execution", ge=1, plausible=(1, 1024))  # torch intra-op threads of a mask run
    workers: int = f(role="spread", ge=1, plausible=(1, 1024))  # mask runs at a time (core.sweep's process executor / local Ray)
    mask_norm: bool = f()  # also mask BatchNorm/LayerNorm scale and shift (the original study)
    lr_anneal: float = f(role="method", ge=0, le=1)  # last fraction of the run whose lr falls to 0 (cosine)
    readout: float = f(role="method", absent=0.0, plausible=(-20, 20))  # read-out: a weight is kept when its logit > readout (0: p > 0.5)
    noise_anneal: float = f(role="method", ge=0, le=1, absent=0.0)  # last fraction of the run whose sampling noise falls to 0
    estimator: str = f(role="method", choices=("straight_through", "hard_concrete"), absent="straight_through")  # mask gradient: Csordas' straight-through hard masks, or Louizos' hard concrete
    clamp: float = f(role="method", ge=0, absent=0.0, plausible=(0, 100))  # logits kept in [-clamp, clamp] after each step (0: unbounded)
    prune_n: int = f(role="method", ge=0, absent=0, plausible=(0, 10**5))  # training problems on which inert kept weights are found and dropped (0: none)
    converge_window: float = f(role="inclusion", gt=0, le=1)  # last fraction of the run the convergence check reads
    converge_density: float = f(role="inclusion", ge=0, plausible=(0, 100))  # max read-out density change (points) in that window
    converge_acc: float = f(role="inclusion", ge=0, plausible=(0, 100))  # max masked task accuracy change (points) in that window
    degenerate_tol: float = f(role="evaluation", gt=0, plausible=(1e-12, 1))  # 8 logits 'constant': spread <= tol * max(1, max |logit|)
    degenerate_max: float = f(role="evaluation", ge=0, le=1)  # above this degenerate fraction: no accuracy reported
    families: list[str] = f(role="plan", choices=tuple(FAMILIES), nonempty=True, unique=True)  # core.tasks families whose masks train
    complement_masks: list[str] = f(role="plan", choices=tuple(FAMILIES), unique=True)  # families whose complements + reference get masks (seeds[0])
    families_last: list[str] = f(role="plan", choices=tuple(FAMILIES), unique=True)  # families masked at the last checkpoint only
    tasks_early: list[str] = f(role="plan", choices=SHAPES, unique=True, absent=[])  # shapes masked before the last checkpoint ([]: tasks)
    gpu_share: float = f(role="spread", gt=0, le=1)  # GPU fraction one mask run requests (ray executor, CUDA)
    group: int = f(role="execution", ge=1, le=256, absent=1)  # masks of one checkpoint trained in one step (core.maskgroup)

    def __post_init__(self) -> None:
        check_cross_keys(self)


@dataclass(frozen=True)
class MetricsConfig:
    alpha_tolerance: float = f(ge=0, plausible=(0, 100))  # points of task accuracy an alpha may lose to be chosen
    ci: float = f(gt=0, lt=1)  # confidence level of intervals across seeds
    alpha_min_seeds: int = f(ge=1, plausible=(1, 1000))  # seeds an alpha needs to be a selection candidate
    dispersity_samples: int = f(ge=0, plausible=(0, 10**6))  # random masks per tensor, dispersity reference


@dataclass(frozen=True)
class FiguresConfig:
    dpi: int = f(gt=0, plausible=(10, 2400))  # PNG dots per inch
    font_size: float = f(gt=0, plausible=(2, 72))  # points at the printed size
    width_one: float = f(gt=0, plausible=(0.5, 40))  # inches, one-column figure
    width_two: float = f(gt=0, plausible=(0.5, 40))  # inches, two-column (text-width) figure
    problem_split: str = f(choices=("train", "val", "test"))
    evolution_task: str = f(choices=SHAPES)  # mask_evolution's task


@dataclass(frozen=True)
class ControlConfig:
    n: int = f(ge=50, plausible=(50, 10**7), absent=12000)  # problems per task set (60/20/20 train/val/test)
    milestone: float = f(gt=0, lt=100, absent=45.0)  # the specialists' validation accuracy (%)
    tolerance: float = f(gt=0, plausible=(0, 50), absent=5.0)  # points a specialist may miss it by
    seeds: list[int] = f(ge=0, nonempty=True, unique=True, plausible=(0, SEED_MAX), absent=[0, 1])  # mask seeds per task (>= 2: the same-task overlap)
    eval_n: int = f(ge=1, plausible=(1, 10**7), absent=800)  # test problems per task for the accuracies
    curve_n: int = f(ge=1, plausible=(1, 10**7), absent=400)  # validation problems for the mask curves


@dataclass(frozen=True)
class PaperConfig:
    pdf: bool = f(absent=True)  # false: the paper stage writes a note instead of the PDF (no TeX)


@dataclass(frozen=True)
class Config:
    profile: str = f(choices=PROFILES)  # conf/profile/<profile>.yaml
    seed: int = f(ge=0, plausible=(0, SEED_MAX))  # data generation
    device: str = f()  # auto (CUDA if available, else CPU), cpu, cuda, cuda:N
    precision: str = f(choices=PRECISIONS)  # fp32, bf16 (autocast), auto (bf16 where native)
    data: DataConfig = f()
    model: ModelConfig = f()
    train: TrainConfig = f()
    masks: MaskConfig = f()
    metrics: MetricsConfig = f()
    figures: FiguresConfig = f()
    control: ControlConfig = f(absent={})  # the composite positive control (core.control)
    paper: PaperConfig = f(absent={})
    # keys whose value may leave its plausible range (the hard bounds still hold); [] normally
    outside_range: list[str] = f(unique=True, absent=[])

    def __post_init__(self) -> None:
        try:
            check_device_name(self.device)
        except DeviceError as err:
            raise ConfigError(str(err)) from None

    @property
    def checkpoints(self) -> list[str]:
        """Checkpoint names, one per milestone: ``scl_50`` ... (``cnn_mlp_50`` for the baseline)."""
        return [checkpoint_name(self.model.arch, m) for m in self.train.milestones]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_cross_keys(section: Any) -> None:
    """Every check that reads more than one key, in one place. A section's checks run when the
    section is built (by :func:`load` and :func:`from_dict`, before any stage does anything,
    and by ``dataclasses.replace``, so settings derived in code are checked too); single keys
    are checked by their field metadata (:func:`_spec`)."""
    if isinstance(section, TrainConfig):
        tc = section
        if tc.val_min_every > tc.val_every:
            raise ConfigError(f"train.val_min_every ({tc.val_min_every}) must not exceed "
                              f"train.val_every ({tc.val_every})")
        if tc.batch_size % tc.nproc:
            raise ConfigError(f"train.batch_size ({tc.batch_size}) must be divisible by "
                              f"train.nproc ({tc.nproc}): each process takes an equal share")
    elif isinstance(section, MaskConfig):
        mc = section
        if mc.batch_size < mc.n_samples:
            raise ConfigError(f"masks.batch_size ({mc.batch_size}) must be >= masks.n_samples "
                              f"({mc.n_samples}): each mask sample gets a chunk of the batch")
        extra = [t for t in mc.tasks_early if t not in mc.tasks]
        if extra:
            raise ConfigError(f"masks.tasks_early: {extra[0]!r} is not in masks.tasks "
                              f"{list(mc.tasks)} (expected a subset)")


def keys(cls: type, *roles: str) -> tuple[str, ...]:
    """The keys of section ``cls`` whose ``role`` is one of ``roles``, in field order."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"keys: unknown role {unknown[0]!r} (expected one of {', '.join(ROLES)})")
    return tuple(fl.name for fl in dataclasses.fields(cls) if fl.metadata.get("role") in roles)


def checkpoint_name(arch: str, milestone: float) -> str:
    m = f"{milestone:g}".replace(".", "p")
    return f"{arch}_{m}"


def config_hash(cfg: Config | dict[str, Any], sections: list[str] | None = None) -> str:
    """sha256 (hex) of the resolved configuration as canonical JSON (sorted keys, compact);
    with ``sections``, of those top-level keys only (what one stage depends on)."""
    values = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    # a key added later (``absent`` metadata) at its absent value leaves the hash unchanged:
    # it names the behaviour of files written before the key existed
    for name, fl in ((fl.name, fl) for fl in dataclasses.fields(Config)):
        tp = fl.type if not isinstance(fl.type, str) else typing.get_type_hints(Config)[name]
        if dataclasses.is_dataclass(tp) and isinstance(values.get(name), dict):
            section = dict(values[name])
            for sub in dataclasses.fields(tp):
                if "absent" in sub.metadata and section.get(sub.name) == sub.metadata["absent"]:
                    section.pop(sub.name)
            values[name] = section
            if not section and "absent" in fl.metadata:  # a section added later, all absent
                values.pop(name)
        elif "absent" in fl.metadata and values.get(name) == fl.metadata["absent"]:
            values.pop(name, None)
    if sections is not None:
        values = {k: values[k] for k in sections if k in values}  # absent sections: none
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- validation

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_describe(inner).removeprefix('an ').removeprefix('a ')}s"
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args) + " or null"
    return _TYPE_NAMES.get(tp, str(tp))


def _check_scalar(value: Any, tp: Any, where: str, meta: dict[str, Any]) -> Any:
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(value, str):  # PyYAML reads 1e-5 (no dot) as a string
            try:
                value, ok = float(value), True
            except ValueError:
                ok = False
        if ok:
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    ops = {"gt": float.__gt__, "ge": float.__ge__, "lt": float.__lt__, "le": float.__le__}
    for key, op in ops.items():
        if key in meta and not op(float(value), float(meta[key])):
            raise ConfigError(
                f"{where}: expected {_describe(tp)} {_bounds_text(meta)}, got {value!r}"
            )
    if "divisible_by" in meta and value % meta["divisible_by"]:
        raise ConfigError(
            f"{where}: expected a multiple of {meta['divisible_by']}, got {value!r}"
        )
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where}: expected one of {', '.join(meta['choices'])}; got {value!r}")
    return value


def _bounds_text(meta: dict[str, Any]) -> str:
    sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return " and ".join(f"{sym[k]} {meta[k]}" for k in sym if k in meta)


def _check_value(value: Any, tp: Any, where: str, meta: dict[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _check_value(value, inner, where, meta)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
        if meta.get("nonempty") and not value:
            raise ConfigError(f"{where}: expected a non-empty list")
        out = [_check_scalar(v, inner, f"{where}[{i}]", meta) for i, v in enumerate(value)]
        if meta.get("unique") and len(set(out)) != len(out):
            raise ConfigError(f"{where}: expected distinct values, got {value!r}")
        if meta.get("increasing") and any(a >= b for a, b in zip(out, out[1:])):
            raise ConfigError(f"{where}: expected strictly increasing values, got {value!r}")
        return out
    if dataclasses.is_dataclass(tp):
        return build_section(tp, value, where)
    return _check_scalar(value, tp, where, meta)


def build_section(cls: type, raw: Any, where: str) -> Any:
    """A validated ``cls`` (a config dataclass) from ``raw``; errors name ``where`` + key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'parameters'}: expected a mapping of {cls.__name__} keys, "
                          f"got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {fl.name: fl for fl in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_join(where, unknown[0])}: unknown key (expected one of {', '.join(fields)})"
        )
    raw = {**{n: fl.metadata["absent"] for n, fl in fields.items()
              if n not in raw and "absent" in fl.metadata}, **raw}
    missing = [name for name in fields if name not in raw]
    if missing:
        raise ConfigError(f"{_join(where, missing[0])}: missing key ({_describe(hints[missing[0]])})")
    kwargs = {
        name: _check_value(raw[name], hints[name], _join(where, name), dict(fl.metadata))
        for name, fl in fields.items()
    }
    return cls(**kwargs)


# --------------------------------------------------------------------------- loading


def _duplicates(node: Any, where: str, path: str = "") -> None:
    """One ConfigError for the first key that a mapping of the YAML ``node`` repeats."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key != "<<":
                if key in seen:
                    raise ConfigError(f"{where}: duplicate key {_join(path, key)!r} at line "
                                      f"{line} (first at line {seen[key]}); YAML would keep "
                                      "the last silently: remove one")
                seen[key] = line
            _duplicates(value_node, where, _join(path, str(key)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicates(item, where, f"{path}[{i}]")


def load_yaml(text: str, where: str | Path) -> Any:
    """The project's one YAML reader (parameters, conf/, dvc.yaml, the control's params):
    ``yaml.safe_load`` that refuses a repeated key with one ConfigError naming ``where`` (the
    file) and the key, and invalid YAML likewise."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _duplicates(node, str(where))
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from None


def _read_yaml(path: Path) -> Any:
    """The YAML mapping in ``path``; one ConfigError naming the file for anything else."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (expected the parameters file)") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (byte {err.start} is not UTF-8); "
                          "expected YAML parameters") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (NUL byte); expected YAML parameters")
    raw = load_yaml(text, path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters, got {type(raw).__name__}")
    return raw


def compose_text(profile: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                 conf: str | Path = CONF) -> str:
    """``params.yaml`` text for ``profile`` + Hydra ``overrides``, composed from ``conf`` exactly
    as ``dvc exp run -S profile=P -S key=value`` composes it (same function calls, same bytes)."""
    conf = Path(conf).resolve()
    if not (conf / "config.yaml").is_file():
        raise ConfigError(f"{conf}/config.yaml: file not found (expected the Hydra config)")
    if profile is not None and profile not in PROFILES:
        raise ConfigError(f"profile: unknown profile {profile!r} "
                          f"(expected one of {', '.join(PROFILES)})")
    # Hydra takes ~0.2 s per composition: cache by the conf files' names, sizes and times
    stamp = tuple((str(q), q.stat().st_mtime_ns, q.stat().st_size)
                  for q in sorted(conf.rglob("*.yaml")))
    return _compose_text(profile, tuple(overrides), str(conf), stamp)


@functools.lru_cache(maxsize=64)
def _compose_text(profile: str | None, overrides: tuple[str, ...], conf: str,
                  stamp: tuple[Any, ...]) -> str:
    # hydra costs ~0.2 s to import (measured); only composing needs it, loading does not.
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for q in sorted(Path(conf).rglob("*.yaml")):  # Hydra keeps the last of a repeated key
        load_yaml(q.read_text(), q)
    args = ([f"profile={profile}"] if profile else []) + list(overrides)
    try:
        with initialize_config_dir(str(conf), version_base=None):
            cfg = compose(config_name="config", overrides=args)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"{conf}: {' '.join(str(err).split())}") from None
    return OmegaConf.to_yaml(cfg)


def compose(profile: str | None = None, overrides: list[str] | tuple[str, ...] = (),
            conf: str | Path = CONF) -> dict[str, Any]:
    """The plain (unvalidated) dict of :func:`compose_text`; tests edit it, then :func:`from_dict`."""
    return load_yaml(compose_text(profile, overrides, conf), f"{conf} (composed)")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _fields_by_path(cls: type = Config, where: str = "") -> dict[str, tuple[Any, dict]]:
    """``{"masks.lr": (type, metadata), ...}`` for every leaf key of ``cls``."""
    hints, out = typing.get_type_hints(cls), {}
    for fl in dataclasses.fields(cls):
        tp, path = hints[fl.name], _join(where, fl.name)
        if dataclasses.is_dataclass(tp):
            out.update(_fields_by_path(tp, path))
        else:
            out[path] = (tp, dict(fl.metadata))
    return out


def _outside(value: Any, meta: dict[str, Any]) -> Any:
    """The first of ``value`` (a number or a list of them) outside ``meta['plausible']``."""
    if "plausible" not in meta or value is None:
        return None
    lo, hi = meta["plausible"]
    for v in value if isinstance(value, list) else [value]:
        if not lo <= v <= hi:
            return v
    return None


def _range_error(path: str, value: Any, meta: dict[str, Any], where: str) -> ConfigError:
    lo, hi = meta["plausible"]
    return ConfigError(
        f"{where}: {value!r} is outside the plausible range [{lo:g}, {hi:g}] of {path} "
        f"(core/config.py documents it); refused before anything runs. If you mean it, "
        f"allow it explicitly: add {OVERRIDE_KEY}: [{path}] to the parameters (Hydra: "
        f"+{OVERRIDE_KEY}=[{path}])")


def check_ranges(cfg: Config) -> Config:
    """Every numeric setting within its documented plausible range, unless its key is listed
    in ``outside_range``; one ConfigError naming the key otherwise."""
    fields = _fields_by_path()
    unknown = [k for k in cfg.outside_range if "plausible" not in fields.get(k, (0, {}))[1]]
    if unknown:
        raise ConfigError(f"{OVERRIDE_KEY}: {unknown[0]!r} is not a numeric setting with a "
                          "plausible range (expected keys such as masks.alpha)")
    flat = _flat(cfg.to_dict())
    for path, (_, meta) in fields.items():
        bad = _outside(flat.get(path), meta)
        if bad is not None and path not in cfg.outside_range:
            raise _range_error(path, bad, meta, path)
    return cfg


def check_field(path: str, value: Any, where: str, allowed: Sequence[str] = ()) -> Any:
    """Validate one value for the key ``path`` (e.g. ``masks.lr``) as the parameters file's
    value would be: type, finiteness, hard bounds and plausible range; errors name ``where``
    (a command-line flag, say) and the key. Returns the checked value."""
    fields = _fields_by_path()
    if path not in fields:
        raise ConfigError(f"{where}: {path} is not a parameter")
    tp, meta = fields[path]
    value = _check_value(value, tp, f"{where} ({path})", meta)
    bad = _outside(value, meta)
    if bad is not None and path not in allowed:
        raise _range_error(path, bad, meta, where)
    return value


def from_dict(values: dict[str, Any], source: str = "params.yaml") -> Config:
    """Validate a flat parameter mapping (``profile`` and one key per section), plausible
    ranges included (:func:`check_ranges`)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of parameters")
    try:
        return check_ranges(build_section(Config, values, ""))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load(path: str | Path = "params.yaml", profile: str | None = None) -> Config:
    """Load and validate a configuration.

    ``path`` is a flat, complete parameters file (``params.yaml``, composed from ``conf/``).
    With ``profile``, the file must hold that profile; when it holds another one, the profile
    is composed from the ``conf/`` folder beside ``path`` (else the repository's), unchanged by
    any experiment override in the file.
    """
    path = Path(path)
    raw = _read_yaml(path)
    if profile is None or raw.get("profile") == profile:
        return from_dict(raw, str(path))
    conf = path.parent / "conf" if (path.parent / "conf").is_dir() else CONF
    return from_dict(compose(profile, conf=conf), f"{conf}/profile/{profile}.yaml")


# The parameters a training run depends on (with train.networks left out; the data enter
# through their fingerprint, so data keys that do not change main/ do not count).
TRAIN_SECTIONS = ["seed", "precision", "model", "train"]


def train_sections(cfg: Config) -> dict[str, Any]:
    """The parameters one network's training depends on: ``TRAIN_SECTIONS`` without the
    train keys of role ``plan`` (``train.networks``: adding a network changes no other
    network's run)."""
    values = cfg.to_dict()
    values["train"] = {k: v for k, v in values["train"].items()
                       if k not in keys(TrainConfig, "plan")}
    return {k: values[k] for k in TRAIN_SECTIONS}


def train_hash(cfg: Config) -> str:
    """``config_hash`` of :func:`train_sections` (recorded in training.nc and checkpoints)."""
    return config_hash(train_sections(cfg))



def alpha_label(alpha: float) -> str:
    """A short, filesystem-safe label: 1e-05 -> ``1e-5``, 2.2e-06 -> ``2p2e-6``."""
    mantissa, exponent = f"{alpha:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.').replace('.', 'p')}e{int(exponent)}"


def _flat(d: dict[str, Any], where: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, _join(where, key)))
        else:
            out[_join(where, key)] = value
    return out


def write_params(profile: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                 out: str | Path = "params.yaml", conf: str | Path = CONF) -> list[str]:
    """Compose ``profile`` + ``overrides`` into ``out`` (validated first; the file is rewritten
    only when its bytes change). Returns the changed keys as ``key: old -> new`` lines."""
    text = compose_text(profile, overrides, conf)
    new = load_yaml(text, f"{conf} (composed)")
    from_dict(new, f"{out} (composed from {conf}, profile {new.get('profile')!r})")
    out = Path(out)
    old: dict[str, Any] = {}
    if out.exists():
        if out.read_text(errors="replace") == text:
            return []
        try:
            old = _flat(_read_yaml(out))
        except ConfigError:
            old = {}
    atomic_write_text(out, text)
    flat = _flat(new)
    return [f"{k}: {old.get(k, '(absent)')!r} -> {flat.get(k, '(absent)')!r}"
            for k in sorted(set(old) | set(flat)) if old.get(k, None) != flat.get(k, None)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.config", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compose", help="compose conf/ (a profile + overrides) into params.yaml, "
                       "as `dvc exp run -S profile=P -S key=value` does")
    c.add_argument("--profile", choices=PROFILES, default=None, help="default: conf's default")
    c.add_argument("--conf", default=str(CONF))
    c.add_argument("--out", default="params.yaml")
    c.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. masks.alpha=1e-4 "
                   "'masks.seeds=[0,1]'")
    s = sub.add_parser("show", help="print the validated configuration and its hash")
    s.add_argument("--params", default="params.yaml")
    s.add_argument("--profile", choices=PROFILES, default=None)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "compose":
            changed = write_params(args.profile, args.overrides, args.out, args.conf)
            cfg = load(args.out)
            print(f"{args.out}: profile {cfg.profile}, config hash {config_hash(cfg)[:12]}"
                  + ("" if changed else " (unchanged)"))
            for line in changed[:40]:
                print(f"  {line}")
            if len(changed) > 40:
                print(f"  ... and {len(changed) - 40} more keys")
        else:
            cfg = load(args.params, args.profile)
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            print(f"# config hash {config_hash(cfg)}")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
