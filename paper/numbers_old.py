"""The paper stage: numbers from the metric files, then the LaTeX report.

``python -m figures.paper --metrics DIR --figures DIR --out DIR`` writes
``paper/generated/numbers.tex`` (every number of the report as a macro, computed here from the
netCDF files, including which of the original study's findings reproduce) and builds
``paper/report.tex`` with latexmk into ``<out>/report.pdf``. No number of the report is typed
by hand; the original study's numbers come from :mod:`figures.original` and are labelled.

Statistics: per checkpoint, a module scalar is averaged over shape tasks for each mask seed,
then summarised as mean and Student-t CI over seeds (:func:`core.metrics.mean_ci`, level
``metrics.ci``), at each checkpoint's selected alpha (``modules.selected_alpha``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from core.config import Config, ConfigError, load
from core.io import atomic_write_bytes, atomic_write_text
from figures import FAMILIES, original
from figures.inputs import Inputs, at_selected, mean_ci
from figures.style import CHANCE_ACC, FigureError, checkpoint_label

PAPER_DIR = Path(__file__).resolve().parents[1] / "paper"
TEX_HINT = ("the paper stage needs TeX: run `make tex` (as root it installs the Debian packages "
            "latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended) "
            "or install a TeX distribution with latexmk and pdflatex")


class PaperError(RuntimeError):
    """The report cannot be built (TeX missing, a figure missing, LaTeX failed)."""


# ------------------------------------------------------------------------- formatting


def roman(k: int) -> str:
    """1 -> ``I``: checkpoint ordinals inside macro names (TeX names cannot hold digits)."""
    vals = ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))
    out = ""
    for v, s in vals:
        while k >= v:
            out, k = out + s, k - v
    return out


def fmt(x: float, digits: int) -> str:
    """A number for the text; ``n/a`` for NaN (a value that does not exist)."""
    x = float(x)
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def tex_escape(s: str) -> str:
    return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%") \
        .replace("&", r"\&").replace("#", r"\#")


def sci(x: float) -> str:
    """``1e-05`` -> ``\\ensuremath{10^{-5}}`` (usable in and out of math mode)."""
    if not math.isfinite(x):
        return "n/a"
    m, e = f"{x:.1e}".split("e")
    body = f"10^{{{int(e)}}}" if m == "1.0" else f"{m}\\times10^{{{int(e)}}}"
    return f"\\ensuremath{{{body}}}"


# ------------------------------------------------------------------------- statistics


def _stat(da: xr.DataArray, level: float) -> tuple[float, float, float]:
    """(mean, lower, upper) over seeds of the task-mean of ``da`` (dims task, seed)."""
    st = mean_ci(da.mean("task", skipna=True), "seed", level)
    return float(st["mean"]), float(st["lower"]), float(st["upper"])


def trend_verdict(first: tuple[float, float, float], last: tuple[float, float, float],
                  sign: int) -> str:
    """Did the quantity move in direction ``sign`` (+1 up, -1 down) from first to last?
    ``reproduced`` when the CIs do not overlap, ``direction only (CIs overlap)`` when the
    means move the right way but the intervals overlap, ``not reproduced`` otherwise."""
    (m0, lo0, hi0), (m1, lo1, hi1) = first, last
    if not (math.isfinite(m0) and math.isfinite(m1)):
        return "not testable (missing values)"
    if sign * (m1 - m0) <= 0:
        return "not reproduced"
    separated = (lo1 > hi0) if sign > 0 else (hi1 < lo0)
    if all(map(math.isfinite, (lo0, hi0, lo1, hi1))) and separated:
        return "reproduced"
    return "direction only (CIs overlap)"


def specificity_verdict(full: float, inv: float, not_full: float, not_inv: float,
                        chance: float = CHANCE_ACC) -> str:
    """Is the module specific to its task? Removing it (inverted mask) must cost the task set
    more than half of its above-chance accuracy and the not-task set less than half."""
    if not all(math.isfinite(v) for v in (full, inv, not_full, not_inv)):
        return "cannot be decided (missing values)"
    lost = (full - inv) / max(full - chance, 1e-9)
    not_lost = (not_full - not_inv) / max(not_full - chance, 1e-9)
    if lost > 0.5 and not_lost < 0.5:
        return "yes"
    if lost > 0.5:
        return ("no: removing it costs the not-task set as much "
                f"({100 * not_lost:.0f}\\% of its above-chance accuracy, task set "
                f"{100 * lost:.0f}\\%)")
    return f"no: removing it costs the task set only {100 * lost:.0f}\\% of its accuracy"


def _offdiag(a: np.ndarray) -> np.ndarray:
    return a[~np.eye(a.shape[0], dtype=bool)]


# ------------------------------------------------------------------------- numbers


def numbers(inp: Inputs) -> dict[str, str]:
    """Every macro of ``numbers.tex`` (name -> LaTeX text), from the metric files alone."""
    md, sh, cv = inp["modules"], inp["sharing"], inp["curves"]
    cfg, level = inp.cfg, inp.level
    cks = [str(c) for c in md["checkpoint"].values]
    if not cks:
        raise FigureError("modules.nc: no checkpoint")
    ms = md["milestone"].values
    tasks = [str(t) for t in md["task"].values]
    n = {}
    n["CILevel"] = fmt(100 * level, 0)
    n["NCkpt"] = str(len(cks))
    n["NTasks"] = str(len(tasks))
    n["TaskList"] = ", ".join(tasks)
    n["NSeeds"] = str(int(md["sparsity"].notnull().any(["checkpoint", "task", "alpha"]).sum()))
    n["NMasked"] = f"{int(md['n_masked']):,}".replace(",", "{,}")
    n["Profile"] = tex_escape(str(md.attrs.get("profile", cfg.profile)))
    n["Source"] = tex_escape(str(md.attrs.get("source", "")))
    n["ChanceAcc"] = fmt(CHANCE_ACC, 1)
    n["ImageSize"] = str(cfg.data.image_size)
    n["NPerConfig"] = f"{cfg.data.n_per_config:,}".replace(",", "{,}")
    n["Configs"] = (f"{len(cfg.data.configs)} configurations" if len(cfg.data.configs) > 1
                    else "one configuration, " + tex_escape(cfg.data.configs[0]))
    n["TaskN"] = f"{cfg.data.task_n:,}".replace(",", "{,}")
    n["Epochs"] = str(cfg.train.epochs)
    n["Optimizer"] = {"adam": "Adam", "adamw": "AdamW"}[cfg.train.optimizer]
    n["LR"] = sci(cfg.train.lr)
    n["BatchSize"] = str(cfg.train.batch_size)
    n["MaskSteps"] = str(cfg.masks.steps)
    n["MaskLR"] = sci(cfg.masks.lr)
    n["MaskAlpha"] = sci(cfg.masks.alpha)
    n["AlphaSweep"] = ", ".join(sci(a) for a in cfg.masks.alpha_sweep)
    n["AlphaTolerance"] = fmt(cfg.metrics.alpha_tolerance, 1)
    n["ChanceSamples"] = str(cfg.metrics.chance_samples)
    n["TrainSteps"] = str(int(cv["train_step"].values.max())) if cv.sizes["train_step"] else "0"

    spars = at_selected(md["sparsity"], md, "modules.nc sparsity")
    disp = at_selected(md["dispersity"], md, "modules.nc dispersity")
    drand = at_selected(md["dispersity_random"], md, "modules.nc dispersity_random")
    dnorm = at_selected(md["dispersity_norm"], md, "modules.nc dispersity_norm")
    acc = {k: at_selected(md[v], md, f"modules.nc {v}") for k, v in (
        ("AccFull", "acc_task_full"), ("AccMasked", "acc_task"),
        ("AccInv", "acc_task_inverted"), ("AccNotFull", "acc_not_task_full"),
        ("AccNotMasked", "acc_not_task"), ("AccNotInv", "acc_not_task_inverted"))}
    stats: dict[str, list] = {"Sparsity": [], "Disp": [], "DispNorm": []}
    iomin_ranges = []
    for i, ck in enumerate(cks):
        R = roman(i + 1)
        n[f"Ckpt{R}"] = tex_escape(checkpoint_label(ck, float(ms[i])))
        n[f"ValAcc{R}"] = fmt(md["ckpt_val_acc"].values[i], 1)
        n[f"CkptStep{R}"] = fmt(md["ckpt_step"].values[i], 0)
        n[f"Alpha{R}"] = sci(float(md["selected_alpha"].values[i]))
        for key, da, digits in (("Sparsity", spars, 1), ("Disp", disp, 3),
                                ("DispNorm", dnorm, 2)):
            s = _stat(da.sel(checkpoint=ck), level)
            stats[key].append(s)
            n[f"{key}{R}"], n[f"{key}Lo{R}"], n[f"{key}Hi{R}"] = (fmt(v, digits) for v in s)
        n[f"DispRand{R}"] = fmt(float(drand.sel(checkpoint=ck).mean()), 3)
        for key, da in acc.items():
            n[f"{key}{R}"] = fmt(_stat(da.sel(checkpoint=ck), level)[0], 1)
        io = sh["iomin"].sel(checkpoint=ck).mean("seed", skipna=True).values
        ch = sh["iomin_chance"].sel(checkpoint=ck).mean("seed", skipna=True).values
        up = sh["iomin_chance_upper"].sel(checkpoint=ck).mean("seed", skipna=True).values
        up = np.where(np.isfinite(up), up, ch)
        io_o, ch_o, up_o = _offdiag(io), _offdiag(ch), _offdiag(up)
        ok = np.isfinite(io_o)
        iomin_ranges.append((np.nanmin(io_o) if ok.any() else np.nan,
                             np.nanmax(io_o) if ok.any() else np.nan))
        n[f"IoMinMin{R}"], n[f"IoMinMax{R}"] = (fmt(v, 0) for v in iomin_ranges[-1])
        n[f"IoMinMean{R}"] = fmt(np.nanmean(io_o) if ok.any() else np.nan, 1)
        n[f"IoMinChanceMin{R}"] = fmt(np.nanmin(ch_o) if ok.any() else np.nan, 0)
        n[f"IoMinChanceMax{R}"] = fmt(np.nanmax(ch_o) if ok.any() else np.nan, 0)
        n[f"IoMinExcess{R}"] = fmt(np.nanmean(io_o - ch_o) if ok.any() else np.nan, 1)
        above = int((io_o[ok] > up_o[ok]).sum())
        n[f"IoMinAbove{R}"] = f"{above} of {int(ok.sum())}"
        spec = _offdiag(sh["iomin_specific"].sel(checkpoint=ck).mean("seed", skipna=True).values)
        n[f"IoMinSpecMean{R}"] = fmt(np.nanmean(spec) if np.isfinite(spec).any() else np.nan, 1)
        n[f"NShared{R}"] = fmt(float(sh["n_shared"].sel(checkpoint=ck).mean(skipna=True)), 0)
        if i == len(cks) - 1:
            last_above, last_pairs = above, int(ok.sum())

    # First / Last aliases used by the prose and the comparison table.
    first, last = roman(1), roman(len(cks))
    for stem in ("Ckpt", "CkptStep", "ValAcc", "Alpha", "NShared", "Sparsity", "SparsityLo", "SparsityHi", "Disp",
                 "DispLo", "DispHi", "DispNorm", "DispNormLo", "DispNormHi", "DispRand",
                 "IoMinMin", "IoMinMax", "IoMinMean", "IoMinChanceMin", "IoMinChanceMax",
                 "IoMinExcess", "IoMinAbove", "IoMinSpecMean", "AccFull", "AccMasked", "AccInv",
                 "AccNotFull", "AccNotMasked", "AccNotInv"):
        n[f"{stem}First"] = n[f"{stem}{first}"]
        n[f"{stem}Last"] = n[f"{stem}{last}"]

    # The original study's numbers (labelled as the original's everywhere they appear).
    n["OrigSparsityFirst"] = fmt(original.SPARSITY[50], 0)
    n["OrigSparsityLast"] = fmt(original.SPARSITY[90], 0)
    n["OrigDispFirst"] = fmt(original.DISPERSITY[50], 2)
    n["OrigDispLast"] = fmt(original.DISPERSITY[90], 2)
    n["OrigIoMinMin"], n["OrigIoMinMax"] = (fmt(v, 0) for v in original.IOMIN_RANGE[90])

    # Verdicts, from the data.
    one = len(cks) < 2
    na = "not testable (one checkpoint)"
    n["VerdictSparsity"] = na if one else trend_verdict(stats["Sparsity"][0],
                                                        stats["Sparsity"][-1], +1)
    n["VerdictDisp"] = na if one else trend_verdict(stats["Disp"][0], stats["Disp"][-1], -1)
    n["VerdictDispNorm"] = na if one else trend_verdict(stats["DispNorm"][0],
                                                        stats["DispNorm"][-1], -1)
    if last_pairs == 0:
        n["VerdictSharing"] = "not testable (missing values)"
    elif last_above == last_pairs:
        n["VerdictSharing"] = "reproduced (every pair above chance)"
    elif last_above > 0:
        n["VerdictSharing"] = "partly reproduced (some pairs above chance)"
    else:
        n["VerdictSharing"] = "not reproduced (no pair above chance)"
    lo, hi = iomin_ranges[-1]
    olo, ohi = original.IOMIN_RANGE[90]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n["IoMinVsOriginal"] = "cannot be compared (missing values)"
    elif lo >= olo and hi <= ohi:
        n["IoMinVsOriginal"] = "lies inside the original's range"
    elif hi < olo or lo > ohi:
        n["IoMinVsOriginal"] = "lies outside the original's range"
    else:
        n["IoMinVsOriginal"] = "overlaps the original's range"
    n["VerdictSpecific"] = specificity_verdict(
        *(_stat(acc[k].sel(checkpoint=cks[-1]), level)[0]
          for k in ("AccFull", "AccInv", "AccNotFull", "AccNotInv")))
    return n


def numbers_tex(macros: dict[str, str]) -> str:
    lines = ["% GENERATED by `python -m figures.paper` from the metric netCDF files: do not edit.",
             "% The original study's numbers are the Orig* macros (figures/original.py)."]
    for k, v in macros.items():
        if not k.isalpha():
            raise FigureError(f"numbers.tex: macro name {k!r} must be letters only")
        lines.append(f"\\newcommand{{\\{k}}}{{{v}}}")
    return "\n".join(lines) + "\n"


def checkpoint_rows(macros: dict[str, str], n_ckpt: int) -> str:
    """Body of the per-checkpoint table, one row per checkpoint (macro references only)."""
    rows = []
    for i in range(n_ckpt):
        def m(stem: str, R: str = roman(i + 1)) -> str:
            return f"\\{stem}{R}{{}}"
        rows.append(" & ".join([
            m("Ckpt"), m("ValAcc"), m("Alpha"),
            f"{m('Sparsity')} [{m('SparsityLo')}, {m('SparsityHi')}]",
            f"{m('Disp')} [{m('DispLo')}, {m('DispHi')}]",
            f"{m('DispNorm')} [{m('DispNormLo')}, {m('DispNormHi')}]",
            f"{m('IoMinMin')}--{m('IoMinMax')} ({m('IoMinChanceMin')}--{m('IoMinChanceMax')})",
            f"{m('AccMasked')} / {m('AccInv')}"]) + " \\\\")
    return "\n".join(rows)


def write_generated(inp: Inputs, figures: Path, gen: Path) -> list[Path]:
    """Write ``numbers.tex`` (macros + per-checkpoint rows) and ``paths.tex`` into ``gen``."""
    macros = numbers(inp)
    n_ckpt = int(macros["NCkpt"])
    text = numbers_tex(macros)
    text += "\\newcommand{\\CheckpointRows}{%\n" + checkpoint_rows(macros, n_ckpt) + "}\n"
    p1 = atomic_write_text(gen / "numbers.tex", text)
    fig = figures.resolve().as_posix().rstrip("/") + "/"
    p2 = atomic_write_text(gen / "paths.tex", f"\\graphicspath{{{{{fig}}}}}\n")
    return [p1, p2]


# ------------------------------------------------------------------------- LaTeX


def check_figures(figures: Path) -> None:
    missing = [f"{stem}.pdf" for mod in FAMILIES.values() for stem in mod.OUTPUTS
               if not (figures / f"{stem}.pdf").exists()]
    if missing:
        raise PaperError(f"{figures}: figure(s) missing: {', '.join(missing)} "
                         "(run `python -m figures` first)")


def latex(out: Path, gen: Path, paper: Path = PAPER_DIR) -> Path:
    """Build ``paper/report.tex`` with latexmk in a temporary folder holding a copy of the
    report and of ``gen`` (as ``generated/``); move the PDF to ``<out>/report.pdf`` atomically
    (on failure the LaTeX log is kept as ``<out>/report.log``; a successful build leaves only
    the PDF, which is byte-stable, whereas the log holds the build's date and time)."""
    exe = shutil.which("latexmk")
    if exe is None or shutil.which("pdflatex") is None:
        raise PaperError(f"latexmk/pdflatex not found: {TEX_HINT}")
    out = out.resolve()  # latexmk runs in another folder: relative paths would point elsewhere
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
    with tempfile.TemporaryDirectory(prefix=".tmp-latex-", dir=out) as tmp:
        src, build_dir = Path(tmp) / "src", Path(tmp) / "build"
        shutil.copytree(paper, src, ignore=shutil.ignore_patterns("generated", "*.pdf", "*.aux",
                                                                  "*.log", "*.fls", "*.out",
                                                                  "*.fdb_latexmk"))
        shutil.copytree(gen, src / "generated")
        cmd = [exe, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error",
               f"-outdir={build_dir}", "report.tex"]
        res = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
        log = build_dir / "report.log"
        pdf = build_dir / "report.pdf"
        text = log.read_text(errors="replace") if log.exists() else ""
        undefined = [ln.strip() for ln in text.splitlines()
                     if "undefined" in ln and ("Reference" in ln or "Citation" in ln
                                               or "There were undefined" in ln)]
        if res.returncode != 0 or not pdf.exists() or undefined:
            if log.exists():
                atomic_write_bytes(out / "report.log", log.read_bytes())
            if undefined:
                raise PaperError(f"{paper / 'report.tex'}: undefined references (log: "
                                 f"{out / 'report.log'}): " + " | ".join(undefined[:5]))
            errors = [ln for ln in (res.stdout + res.stderr).splitlines()
                      if ln.startswith(("!", "./report.tex:", "report.tex:"))]
            raise PaperError(f"latexmk failed on {paper / 'report.tex'} (log: "
                             f"{out / 'report.log'}): " + " | ".join(errors[:5]))
        (out / "report.log").unlink(missing_ok=True)  # the log of an earlier failure
        return atomic_write_bytes(out / "report.pdf", pdf.read_bytes())


def build(metrics: str | Path, figures: str | Path, out: str | Path, cfg: Config,
          gen: str | Path = PAPER_DIR / "generated", compile_pdf: bool = True) -> list[Path]:
    """The paper stage: numbers.tex from ``metrics``, then the PDF into ``out``."""
    inp = Inputs(metrics, "", cfg)
    figures = Path(figures)
    if compile_pdf:
        check_figures(figures)
    paths = write_generated(inp, figures, Path(gen))
    if compile_pdf:
        paths.append(latex(Path(out), Path(gen)))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m figures.paper", description=__doc__.split("\n")[0])
    ap.add_argument("--metrics", default="data/metrics")
    ap.add_argument("--figures", default="data/figures")
    ap.add_argument("--out", default="data/paper")
    ap.add_argument("--params", default="active.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--numbers-only", action="store_true",
                    help="write paper/generated/numbers.tex and stop (no TeX needed)")
    args = ap.parse_args(argv)
    try:
        cfg = load(args.params, args.profile)
        paths = build(args.metrics, args.figures, args.out, cfg,
                      compile_pdf=not args.numbers_only)
    except (FigureError, PaperError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
