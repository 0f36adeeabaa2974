"""The report's numbers and results text, generated from ``summary.json`` (core.metrics) and the
config: nothing of the results is typed by hand.

* :func:`macros` - ``numbers.tex``: the method's settings and provenance as LaTeX macros.
* :func:`results_tex` - ``results.tex``: a section per task family (table per checkpoint,
  verdict sentences, its figures) and the side-by-side with the original study.
* :func:`results_markdown` - the README's results table (``python -m paper table``).

Every interval is the mean and ``metrics.ci`` t-interval across trained networks with mask seeds
averaged within each network, converged masks only (:mod:`core.stats`, ``core.metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from core.config import Config, MaskConfig
from core.formats.control import comparison_text, mask_settings, noise_text, settings_label
from core.stats import CHANCE_ACC
from core.tasks import FAMILIES
from figures import original
from figures.style import FigureError, checkpoint_label

# ------------------------------------------------------------------------- formatting


def fmt(x: float | None, digits: int) -> str:
    """A number for the text; ``n/a`` for a value that does not exist."""
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.{digits}f}"


def fmt_iv(iv: Mapping[str, Any] | None, digits: int, scale: float = 1.0) -> str:
    """``mean [lower, upper]`` of a summary interval (``mean`` alone without an interval)."""
    if not iv or iv.get("mean") is None:
        return "n/a"
    m = fmt(scale * iv["mean"], digits)
    if iv.get("lower") is None:
        return m
    return f"{m} [{fmt(scale * iv['lower'], digits)}, {fmt(scale * iv['upper'], digits)}]"


def tex_escape(s: str) -> str:
    return (s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%")
            .replace("&", r"\&").replace("#", r"\#").replace("<", r"\textless{}")
            .replace(">", r"\textgreater{}"))


def sci(x: float) -> str:
    """``1e-05`` -> ``\\ensuremath{10^{-5}}`` (usable in and out of math mode)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    m, e = f"{x:.1e}".split("e")
    body = f"10^{{{int(e)}}}" if m == "1.0" else f"{m}\\times10^{{{int(e)}}}"
    return f"\\ensuremath{{{body}}}"


def _thousands(n: int) -> str:
    return f"{n:,}".replace(",", "{,}")


# ------------------------------------------------------------------------- numbers.tex


def restarts_text(summary: Mapping[str, Any], cfg: Config) -> str:
    """What re-initialisation of networks stuck at chance (train.restart_after) did in this
    run, one sentence."""
    t, done = cfg.train, summary.get("restarts", {})
    if not t.restart_after:
        return "Networks are never re-initialised (train.restart_after 0)."
    rule = (f"A network still at chance after {t.restart_after} steps is re-initialised "
            f"(at most {t.max_restarts} times; train.restart_after)")
    if not done:
        return rule + ": none was."
    what = ", ".join(f"network {n} {k} time{'s' if k > 1 else ''}" for n, k in done.items())
    return rule + f": re-initialised {what} (the kept run is the last attempt)."


