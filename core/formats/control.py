"""The composite positive control's result file, ``control.json`` (written by
:mod:`core.control`): reading it with one clear error, and its markdown summary. Light on
imports: the report (``python -m paper``) renders it without torch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from core.config import MaskConfig, keys
from core.formats import read_json, write_json

RESULT = "control.json"
# beside it, the seconds the masks took (never in control.json: its bytes depend on the params
# alone); {"workers", "seconds", "masks": {"<task>-s<seed>": seconds}}
TIMING = "timing.json"
TASKS = ("color_rule", "size_rule")
# the mask settings a control.json records (with alpha): the mask method (role "method"), not
# which masks a study trains; keys added after the first control.json files were written read
# as their value then (the `absent` value of the masks key, as for parameter files)
CONTROL_MASK_KEYS = keys(MaskConfig, "method")
MASK_DEFAULTS = {f.name: f.metadata["absent"] for f in dataclasses.fields(MaskConfig)
                 if "absent" in f.metadata and f.name in CONTROL_MASK_KEYS}


class ControlError(ValueError):
    """A bad input or a failed step of the control, with what was expected."""


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """``control.json`` at ``path`` (atomically; keys sorted, one space of indent)."""
    write_json(path, result)


def read_timing(folder: str | Path) -> dict[str, float]:
    """Seconds per mask (``<task>-s<seed>``) of the control in ``folder`` ({} when not timed)."""
    path = Path(folder) / TIMING
    try:
        return dict(json.loads(path.read_text())["masks"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def read_result(path: str | Path) -> dict[str, Any]:
    return read_json(path, ("profile", "masks", "reference", "rows", "iomin", "verdict"),
                     ControlError, "a control.json of `python -m core.control run`",
                     "python -m core.control run")


def mask_settings(result: dict[str, Any]) -> dict[str, Any]:
    """The run's mask settings, with the value a file written before a setting existed had."""
    return {**MASK_DEFAULTS, **result["masks"]}


def noise_text(masks: dict[str, Any]) -> str:
    """", sampling noise annealed to 0 over the last F of the run", or "" when it is not."""
    na = masks["noise_anneal"]
    return f", sampling noise annealed to 0 over the last {na:g} of the run" if na else ""


def settings_label(result: dict[str, Any]) -> str:
    """"the mask settings of profile P" or, with overrides, which of them were changed."""
    changed = [f"{k.replace('_', ' ')} {mask_settings(result)[k]:g}"
               for k in ("steps", "lr", "alpha", "readout", "noise_anneal")
               if result.get("settings", {}).get(k) is not None]
    base = f"the mask settings of profile `{result['profile']}`"
    return base + (f" except {', '.join(changed)}" if changed else "")


def scramble_text(result: dict[str, Any]) -> str:
    """How the other task's network reads its input (files without the setting: the plain
    composite, both networks reading the problem)."""
    if result.get("settings", {}).get("scramble", False):
        return (" (for each task's masks the other task's network reads another problem of the "
                "batch: noise with respect to the answer)")
    return ""


def summary_text(result: dict[str, Any]) -> str:
    """Markdown: the settings, per task the masks' own share / density / accuracies, the
    overlaps and the verdict (every number from ``control.json``)."""
    m, ref, rows = mask_settings(result), result["reference"], result["rows"]
    lines = [f"Composite positive control (`python -m core.control`), masks with "
             f"{settings_label(result)} ({m['steps']} steps, lr {m['lr']:g}, alpha "
             f"{m['alpha']:g}, read-out logit > {m['readout']:g}{noise_text(m)}): a colour-rule SCL and a size-rule SCL, logits summed"
             f"{scramble_text(result)}. Unmasked "
             f"composite / colour net / size net test accuracy (%): colour problems "
             f"{ref['composite']['color_rule']:.1f} / {ref['net_color_rule']['color_rule']:.1f}"
             f" / {ref['net_size_rule']['color_rule']:.1f}, size problems "
             f"{ref['composite']['size_rule']:.1f} / {ref['net_color_rule']['size_rule']:.1f} / "
             f"{ref['net_size_rule']['size_rule']:.1f}.", "",
             "| mask | seed | density (%) | kept in own network | masked acc. own / other task (%) "
             "| converged |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["task"], r["seed"])):
        other = [t for t in TASKS if t != r["task"]][0]
        lines.append(f"| {r['task']} | {r['seed']} | {r['density']:.1f} | {r['own']:.0%} | "
                     f"{r['acc_' + r['task']]:.1f} / {r['acc_' + other]:.1f} | "
                     f"{'yes' if r['converged'] else 'no'} |")
    p = result["iomin"]
    fmt = lambda v: ", ".join(f"{100 * x:.0f}" for x in v) or "none"  # noqa: E731
    lines += ["", f"IoMin cross-task {fmt(p['cross'])}% vs same-task {fmt(p['same'])}%. "
              f"Verdict: the method **{result['verdict']['text']}**."]
    return "\n".join(lines)


def comparison_text(results: list[dict[str, Any]]) -> str:
    """One sentence comparing control runs (the first: the profile's mask settings) by their
    verdicts; empty with fewer than two runs."""
    if len(results) < 2:
        return ""
    first, rest = results[0], results[1:]
    passed = [r for r in rest if r["verdict"]["passes"]]

    def what(r: dict[str, Any]) -> str:
        m = mask_settings(r)
        return (f"{m['steps']} steps, lr {m['lr']:g}"
                + (f", read-out logit > {m['readout']:g}" if m["readout"] else "")
                + noise_text(m))

    if first["verdict"]["passes"]:
        return (f"The profile's mask settings ({what(first)}) pass the control: the method can "
                "find modules that exist at these settings.")
    if passed:
        return (f"The profile's mask settings ({what(first)}) fail the control and "
                f"{'; '.join(what(r) for r in passed)} pass it: the profile's masks stop too "
                "early to find modules that exist, so its verdicts of shared modules do not "
                "show that distinct modules are absent.")
    return (f"No mask settings tried pass the control ({'; '.join(what(r) for r in results)}): "
            "the method has not been shown able to find modules that exist.")
