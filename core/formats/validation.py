"""The validation suite's result file, ``results/validation/<name>.json`` (written by
:mod:`core.validate`): reading it with one clear error, and its table in markdown and LaTeX.
Light on imports (no torch): the report and the README render it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.formats import read_json, write_json

CHECK_NAMES = {
    "planted": "planted recovery (mild and strong distractors)",
    "complement": "planted complement protocol vs its truth",
    "control": "composite SCL control",
    "faithful": "faithfulness on SCL checkpoints",
    "continuation": "continuation (+50% steps at the constant lr)",
}


class ValidationFileError(ValueError):
    """A missing or malformed validation result (names the file)."""


def _plain(obj: Any) -> Any:
    """JSON for what json cannot write: a tensor or array as a list, anything else as text."""
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def write(path: str | Path, result: dict[str, Any]) -> None:
    """The result at ``path`` (atomically; keys sorted, one space of indent)."""
    write_json(path, result, default=_plain)


def read(path: str | Path) -> dict[str, Any]:
    return read_json(path, ("name", "profile", "masks", "checks", "passes", "commit"),
                     ValidationFileError, "a result of `python -m core.validate`", "make validate")


def _numbers(name: str, c: dict[str, Any]) -> str:
    if name == "planted":
        return "; ".join(
            f"{k}: IoU {min(r['iou'] for r in c[k]['rows']):.2f}, accuracy "
            f"{min(r['accuracy'] for r in c[k]['rows']):.0f}%, cross IoMin "
            f"{c[k]['max_cross_iomin']:.2f}" for k in ("mild", "strong"))
    if name == "complement":
        return ("drops " + " / ".join(f"{v:.2f}" for v in c["drop"].values()) + " vs truth "
                + " / ".join(f"{v:.2f}" for v in c["truth"].values()))
    if name == "control":
        rows = c["rows"]
        return (f"{c['verdict']['text'].split(':')[0]}; own share of functional weights "
                + ", ".join(f"{r['own_functional']:.0%}" for r in rows) + "; IoMin cross "
                + f"{max(c['iomin']['cross']):.2f} vs same {min(c['iomin']['same']):.2f}"
                if c["iomin"]["same"] and c["iomin"]["cross"] else c["verdict"]["text"])
    if name == "faithful":
        worst = max(c["rows"], key=lambda r: r["unmasked"] - r["masked"])
        return (f"{len(c['rows'])} masks; the worst: masked {worst['masked']:.1f} vs unmasked "
                f"{worst['unmasked']:.1f}% (test split)")
    if name == "continuation":
        return (f"{len(c['rows'])} masks; density change <= "
                f"{max(r['density_change'] for r in c['rows']):.2f} points, IoMin >= "
                f"{min(r['iomin'] for r in c['rows']):.2f}, IoU >= "
                f"{min(r['iou'] for r in c['rows']):.2f}")
    raise ValidationFileError(f"unknown check {name!r}")


def settings_text(result: dict[str, Any]) -> str:
    m = result["masks"]
    return (f"{m['estimator'].replace('_', ' ')}, {m['steps']} steps of {m['batch_size']}, "
            f"lr {m['lr']:g} (anneal {m['lr_anneal']:g}), alpha {m['alpha']:g}, "
            f"inert weights pruned on {m['prune_n']} problems")


def markdown(result: dict[str, Any]) -> str:
    """The table: one row per check, its verdict and the numbers it rests on."""
    lines = [f"Mask settings of profile `{result['profile']}`: {settings_text(result)}; "
             f"{'every check passes' if result['passes'] else 'NOT every check passes'} "
             f"(`results/validation/{result['name']}.json`, commit {result['commit'][:12]}).",
             "", "| check | verdict | numbers |", "|---|---|---|"]
    for name, label in CHECK_NAMES.items():
        if name in result["checks"]:
            c = result["checks"][name]
            lines.append(f"| {label} | {'pass' if c['passes'] else 'FAIL'} | "
                         f"{_numbers(name, c)} |")
        else:
            lines.append(f"| {label} | not run | |")
    return "\n".join(lines)


def latex(result: dict[str, Any]) -> str:
    """The same table as a LaTeX tabular (for the report)."""
    esc = lambda s: (s.replace("\\", r"\textbackslash{}").replace("%", r"\%")  # noqa: E731
                     .replace("_", r"\_").replace("&", r"\&").replace("#", r"\#")
                     .replace("<=", r"$\le$").replace(">=", r"$\ge$"))
    rows = []
    for name, label in CHECK_NAMES.items():
        c = result["checks"].get(name)
        verdict = "not run" if c is None else ("pass" if c["passes"] else "FAIL")
        rows.append(f"{esc(label)} & {verdict} & {esc(_numbers(name, c)) if c else ''} \\\\")
    return "\n".join([
        r"\begin{tabular}{p{0.3\linewidth}lp{0.5\linewidth}}", r"\toprule",
        r"check & verdict & numbers \\", r"\midrule", *rows, r"\bottomrule", r"\end{tabular}"])