def macros(summary: Mapping[str, Any], cfg: Config, source: str) -> dict[str, str]:
    """Settings and provenance of the run as macros (name -> LaTeX text)."""
    d, t, m = cfg.data, cfg.train, cfg.masks
    return {
        "Profile": tex_escape(str(summary["profile"])),
        "ConfigHash": summary["config_hash"][:12],
        "Source": tex_escape(source),
        "CILevel": fmt(100 * summary["ci_level"], 0),
        "NNetworks": str(len(summary["networks"])),
        "Restarts": tex_escape(restarts_text(summary, cfg)),
        "NSeeds": str(len(m.seeds)),
        "NCkpt": str(len(summary["checkpoints"])),
        "ChanceAcc": fmt(CHANCE_ACC, 1),
        "ImageSize": str(d.image_size),
        "NPerConfig": _thousands(d.n_per_config),
        "Configs": (f"{len(d.configs)} configurations" if len(d.configs) > 1
                    else "one configuration, " + tex_escape(d.configs[0])),
        "TaskN": _thousands(d.task_n),
        "Epochs": str(t.epochs),
        "Optimizer": {"adam": "Adam", "adamw": "AdamW"}[t.optimizer],
        "LR": sci(t.lr),
        "BatchSize": str(t.batch_size),
        "MilestoneTol": fmt(t.milestone_tolerance, 0),
        "MaskSteps": str(m.steps),
        "MaskLR": sci(m.lr),
        "MaskInit": fmt(m.init, 1),
        "AlphaList": ", ".join(sci(a) for a in sorted({m.alpha, *m.alpha_sweep})),
        "AlphaTolerance": fmt(cfg.metrics.alpha_tolerance, 1),
        "ConvergeWindow": fmt(100 * m.converge_window, 0),
        "ConvergeDensity": fmt(m.converge_density, 1),
        "ConvergeAcc": fmt(m.converge_acc, 1),
        "ConvergenceRule": tex_escape(convergence_rule(m)).replace(r"\textless{}=", r"$\le$"),
        "DegenerateMax": fmt(100 * m.degenerate_max, 0),
        # the convergence flag's accuracy: masks.curve_n validation problems (0: all of them)
        "CurveProblems": "all" if not m.curve_n else f"the first {m.curve_n}",
        # fewest report-split problems behind any reported masked accuracy (from the data)
        "ReportN": _report_n(summary),
        "MaskNorm": "including" if m.mask_norm else "excluding",
        "MaskReadout": f"{m.readout:g}",  # the read-out logit threshold (masks.readout)
        "FamilyList": ", ".join(tex_escape(f) for f in families(summary)),
        "FamilyWhen": _family_when(summary, m.families_last, m.tasks_early, m.tasks),
        "MaskEstimator": (
            rf"hard concrete gates (Louizos et al.; temperature {fmt(m.tau, 2)}), penalty "
            r"$\alpha$ on the expected number of kept weights"
            if m.estimator == "hard_concrete" else
            r"straight-through estimator, penalty $\alpha$ on the logits")
        + (rf"; kept weights that change no answer on {m.prune_n} training problems are "
           "dropped" if m.prune_n else ""),
        "MaskSchedule": ("constant" if not m.lr_anneal else
                         rf"cosine-annealed to 0 over the last {fmt(100 * m.lr_anneal, 0)}\%"),
    }


def _report_n(summary: Mapping[str, Any]) -> str:
    ns = [c.get("report_problems_min") for c in summary["checkpoints"].values()]
    ns = [int(n) for n in ns if n is not None]
    return _thousands(min(ns)) if ns else "?"


def _family_when(summary: Mapping[str, Any], last_only: Sequence[str],
                 early: Sequence[str] = (), shapes: Sequence[str] = ()) -> str:
    """Which checkpoints the families are masked at (``masks.families_last``), and which
    shapes before the last one (``masks.tasks_early``)."""
    late = [tex_escape(f) for f in families(summary) if f in last_only]
    notes = [f"{', '.join(late)}: at the last checkpoint only"] if late else []
    if early and set(early) != set(shapes):
        notes.append(f"before the last checkpoint the shapes {', '.join(early)} only")
    return "at every checkpoint" + (f" ({'; '.join(notes)})" if notes else "")


