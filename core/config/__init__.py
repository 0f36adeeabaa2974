"""Typed, validated configuration: ``params.yaml``, composed from ``conf/`` by Hydra.

``conf/config.yaml`` holds every knob with its default-profile value; ``conf/profile/<P>.yaml``
lists only what profile ``P`` changes. ``params.yaml`` is the flat, complete composition of one
profile plus any overrides; DVC tracks it, every stage reads it, and nothing else holds values,
so what a stage ran with is exactly what ``dvc.lock`` records. Two ways to compose it, same bytes:
``dvc exp run -S profile=ci -S masks.alpha=1e-4`` (DVC's Hydra integration, .dvc/config) and
``python -m core.config compose --profile ci masks.alpha=1e-4`` (run by ``make repro``). See
docs/architecture.md, "Parameters".

Parts: :mod:`core.config.sections` (the keys, their checks and roles, the fingerprints) and
:mod:`core.config.load` (files, composition, the command line ``python -m core.config``).

Every bad value stops with one :class:`ConfigError` naming the file, the key and what was
expected (unknown and missing keys, wrong types, bounds, non-finite numbers, non-text files).
"""

from core.config.load import (
    CONF,
    build_section,
    check_field,
    check_ranges,
    compose,
    compose_text,
    from_dict,
    load,
    load_yaml,
    main,
    write_params,
)
from core.config.sections import (
    CONFIGURATIONS,
    OVERRIDE_KEY,
    PROFILES,
    ROLES,
    SEED_MAX,
    SUBNETS,
    TRAIN_SECTIONS,
    Config,
    ConfigError,
    ControlConfig,
    DataConfig,
    FiguresConfig,
    MaskConfig,
    MetricsConfig,
    ModelConfig,
    PaperConfig,
    TrainConfig,
    alpha_label,
    check_cross_keys,
    checkpoint_name,
    config_hash,
    keys,
    train_hash,
    train_sections,
)

__all__ = [
    "CONF",
    "CONFIGURATIONS",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DataConfig",
    "FiguresConfig",
    "MaskConfig",
    "MetricsConfig",
    "ModelConfig",
    "OVERRIDE_KEY",
    "PROFILES",
    "PaperConfig",
    "ROLES",
    "SEED_MAX",
    "SUBNETS",
    "TRAIN_SECTIONS",
    "TrainConfig",
    "alpha_label",
    "build_section",
    "check_cross_keys",
    "check_field",
    "check_ranges",
    "checkpoint_name",
    "compose",
    "compose_text",
    "config_hash",
    "from_dict",
    "keys",
    "load",
    "load_yaml",
    "main",
    "train_hash",
    "train_sections",
    "write_params",
]
