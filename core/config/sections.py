"""The configuration's sections: every key with its type, bounds, role and one-line comment
(field metadata, :func:`_spec`), the checks that read several keys (:func:`check_cross_keys`),
and the fingerprints derived from them (:func:`config_hash`, :func:`train_hash`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from core.device import PRECISIONS, DeviceError, check_device_name
from core.tasks import FAMILIES, SHAPES

# one file per profile in conf/profile/ (tests check the two agree)
PROFILES = ("ci", "default", "paper", "paper_smoke")
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