def numbers_tex(values: Mapping[str, str]) -> str:
    lines = ["% GENERATED by `python -m paper` from summary.json and the params: do not edit."]
    for k, v in values.items():
        if not k.isalpha():
            raise FigureError(f"numbers.tex: macro name {k!r} must be letters only")
        lines.append(f"\\newcommand{{\\{k}}}{{{v}}}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- results.tex


def families(summary: Mapping[str, Any]) -> list[str]:
    """Families with masks, in core.tasks order."""
    have = {f for e in summary["checkpoints"].values() for f in e["families"]}
    return [f for f in FAMILIES if f in have]


def _fam(summary: Mapping[str, Any], ck: str, fam: str) -> dict[str, Any]:
    return summary["checkpoints"][ck]["families"].get(fam, {})


def _label(ck: str, milestones: Mapping[str, float]) -> str:
    return tex_escape(checkpoint_label(ck, milestones[ck]))


def _table(summary: Mapping[str, Any], fam: str, ms: Mapping[str, float], masks: MaskConfig
           ) -> list[str]:
    cks = list(summary["checkpoints"])
    rows = [r"\begin{table}[ht]", r"\centering\scriptsize", r"\setlength{\tabcolsep}{3pt}",
            rf"\caption{{Family \texttt{{{tex_escape(fam)}}} per checkpoint: mean "
            rf"[\CILevel\% CI across \NNetworks{{}} networks, mask seeds nested], converged "
            r"masks at the selected $\alpha$. Accuracies on the report split. Column "
            + tex_escape(plateau_note(masks)).replace(r"\textless{}=", r"$\le$") + ".}",
            r"\resizebox{\textwidth}{!}{%", r"\begin{tabular}{@{}lllllll@{}}", r"\toprule",
            r"checkpoint & converged & sparsity (\%) & dispersity & normalised & "
            r"masked / unmasked acc.\ (\%) & IoMin cross / same-task / chance (\%) \\",
            r"\midrule"]
    for ck in cks:
        f = _fam(summary, ck, fam)
        if not f:
            rows.append(rf"{_label(ck, ms)} & \multicolumn{{6}}{{l}}{{no alpha "
                        r"selected}} \\")
            continue
        io = f["iomin"]
        rows.append(" & ".join([
            _label(ck, ms), converged_cell(f),
            fmt_iv(f["sparsity"], 1), fmt_iv(f["dispersity"], 3),
            fmt_iv(f["dispersity_norm"], 2),
            f"{fmt_iv(f['acc_report'], 1)} / {fmt_iv(f['acc_full_report'], 1)}",
            f"{fmt_iv(io['cross_task'], 0)} / {fmt_iv(io['same_task'], 0)} / "
            f"{fmt_iv(io['chance'], 0)}"]) + r" \\")
    rows += [r"\bottomrule", r"\end{tabular}}", rf"\label{{tab:fam{fam.replace('_', '')}}}",
             r"\end{table}"]
    return rows


def control_state(control: Sequence[Mapping[str, Any]] = (),
                  masks: Mapping[str, Any] | None = None) -> tuple[bool, str]:
    """(passed, why): whether the composite positive control (``control[0]``, the run's own)
    passed at the mask settings ``masks`` of the results (None: any settings)."""
    if not control:
        return False, "no composite control with these results"
    if masks is not None and not same_mask_settings(control[0], masks):
        return False, "the composite control ran at other mask settings"
    if not control[0]["verdict"]["passes"]:
        return False, "the composite control failed at these settings"
    return True, "the composite control passed at these settings"


def modules_note(control: tuple[bool, str]) -> str:
    """What the modules verdicts can say, given the control (:func:`control_state`)."""
    if control[0]:
        return ("distinct modules shown, or shared modules shown (cross-task overlap within the "
                "same-task null); " + control[1] + ", so distinct modules would have been seen.")
    return ("distinct modules shown, else not testable: " + control[1] + ", so an overlap "
            "within the same-task null could also mean modules the masks cannot see.")


def module_verdict(sharing: str, control: tuple[bool, str]) -> str:
    """What a reader can act on, from the sharing verdict (``core.stats.distinct_verdict``) and
    the control (:func:`control_state`): ``distinct modules shown``; ``shared modules shown``
    (cross-task overlap within the same-task null, and the control passed at these settings,
    so distinct modules would have been seen); else ``not testable (why)``."""
    if sharing.startswith("distinct"):
        return "distinct modules shown"
    if sharing.startswith("not testable"):
        return sharing
    passed, why = control
    if passed:
        return "shared modules shown"
    return f"not testable ({why}: an overlap within the null could also mean modules the masks cannot see)"


def _verdicts(summary: Mapping[str, Any], fam: str, ms: Mapping[str, float],
              control: tuple[bool, str] = (False, "no composite control")) -> list[str]:
    out = [r"\begin{itemize}"]
    for ck in summary["checkpoints"]:
        f = _fam(summary, ck, fam)
        if not f:
            continue
        lab = _label(ck, ms)
        if not f.get("runs"):
            out.append(rf"\item \textbf{{{lab}}}: no masks of this family at this checkpoint "
                       r"(\texttt{masks.families\_last}: the last checkpoint only, for cost).")
            continue
        io, sel, inv, comp = (f["iomin"], f["selective_drop"], f["inverted_drop"],
                              f["complement_drop"])
        failing = [t for t in summary["checkpoints"][ck].get("alpha_outside_tolerance", [])
                   if t in f.get("tasks", [])]
        unfaithful = (rf" At the selected $\alpha$ the masks of "
                      rf"{', '.join(tex_escape(t) for t in failing)} lose more than "
                      r"\AlphaTolerance{} points on the select split (no $\alpha$ was within "
                      r"the tolerance): these modules are not faithful to the network."
                      if failing else "")
        out.append(
            rf"\item \textbf{{{lab}}} ({f['excluded_unconverged']} unconverged masks "
            rf"excluded).{unfaithful} Modules: "
            rf"{tex_escape(module_verdict(io['verdict'], control))}; sharing "
            rf"{tex_escape(io['verdict'])} (IoMin between tasks "
            rf"{fmt_iv(io['cross_task'], 1)}\%, same task other seed "
            rf"{fmt_iv(io['same_task'], 1)}\%, chance {fmt_iv(io['chance'], 1)}\%). "
            rf"Selective ablation (task-specific weights removed): "
            rf"{tex_escape(sel['verdict'])} (drop on the own set {fmt_iv(sel['own'], 1)} "
            rf"points, on the other sets {fmt_iv(sel['other'], 1)}). Inverted mask (own set): "
            rf"{tex_escape(inv['verdict'])}"
            + (rf" ({inv['degenerate_excluded']} degenerate evaluations not reported)"
               if inv["degenerate_excluded"] else "")
            + rf". Complement protocol: {tex_escape(comp['verdict'])} (relative drop "
            rf"{fmt_iv(comp['own'], 1, 100)}\% on the task, {fmt_iv(comp['other'], 1, 100)}\% "
            r"on the others).")
    trends = summary.get("trends", {}).get(fam)
    if trends:
        out.append(r"\item \textbf{Over training} (first to last checkpoint, change across "
                   r"networks, reported only beyond the spread between networks): "
                   + "; ".join(f"{tex_escape(k)} {tex_escape(v['verdict'])} (change "
                               f"{fmt_iv(v.get('change'), 3)})"
                               for k, v in trends.items()) + ".")
    out.append(r"\end{itemize}")
    return out


def _seen(f: Mapping[str, Any]) -> bool | None:
    """Did the method separate this family's modules (sharing ``distinct`` or selective
    ablation ``specific``)? None when neither verdict is testable."""
    v = [f.get(k, {}).get("verdict", "not testable") for k in ("iomin", "selective_drop")]
    if any(x.startswith(("distinct", "specific")) for x in v):
        return True
    return None if all(x.startswith("not testable") for x in v) else False


def control_conclusion(summary: Mapping[str, Any], ms: Mapping[str, float],
                       control: str = "control") -> str | None:
    """What the positive control says about the method, from the verdicts at the last
    checkpoint with control masks (plain text, to follow a "Positive control:" heading;
    None without control masks)."""
    cks = [ck for ck, e in summary["checkpoints"].items()
           if e["families"].get(control, {}).get("runs")]
    if not cks:
        return None
    ck = cks[-1]
    fams = summary["checkpoints"][ck]["families"]
    c = fams[control]
    seen = _seen(c)
    shapes = [f for f in fams if f != control and fams[f].get("runs")]
    shape_seen = [f for f in shapes if _seen(fams[f])]
    lab = checkpoint_label(ck, ms[ck])
    why = (f"sharing {c['iomin']['verdict']}; selective ablation "
           f"{c['selective_drop']['verdict']}")
    if seen is None:
        head = (f"At {lab} the control is not testable ({why}), so whether the method can "
                "see distinct modules at all is open")
    elif seen and not shape_seen:
        head = (f"At {lab} the method separates the control's modules "
                f"({why}) but not the shape modules: a finding about the shapes")
    elif seen:
        head = (f"At {lab} the method separates the control's modules "
                f"({why}) and those of {', '.join(shape_seen)}")
    elif shape_seen:
        head = (f"At {lab} the method does not separate the control's "
                f"modules ({why}), yet separates those of {', '.join(shape_seen)}: the "
                "control does not behave as designed, so read the shape verdicts with care")
    else:
        head = (f"At {lab} the method separates neither the control's "
                f"modules ({why}) nor the shape modules: it has not been shown able to see "
                "modules, so the shape verdicts do not show that shape modules are absent")
    return head + "."


def _figure(name: str, caption: str) -> list[str]:
    return [r"\begin{figure}[ht]", r"\centering",
            rf"\includegraphics[width=\textwidth]{{{name}}}", rf"\caption{{{caption}}}",
            rf"\label{{fig:{name.replace('_', '')}}}", r"\end{figure}"]


def results_tex(summary: Mapping[str, Any], milestones: Mapping[str, float],
                control: tuple[bool, str] = (False, "no composite control"), *,
                masks: MaskConfig) -> str:
    """A section per family with masks, then the comparison with the original study;
    ``control``: :func:`control_state` of the run; ``masks``: its mask settings."""
    lines = ["% GENERATED by `python -m paper` from summary.json: do not edit."]
    for fam in families(summary):
        name = tex_escape(fam)
        lines += [rf"\subsection{{Task family \texttt{{{name}}}}}",
                  tex_escape(FAMILIES[fam].description[0].upper()
                             + FAMILIES[fam].description[1:]) + "."]
        lines += _verdicts(summary, fam, milestones, control)
        lines += _table(summary, fam, milestones, masks)
        lines += _figure(f"sharing_{fam}", rf"Family \texttt{{{name}}}: IoMin between "
                         r"modules per checkpoint; diagonal: same task, other mask seed (the "
                         r"null); brackets: chance.")
        lines += _figure(f"ablation_{fam}", rf"Family \texttt{{{name}}}: accuracy after "
                         r"each ablation, task $\times$ evaluated set; hatched: degenerate "
                         r"(constant logits), not reported.")
    concl = control_conclusion(summary, milestones)
    if concl:
        lines += [r"\paragraph{Positive control.} " + tex_escape(concl)]
    if "original" in families(summary):
        lines += original_comparison(summary, milestones)
    return "\n".join(lines) + "\n"


def original_comparison(summary: Mapping[str, Any], ms: Mapping[str, float]) -> list[str]:
    """The side-by-side with the original study, on the original family only."""
    cks = list(summary["checkpoints"])
    first, last = _fam(summary, cks[0], "original"), _fam(summary, cks[-1], "original")
    tr = summary.get("trends", {}).get("original", {})
    lo, hi = original.IOMIN_RANGE[90]

    def v(key: str) -> str:
        return tex_escape(tr.get(key, {}).get("verdict", "not testable (one checkpoint)"))

    rows = [
        (r"sparser over training (\%)",
         f"{fmt_iv(first.get('sparsity'), 1)} $\\to$ {fmt_iv(last.get('sparsity'), 1)}",
         f"{fmt(original.SPARSITY[50], 0)} $\\to$ {fmt(original.SPARSITY[90], 0)}",
         v("sparsity")),
        ("less dispersed",
         f"{fmt_iv(first.get('dispersity'), 3)} $\\to$ {fmt_iv(last.get('dispersity'), 3)}",
         f"{fmt(original.DISPERSITY[50], 2)} $\\to$ {fmt(original.DISPERSITY[90], 2)}",
         v("dispersity")),
        (r"shape modules share weights (IoMin \%, last checkpoint)",
         f"{fmt_iv(last.get('iomin', {}).get('cross_task'), 0)} (same task "
         f"{fmt_iv(last.get('iomin', {}).get('same_task'), 0)}, chance "
         f"{fmt_iv(last.get('iomin', {}).get('chance'), 0)})",
         f"{fmt(lo, 0)}--{fmt(hi, 0)}, no null",
         tex_escape(last.get("iomin", {}).get("verdict", "not testable"))),
    ]
    out = [r"\subsection{Side by side with the original study (family \texttt{original})}",
           r"\begin{table}[ht]", r"\centering\footnotesize",
           rf"\caption{{Ours (first $\to$ last checkpoint, {_label(cks[0], ms)} "
           rf"$\to$ {_label(cks[-1], ms)}; mean [\CILevel\% CI across networks]) "
           r"beside the original study's SCL\_50 $\to$ SCL\_90 (one mask per setting, no "
           r"intervals, no nulls). Verdicts from our data.}",
           r"\begin{tabular}{@{}p{3.4cm}p{4.6cm}p{2.6cm}p{4.2cm}@{}}", r"\toprule",
           r"finding & ours & original study & verdict \\", r"\midrule"]
    out += [" & ".join(r) + r" \\" for r in rows]
    out += [r"\bottomrule", r"\end{tabular}", r"\label{tab:original}", r"\end{table}"]
    return out


# ------------------------------------------------------------------------- README table


def converged_cell(f: Mapping[str, Any]) -> str:
    """``converged of runs (levelled off before the lr anneal)``."""
    return f"{f['converged']} of {f['runs']} ({f['plateaued']})"


def convergence_rule(m: MaskConfig) -> str:
    """The inclusion rule in words, from the masks settings (an accuracy bound of 100 points
    or more is no bound: the rule is the density's alone)."""
    window = fmt(100 * m.converge_window, 0)
    moves = f"the read-out density moved <= {fmt(m.converge_density, 1)} point(s)"
    if m.converge_acc < 100:
        problems = "all" if not m.curve_n else f"the first {m.curve_n}"
        moves += (f" and the masked accuracy (on {problems} validation problems of its set) <= "
                  f"{fmt(m.converge_acc, 1)} point(s)")
    return f"{moves} over the last {window}% of the steps"


def plateau_note(m: MaskConfig) -> str:
    """What the column ``converged`` counts (README and paper tables)."""
    return (f"converged: {convergence_rule(m)} (only those enter the numbers); in brackets, how "
            f"many runs' density alone had levelled off (<= {fmt(m.converge_density, 1)} "
            f"point(s) per {fmt(100 * m.converge_window, 0)}% of the steps) before any "
            "learning-rate anneal; that continuing a run changes nothing is the validation "
            "suite's continuation check")


def _restarted(summary: Mapping[str, Any]) -> str:
    """`` (network 1 re-initialised at chance 1x)`` for the README head; '' when none was."""
    done = summary.get("restarts", {})
    return (" (re-initialised at chance: " + ", ".join(f"network {n} {k}x" for n, k in
                                                      done.items()) + ")") if done else ""


def results_markdown(summary: Mapping[str, Any], milestones: Mapping[str, float],
                     control: tuple[bool, str] = (False, "no composite control"), *,
                     masks: MaskConfig) -> str:
    """The README's results table (markdown) from ``summary.json``; ``control``:
    :func:`control_state` of the run (the modules column: :func:`module_verdict`); ``masks``:
    its mask settings (the inclusion rule's wording)."""
    level = fmt(100 * summary["ci_level"], 0)
    head = (f"Profile `{summary['profile']}`, metrics-config hash `{summary['config_hash'][:12]}`, "
            f"{len(summary['networks'])} networks{_restarted(summary)}; mean [{level}% CI across networks, mask "
            "seeds nested], converged masks at the selected alpha, accuracies on the report "
            f"split. Column {plateau_note(masks)}. Generated by `python -m paper readme` from "
            "`summary.json`: do not edit.\n")
    lines = [head, "| checkpoint | val / test acc. (%) | family | converged | sparsity (%) | "
                   "dispersity | IoMin cross / same-task / chance (%) | modules | selective "
                   "ablation |",
             "|---|---|---|---|---|---|---|---|---|"]
    unmasked = set()
    for ck, e in summary["checkpoints"].items():
        acc = f"{fmt_iv(e['val_acc'], 1)} / {fmt_iv(e['test_acc'], 1)}"
        for fam in families(summary):
            f = e["families"].get(fam)
            if not f or not f.get("runs"):
                unmasked.add(fam)
                continue
            io = f["iomin"]
            lines.append("| " + " | ".join([
                checkpoint_label(ck, milestones[ck]), acc, fam,
                converged_cell(f), fmt_iv(f["sparsity"], 1),
                fmt_iv(f["dispersity"], 3),
                f"{fmt_iv(io['cross_task'], 0)} / {fmt_iv(io['same_task'], 0)} / "
                f"{fmt_iv(io['chance'], 0)}", module_verdict(io["verdict"], control),
                f["selective_drop"]["verdict"].split(" (")[0]]) + " |")
            acc = ""
    outside = [f"{checkpoint_label(ck, milestones[ck])} ({', '.join(e['alpha_outside_tolerance'])})"
               for ck, e in summary["checkpoints"].items() if e.get("alpha_outside_tolerance")]
    if outside:
        lines += ["", "Selected alpha more than the tolerance below the unmasked accuracy (select "
                      "split; no alpha was within it, so these modules are not faithful to the "
                      "network): " + "; ".join(outside) + "."]
    if unmasked:
        lines += ["", f"No row: no masks of that family at that checkpoint ("
                      f"{', '.join(sorted(unmasked))}: `masks.families_last`)."]
    lines += ["", "Column modules: " + modules_note(control)]
    concl = control_conclusion(summary, milestones)
    if concl:
        lines += ["", "Positive control: " + concl]
    trend_rows = [f"- {fam}: " + "; ".join(f"{k} {v['verdict']}" for k, v in t.items())
                  for fam, t in summary.get("trends", {}).items()]
    if trend_rows:
        lines += ["", "Trends from the first to the last checkpoint (beyond the spread between "
                      "networks only):", *trend_rows]
    return "\n".join(lines) + "\n"


def stage_times_markdown(times: Mapping[str, float]) -> str:
    """The run's wall time per stage (``results/<profile>/stage_times.json``), one line."""
    grouped: dict[str, float] = {}
    for name, t in times.items():
        grouped[name.split("@")[0]] = grouped.get(name.split("@")[0], 0.0) + t
    total = sum(grouped.values())
    parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in grouped.items())
    return (f"\nWall time of this run (`make repro` on the default machine, minutes; each stage "
            f"from the log of the run that made its outputs): {total / 60:.1f} in all; "
            f"{parts}.\n")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min"


