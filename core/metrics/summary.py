"""``summary.json`` from the metric datasets (:func:`summarize`): per checkpoint and task
family, intervals across networks with mask seeds nested inside, converged runs only, and the
verdicts (:mod:`core.stats`); per family the trends from the first to the last checkpoint.

Convergence and degeneracy filters: runs whose masks did not converge, or never trained, are
left out of every interval and counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from core import stats
from core.config import Config
from core.formats.metrics import metrics_hash
from core.metrics.measures import _diag
from core.tasks import FAMILIES


def _pair_mask(conv: xr.DataArray) -> xr.DataArray:
    """Both masks of a pair converged: ``conv`` (task, seed) against itself renamed."""
    other = conv.rename(task="other_task", seed="other_seed")
    return (conv == 1) & (other == 1)


def _ablation_drops(ab: xr.Dataset, tasks: list[str], variant: str, dmax: float,
                    conv: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray, int]:
    """(own-set drop, mean other-set drop, degenerate count) in points for one variant: the
    unmasked accuracy minus the ablated one, degenerate evaluations and unconverged runs
    excluded. Dims of the drops: network, task, seed."""
    acc = ab["accuracy"].sel(variant=variant, task=tasks)
    deg = ab["degenerate"].sel(variant=variant, task=tasks) > dmax
    # evaluations over degenerate_max (their accuracy is NaN in evals.nc: counted all the same)
    n_deg = int(deg.sel(eval_set=[t for t in tasks if t in ab["eval_set"].values]).sum())
    drop = (ab["full_accuracy"] - acc).where(~deg & (conv.sel(task=tasks) == 1))
    sets = [t for t in tasks if t in ab["eval_set"].values]
    own = _diag(drop.reindex(eval_set=sets))
    other = xr.concat([drop.sel(task=t).sel(eval_set=[u for u in sets if u != t])
                       .mean("eval_set") for t in tasks], pd.Index(tasks, name="task"))
    return own, other, n_deg


def _family_summary(ds: Mapping[str, xr.Dataset], fam: str, ck: str, alpha: float,
                    cfg: Config) -> dict[str, Any]:
    md, sh, ab = ds["modules"], ds["sharing"], ds["ablation"]
    level, dmax = cfg.metrics.ci, cfg.masks.degenerate_max
    tasks = [t for t in FAMILIES[fam].tasks if t in md["task"].values]
    m = md.sel(checkpoint=ck, alpha=alpha, task=tasks)
    conv = m["converged"]
    ok = conv == 1
    # runs that never trained (core.formats.masks.degenerate_reason): their read-out keeps no weight
    # or every weight; flagged not converged, so excluded like the unconverged, and counted
    degenerate = conv.notnull() & ((m["density"] <= 0) | (m["density"] >= 100))

    def iv(da: xr.DataArray, inner: Sequence[str] = ("seed",)) -> dict:
        return stats.interval(da, level, inner).as_dict()

    out: dict[str, Any] = {
        "tasks": tasks, "runs": int(conv.notnull().sum()), "converged": int(ok.sum()),
        "excluded_unconverged": int((conv == 0).sum()),  # degenerate runs included
        "excluded_degenerate": int(degenerate.sum()),
        # runs whose density had levelled off before the lr anneal (<= masks.converge_density)
        "plateaued": int((m["density_change_constant"].where(conv.notnull())
                          <= cfg.masks.converge_density).sum()),
        **{v: iv(m[v].where(ok)) for v in ("sparsity", "dispersity", "dispersity_norm",
                                             "acc_report", "acc_full_report")}}
    s = sh.sel(checkpoint=ck, task=tasks, other_task=tasks)
    both = _pair_mask(conv)
    diff = s["task"] != s["other_task"]
    same = ~diff & (s["seed"] != s["other_seed"])
    pair = ("seed", "other_seed")
    masked_here = [t for t in tasks if bool(conv.sel(task=t).notnull().any())]
    for var in ("iomin", "iou"):
        cross = stats.interval(s[var].where(diff & both), level, pair)
        null = stats.interval(s[var].where(same & both), level, pair)
        out[var] = {"cross_task": cross.as_dict(), "same_task": null.as_dict(),
                    "chance": iv(s[f"{var}_chance"].where(diff & both), pair),
                    "verdict": stats.distinct_verdict(cross, null) if len(masked_here) > 1
                    else "not testable (one task masked at this checkpoint: masks.tasks_early)"}
    a = ab.sel(checkpoint=ck, alpha=alpha, split="report")
    for variant in ("inverted", "selective"):
        own, other, n_deg = _ablation_drops(a, tasks, variant, dmax, conv)
        io, ioth = stats.interval(own, level), stats.interval(other, level)
        out[f"{variant}_drop"] = {"own": io.as_dict(), "other": ioth.as_dict(),
                                  "degenerate_excluded": n_deg,
                                  "verdict": stats.drop_verdict(io, ioth)}
    c_own = a["complement_drop_own"].sel(task=tasks).where(ok)
    c_oth = a["complement_drop_other"].sel(task=tasks).where(ok)
    co, cot = stats.interval(c_own, level), stats.interval(c_oth, level)
    out["complement_drop"] = {"own": co.as_dict(), "other": cot.as_dict(),
                              "verdict": stats.drop_verdict(co, cot),
                              "per_task": {t: {"own": iv(c_own.sel(task=t)),
                                               "other": iv(c_oth.sel(task=t))} for t in tasks}}
    return out


def _trend(md: xr.Dataset, var: str, tasks: list[str], level: float, sign: int) -> dict:
    """First vs last checkpoint of ``var`` (converged runs, each checkpoint's selected
    alpha) over the tasks masked at both: the interval of the per-network change and the
    between-network spread. Only the checkpoints with masks of ``tasks`` count
    (``masks.families_last``: the last only)."""
    cks = [ck for ck in md["checkpoint"].values
           if bool(md["converged"].sel(checkpoint=ck, task=tasks).notnull().any())]
    if len(cks) < 2:
        return {"verdict": "not testable (masks at fewer than two checkpoints)"}
    # the tasks masked at both ends (masks.tasks_early: fewer before the last checkpoint), so
    # that the change compares the same tasks
    tasks = [t for t in tasks if all(bool(md["converged"].sel(checkpoint=ck, task=t)
                                          .notnull().any()) for ck in (cks[0], cks[-1]))]
    if not tasks:
        return {"verdict": "not testable (no task masked at both the first and last checkpoint)"}
    ends = []
    for ck in (cks[0], cks[-1]):
        a = float(md["selected_alpha"].sel(checkpoint=ck))
        if not np.isfinite(a):
            return {"verdict": "not testable (no alpha selected)"}
        m = md.sel(checkpoint=ck, alpha=a, task=tasks)
        ends.append(m[var].where(m["converged"] == 1).mean(["task", "seed"], skipna=True))
    if not all(bool(np.isfinite(e).any()) for e in ends):  # e.g. every run never trained
        return {"verdict": "not testable (no converged masks at the first or last checkpoint)"}
    change = stats.interval(ends[1] - ends[0], level, ())
    spread = max(stats.between_spread(e) for e in ends)
    return {"change": change.as_dict(), "network_spread": round(spread, 3),
            "verdict": stats.trend_verdict(change, spread, sign)}


def _failing(ok: xr.DataArray, ck: str, alpha: float) -> list[str]:
    """Tasks whose ``alpha_ok`` is 0 at ``alpha`` (NaN: not masked there, not counted)."""
    if not np.isfinite(alpha):
        return []
    v = ok.sel(checkpoint=ck, alpha=alpha)
    return [str(t) for t, x in zip(v["task"].values, v.values) if x == 0]


def _min_int(da: xr.DataArray) -> int | None:
    """The fewest problems behind an evaluation; 0 marks a pair that was not evaluated
    (``core.sweep.eval_plan``), so zeros do not count."""
    v = da.values[np.isfinite(da.values) & (da.values > 0)]
    return int(v.min()) if v.size else None


def summarize(ds: Mapping[str, xr.Dataset], cfg: Config) -> dict[str, Any]:
    """``summary.json``: per checkpoint the achieved val/test accuracy (across networks), the
    selected alpha, the fewest report-split problems behind an accuracy, and per task family the module scalars, sharing beside its nulls, ablation
    and complement drops with verdicts and the convergence counts; per family the trends from
    the first to the last checkpoint. Intervals: mean over mask seeds within each network,
    then the ``metrics.ci`` t-interval across networks; converged runs only."""
    md, level = ds["modules"], cfg.metrics.ci
    fams = [f for f in FAMILIES if any(t in md["task"].values for t in FAMILIES[f].tasks)]
    out: dict[str, Any] = {"config_hash": metrics_hash(cfg), "profile": cfg.profile,
                           "networks": [int(n) for n in md["network"].values],
                           # networks re-initialised at chance (train.restart_after): count
                           "restarts": {str(int(n)): int(r) for n, r in
                                        zip(md["network"].values, md["restarts"].values) if r},
                           # mask runs (every alpha) that never trained: excluded everywhere
                           "degenerate_runs": int((md["converged"].notnull() & (
                               (md["density"] <= 0) | (md["density"] >= 100))).sum()),
                           "ci_level": level, "checkpoints": {}, "trends": {}}
    for ck in md["checkpoint"].values:
        a = float(md["selected_alpha"].sel(checkpoint=ck))
        entry: dict[str, Any] = {
            "val_acc": stats.interval(md["ckpt_val_acc"].sel(checkpoint=ck), level,
                                      ()).as_dict(),
            "test_acc": stats.interval(md["ckpt_test_acc"].sel(checkpoint=ck), level,
                                       ()).as_dict(),
            "alpha": a if np.isfinite(a) else None,
            # tasks whose masks at the selected alpha lose more than metrics.alpha_tolerance
            # points on the select split (the rule's fallback when no alpha is within it):
            # their modules are not faithful to the unmasked network
            "alpha_outside_tolerance": _failing(md["alpha_ok"], str(ck), a),
            "report_problems_min": _min_int(ds["ablation"]["n_problems"].sel(
                checkpoint=ck, split="report", variant="mask")),
            "families": {}}
        if np.isfinite(a):
            entry["families"] = {f: _family_summary(ds, f, str(ck), a, cfg) for f in fams}
        out["checkpoints"][str(ck)] = entry
    if md.sizes["checkpoint"] > 1:
        for f in fams:
            tasks = [t for t in FAMILIES[f].tasks if t in md["task"].values]
            out["trends"][f] = {v: _trend(md, v, tasks, level, sign) for v, sign in (
                ("sparsity", +1), ("dispersity", -1), ("dispersity_norm", -1))}
    return out
