"""Reading, checking and composing parameter files: ``params.yaml`` into a validated
:class:`~core.config.sections.Config` (:func:`load`, :func:`from_dict`), ``conf/`` composed by
Hydra into ``params.yaml`` (:func:`compose`, :func:`write_params`), and the command line."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from core.config.sections import (
    OVERRIDE_KEY,
    PROFILES,
    Config,
    ConfigError,
    config_hash,
)
from core.io import atomic_write_text

CONF = Path(__file__).resolve().parents[2] / "conf"  # the Hydra config folder

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
        f"(core/config/sections.py documents it); refused before anything runs. If you mean it, "
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