def commands_markdown(stage_times: Mapping[str, float], tests: Mapping[str, Any]) -> str:
    """The README's opening block: the two commands with their measured times (stage times of
    the committed reference run; ``results/test_times.json`` for the test suite)."""
    repro = sum(stage_times.values())
    return ("```bash\n"
            f"make repro   # the whole study, default profile: ~{_minutes(repro)} on 2 CPU cores\n"
            f"make test    # the test suite: ~{_minutes(tests['suite_s'])} "
            f"(make test-fast: ~{_minutes(tests['fast_s'])})\n"
            "```\n\n"
            f"Measured: `make repro`, {repro / 60:.1f} min of stages in the committed reference "
            "run (`results/default/stage_times.json`, the default machine); `make test`, "
            f"{tests['suite_s'] / 60:.1f} min, and `make test-fast` (`-m \"not slow\"`), "
            f"{tests['fast_s'] / 60:.1f} min of CPU time (how, and per test: "
            "`results/test_times.json`).\n")


def finding_markdown(summary: Mapping[str, Any], control: Sequence[Mapping[str, Any]] = (),
                     masks: Mapping[str, Any] | None = None) -> str:
    """One sentence: what the run found (the original family's trends over training) and what
    the composite positive control (``control[0]``: the profile's mask settings) says of it;
    with ``masks`` (the run's mask settings), only a control run at those settings speaks for
    the run's masks."""
    trends = summary.get("trends", {}).get("original", {})
    by: dict[str, list[str]] = {}
    for k in sorted(trends, key=lambda k: list(TREND_NAMES).index(k) if k in TREND_NAMES
                    else len(TREND_NAMES)):
        by.setdefault(trends[k]["verdict"].split(" (")[0], []).append(TREND_NAMES.get(k, k))
    parts = [(", ".join(v[:-1]) + " and " if len(v) > 1 else "") + f"{v[-1]} {verdict}"
             for verdict, v in by.items()]
    text = ("**What it found**: the original study's trends over training, for the original "
            "task family: " + ("; ".join(parts) if parts else "not measured"))
    if control and masks is not None and not same_mask_settings(control[0], masks):
        return text + ("; the composite positive control's result was made at other mask "
                       "settings than these results', so it says nothing of their masks.\n\n")
    text += _modules_found(summary, control_state(control, masks))
    if control:
        v = control[0]["verdict"]
        passed = [r for r in control[1:] if r["verdict"]["passes"]]
        text += (f"; the masks of the profile's settings {'pass' if v['passes'] else 'fail'} "
                 "the composite positive control")
        if not v["passes"]:
            text += (" (longer mask runs pass it)" if passed else "")
            text += (", so the method has not been shown able to see modules at these settings "
                     "and the shape verdicts do not show that modules are absent")
    return text + ".\n\n"


