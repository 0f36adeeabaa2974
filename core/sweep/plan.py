"""The plan of one network's mask sweep: which masks (:func:`plan`, over :func:`mask_sets`),
what each set is to its family (:func:`role`) and what ``evals.nc`` evaluates
(:func:`eval_plan` on :func:`eval_sets`); the rules are in :mod:`core.sweep`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.config import Config, MaskConfig
from core.formats.masks import mask_name
from core.tasks import FAMILIES, selects, shape_selected


@dataclass(frozen=True)
class PlannedMask:
    """A planned mask run: trained on ``task`` (of ``family``) at ``checkpoint``; its final
    accuracies compare ``task`` with ``complement`` (None for a family's reference set)."""

    checkpoint: str
    family: str
    task: str
    complement: str | None
    alpha: float
    seed: int

    @property
    def name(self) -> str:
        return mask_name(self.task, self.alpha, self.seed)

    @property
    def relpath(self) -> str:
        return f"{self.checkpoint}/{self.name}.pt"


def mask_sets(mc: MaskConfig) -> list[tuple[str, str, str | None, bool]]:
    """(family, set, complement, is_task) of every set masks are trained on, in order."""
    out: dict[str, tuple[str, str, str | None, bool]] = {}
    for fam_name in mc.families:  # known families (core.config checks them)
        fam = FAMILIES[fam_name]
        tasks = selects(fam, mc.tasks)
        for t in tasks:
            out.setdefault(t, (fam_name, t, fam.complement(t), True))
        if fam_name in mc.complement_masks:
            for t in tasks:
                c = fam.complement(t)
                out.setdefault(c, (fam_name, c, t, False))
            if fam.reference is not None:
                out.setdefault(fam.reference, (fam_name, fam.reference, None, False))
    return list(out.values())


def plan(cfg: Config) -> list[PlannedMask]:
    """Every mask run of one network, grouped by checkpoint (the rules: :mod:`core.sweep`)."""
    mc = cfg.masks
    sets = mask_sets(mc)
    runs: dict[str, PlannedMask] = {}
    last = cfg.checkpoints[-1]
    for ckpt in cfg.checkpoints:
        for fam, task, comp, is_task in sets:
            if fam in mc.families_last and ckpt != last:
                continue
            if ckpt != last and mc.tasks_early and not shape_selected(task, mc.tasks_early):
                continue
            for seed in mc.seeds if is_task else mc.seeds[:1]:
                r = PlannedMask(ckpt, fam, task, comp, float(mc.alpha), int(seed))
                runs.setdefault(r.relpath, r)
        if ckpt == last:
            for fam, task, comp, is_task in sets:
                if not is_task or fam in mc.families_last:
                    continue
                for alpha in mc.alpha_sweep:
                    r = PlannedMask(ckpt, fam, task, comp, float(alpha), int(mc.seeds[0]))
                    runs.setdefault(r.relpath, r)
    return list(runs.values())


def role(r: PlannedMask) -> str:
    """``task``, ``complement`` or ``reference``: what the run's set is to its family."""
    fam = FAMILIES[r.family]
    return "task" if r.task in fam.tasks else "reference" if r.task == fam.reference else \
        "complement"


def eval_plan(runs: Sequence[PlannedMask], mc: MaskConfig
              ) -> dict[str, dict[str, set[tuple[str, str]]]]:
    """What ``evals.nc`` evaluates for each run (key: the run's name), all on the family's
    task sets (those selected by ``masks.tasks``): a task mask at ``masks.alpha``: the mask
    on its own set (select and report split) and the other tasks' sets (report), the
    selective ablation on every task set (report), the inverted ablation on its own set
    (report) only: with the whole module removed SCL outputs equal logits for all candidates
    (degenerate on 160 of 160 evaluations of the reference run, 100% of problems each), so
    the other sets would cost a fifth of the evaluation and add only degenerate entries (the
    own set still shows the degeneracy); an alpha-sweep mask: the mask on its
    own set (both splits: the selection rule reads select); a complement or reference mask:
    its own set (both splits) and every task set (report; the complement protocol). The
    specificity, sharing and complement numbers read nothing else, so nothing else is paid
    for (measured: evaluating 3 variants x 10 sets x 2 splits per mask cost more than
    training it)."""
    out: dict[str, dict[str, set[tuple[str, str]]]] = {}
    for r in runs:
        tasks = [t for t in FAMILIES[r.family].tasks if shape_selected(t, mc.tasks)]
        own = {(r.task, "select"), (r.task, "report")}
        report = {(t, "report") for t in tasks}
        if role(r) != "task":
            out[r.name] = {"mask": own | report}
        elif r.alpha == float(mc.alpha):
            out[r.name] = {"mask": own | report, "inverted": {(r.task, "report")},
                           "selective": report}
        else:
            out[r.name] = {"mask": own}
    return out


def eval_sets(runs: Sequence[PlannedMask], shapes: Sequence[str]) -> list[str]:
    """Evaluation sets of a checkpoint's masks: their families' task sets (those naming a
    shape only when it is in ``shapes`` = ``masks.tasks``), plus every set a mask was trained
    on (a complement or reference set, for instance)."""
    names = [s for fam in dict.fromkeys(r.family for r in runs) for s in FAMILIES[fam].tasks
             if shape_selected(s, shapes)]
    return list(dict.fromkeys([*names, *(r.task for r in runs)]))