def _modules_found(summary: Mapping[str, Any], control: tuple[bool, str]) -> str:
    """``; at SCL_80 the shape modules: <module verdict> (k of n masks converged)`` for the
    original family's last checkpoint with masks ('' without one)."""
    last = [(ck, e["families"]["original"]) for ck, e in summary["checkpoints"].items()
            if e.get("families", {}).get("original", {}).get("runs")]
    if not last:
        return ""
    ck, f = last[-1]
    return (f"; at {ck.upper()} the shape modules: {module_verdict(f['iomin']['verdict'], control)}"
            f" ({f['converged']} of {f['runs']} masks passed the per-run convergence flag)")


def same_mask_settings(control: Mapping[str, Any], masks: Mapping[str, Any]) -> bool:
    """Whether a control result's mask settings are ``masks`` (on every key it records)."""
    ran = mask_settings(dict(control))
    return all(float(ran[k]) == float(masks[k]) if isinstance(ran[k], (int, float))
               and not isinstance(ran[k], bool) else ran[k] == masks[k]
               for k in ran if k in masks)


TREND_NAMES = {"sparsity": "sparsity", "dispersity": "dispersity",
               "dispersity_norm": "random-normalised dispersity"}

CONTROL_README_HEAD = (
    "# The composite positive control: committed results\n\n"
    "Generated by `python -m paper readme --control results/control` (`make readme`) from every "
    "`*.json` in this folder, `control.json` (the profile's own mask settings) first: do not "
    "edit. What the control is and the command behind each file: [README](../../README.md"
    "#can-the-method-find-modules-where-they-exist-make-validate) and the "
    "`Makefile` (target `control`); what was decided from it: "
    "[docs/decisions.md](../../docs/decisions.md#are-the-masks-near-their-optimum). Read the "
    "\"kept in own network\" column, the verdicts and the comparison at the end.\n")


# ------------------------------------------------------------------------- control.tex


def control_tex(results: Sequence[Mapping[str, Any]]) -> str:
    """``control.tex``: the composite positive control (``python -m core.control``), one
    paragraph and table per ``control.json`` given, every number from it; a sentence saying it
    was not run when none is given."""
    head = "% GENERATED by `python -m paper` from control.json: do not edit.\n"
    if not results:
        return head + (r"\paragraph{Composite positive control.} Not run for this report "
                       r"(\texttt{python -m core.control run}; \texttt{make control}).") + "\n"
    return (head + "\n".join(_control_tex(r, i == 0) for i, r in enumerate(results))
            + tex_escape(comparison_text(list(results))) + "\n")


def _control_tex(result: Mapping[str, Any], first: bool) -> str:
    m, ref, rows, p = mask_settings(result), result["reference"], result["rows"], result["iomin"]
    tasks = sorted({r["task"] for r in rows})
    pct = lambda v: ", ".join(f"{100 * x:.0f}" for x in v) or "none"  # noqa: E731
    intro = (r"\paragraph{Composite positive control.} Two SCLs of this architecture, "
             r"one trained only on \texttt{color\_rule} problems and one only on "
             r"\texttt{size\_rule} problems, their logits summed: the modules of the two tasks "
             r"are disjoint by construction of the weights, and each network is harmful on the "
             r"other's task. " if first else r"\paragraph{The same control, other mask settings.} ")
    lines = [intro + r"Unmasked composite / colour network / size network test accuracy: "
             + "; ".join(f"{tex_escape(t)} {ref['composite'][t]:.1f} / "
                         f"{ref['net_color_rule'][t]:.1f} / {ref['net_size_rule'][t]:.1f}\\%"
                         for t in tasks)
             + ". Masks with " + tex_escape(settings_label(result)).replace("`", "")
             + rf" ({m['steps']} steps, lr {m['lr']:g}, $\alpha={sci(m['alpha'])}$, read-out "
             rf"logit $>{m['readout']:g}${tex_escape(noise_text(m))}): IoMin "
             rf"cross-task {pct(p['cross'])}\% vs same-task {pct(p['same'])}\%. "
             rf"Verdict: the method {tex_escape(result['verdict']['text'])}.",
             r"\begin{center}\small", r"\begin{tabular}{llrrrrl}", r"\hline",
             r"mask & seed & density (\%) & in own network (\%) & acc.\ own (\%) & "
             r"acc.\ other (\%) & converged \\", r"\hline"]
    for r in sorted(rows, key=lambda r: (r["task"], r["seed"])):
        other = next(t for t in tasks if t != r["task"])
        lines.append(rf"\texttt{{{tex_escape(r['task'])}}} & {r['seed']} & {r['density']:.1f} & "
                     rf"{100 * r['own']:.0f} & {r['acc_' + r['task']]:.1f} & "
                     rf"{r['acc_' + other]:.1f} & {'yes' if r['converged'] else 'no'} \\")
    lines += [r"\hline", r"\end{tabular}", r"\end{center}"]
    return "\n".join(lines) + "\n"
