"""Assemble problems: rules per component, the 3x3 matrix, an answer set, rendering, metadata.

Every problem draws from its own generator seeded by ``(seed, configuration, subset, index)``,
so a problem does not depend on which process made it or on what was made before:
``--workers 1`` and ``--workers 2`` give byte-identical files.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from core.config import CONFIGURATIONS
from core.raven import answers as answer_sets
from core.raven.attributes import ANGLES, ATTRIBUTES, COLOR, RULES, SIZE, Subset, SubsetError
from core.raven.configurations import MAX_COMPONENTS, MAX_SLOTS, components
from core.raven.render import Renderer, check_size
from core.raven.rules import can_vary, sample_component
from core.raven.store import shapes_from_attrs


@dataclass(frozen=True)
class Job:
    """Problems ``start..stop-1`` of one configuration and subset."""

    configuration: str
    subset: Subset
    start: int
    stop: int
    seed: int
    size: int
    answers: str


def problem_rng(seed: int, configuration: str, subset: Subset, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, CONFIGURATIONS.index(configuration), subset.code, index])


def sample(rng: np.random.Generator, comps, answers: str, subset: Subset | None = None):
    """Panel states (16), angles (16 x C x S), rules (C x 4) and target of one problem.
    ``subset.rule`` selects the rule regime (``attributes.REGIMES``)."""
    regime = None if subset is None else subset.rule
    first = None
    if regime == "one":
        regime = ("color", "size")[int(rng.integers(2))]
    if regime == "type":  # the candidates branch first on the Type of one component
        first = (int(rng.integers(len(comps))), 1)
        allowed = subset.answer_types()  # type: ignore[union-attr]
    rules, mats = [], []
    for comp in comps:
        answer_type = allowed[int(rng.integers(len(allowed)))] if regime == "type" else None
        r, m = sample_component(rng, comp, regime, answer_type)
        rules.append(r)
        mats.append(m)
    panels = [tuple(mats[c][i // 3][i % 3] for c in range(len(comps))) for i in range(9)]
    angles = [[rng.integers(len(ANGLES), size=len(comp.slots)) for comp in comps]
              for _ in range(9)]
    cands = answer_sets.build(answers, rng, panels[8], comps, rules, first)
    if len(set(cands)) != 8:  # guaranteed by construction; never emit duplicates
        raise AssertionError("duplicate candidates")
    order = rng.permutation(8)
    target = int(np.flatnonzero(order == 0)[0])
    states = panels[:8] + [cands[k] for k in order]
    return states, angles[:8] + [angles[8]] * 8, rules, target


def metadata(comps, states, angles, rules) -> dict[str, np.ndarray]:
    """``attrs`` int8 [16, C, S, 4] and ``rules`` int8 [C, 4, 3] (see ``store``)."""
    attrs = np.full((16, MAX_COMPONENTS, MAX_SLOTS, 4), -1, np.int8)
    for p, (state, ang) in enumerate(zip(states, angles)):
        for c, comp in enumerate(comps):
            mask, t, s, col = state[c]
            for slot in range(len(comp.slots)):
                if mask >> slot & 1:
                    attrs[p, c, slot] = (t, s, col, ang[c][slot])
    rl = np.full((MAX_COMPONENTS, 4, 3), -1, np.int8)
    for c, comp_rules in enumerate(rules):
        for g, r in enumerate(comp_rules):
            rl[c, g] = (r.rule, r.param, r.attribute)
    return {"attrs": attrs, "rules": rl}


def public_meta(configuration: str, comps, rules: np.ndarray) -> dict[str, np.ndarray]:
    """RAVEN-style summaries: ``meta_matrix`` [8, 9] one row per (component, group) rule,
    one-hot over rules then attributes; ``meta_target`` their union; ``structure``."""
    mm = np.zeros((8, len(RULES) + len(ATTRIBUTES)), np.int64)
    for c in range(len(comps)):
        for g in range(4):
            rule, _, attribute = rules[c, g]
            mm[c * 4 + g, rule] = 1
            mm[c * 4 + g, len(RULES) + attribute] = 1
    return {"meta_matrix": mm, "meta_target": mm.max(0),
            "structure": np.array([configuration, *(c.name for c in comps)])}


_RENDERERS: dict[int, Renderer] = {}


def run_job(job: Job) -> dict[str, np.ndarray]:
    """Problems of ``job``, stacked: image, target, shapes, attrs, rules, index."""
    renderer = _RENDERERS.setdefault(job.size, Renderer(job.size))
    comps = components(job.configuration, job.subset)
    out: dict[str, list] = {k: [] for k in ("image", "target", "attrs", "rules", "index")}
    for i in range(job.start, job.stop):
        rng = problem_rng(job.seed, job.configuration, job.subset, i)
        states, angles, rules, target = sample(rng, comps, job.answers, job.subset)
        meta = metadata(comps, states, angles, rules)
        out["image"].append(renderer.problem(comps, states, angles))
        out["target"].append(target)
        out["attrs"].append(meta["attrs"])
        out["rules"].append(meta["rules"])
        out["index"].append(i)
    arrays = {k: np.stack(v) if k in ("image", "attrs", "rules") else np.array(v, np.int64)
              for k, v in out.items()}
    arrays["shapes"] = shapes_from_attrs(arrays["attrs"])
    return arrays


def validate(configuration: str, subset: Subset, size: int, answers: str, n: int) -> None:
    """Check arguments before any work: each bad one raises a ValueError naming it."""
    check_size(size)
    if answers not in answer_sets.ANSWER_SETS:
        raise ValueError(f"--answers: expected one of {', '.join(answer_sets.ANSWER_SETS)}, "
                         f"got {answers!r}")
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"--n: expected a positive number of problems, got {n!r}")
    check_subset(configuration, subset)


def check_subset(configuration: str, subset: Subset) -> None:
    """``SubsetError`` where ``configuration`` cannot hold problems of ``subset``: an empty
    domain, or a rule regime no component can follow (a colour rule where every colour is
    fixed)."""
    comps = components(configuration, subset)
    groups = {"color": (3,), "size": (2,), "one": (2, 3)}.get(subset.rule or "", ())
    for g in groups:
        if not any(can_vary((SIZE, COLOR)[g - 2], c.domain.values(g)) for c in comps):
            raise SubsetError(f"{configuration}: no component can vary "
                              f"{('size', 'color')[g - 2]} (subset {subset.label!r})")


def chunks(jobs: list[Job], size: int = 32) -> list[Job]:
    """Split jobs into pieces of at most ``size`` problems (work units for the pool)."""
    out = []
    for j in jobs:
        for a in range(j.start, j.stop, size):
            out.append(Job(j.configuration, j.subset, a, min(j.stop, a + size), j.seed,
                           j.size, j.answers))
    return out


def bounded_imap(pool, pieces: list[Job], window: int) -> Iterator[dict[str, np.ndarray]]:
    """``pool.imap(run_job, pieces)`` with at most ``window`` pieces in flight: results are
    yielded in order and never pile up in memory when the writer is slower than the workers
    (``Pool.imap`` buffers every finished result)."""
    pending: collections.deque = collections.deque()
    todo = iter(pieces)
    for piece in itertools.islice(todo, window):
        pending.append(pool.apply_async(run_job, (piece,)))
    while pending:
        result = pending.popleft().get()
        nxt = next(todo, None)
        if nxt is not None:
            pending.append(pool.apply_async(run_job, (nxt,)))
        yield result


def run_jobs(jobs: list[Job], workers: int = 1, progress: bool = True, desc: str = "problems",
             concat: bool = True) -> Iterator[tuple[Job, dict]]:
    """Run ``jobs`` (in order; pieces of them in parallel) and yield each with its arrays
    (``concat=False``: each array as the list of its pieces, for writers that stream them)."""
    if workers < 1:
        raise ValueError(f"--workers: expected >= 1, got {workers!r}")
    pieces = chunks(jobs)
    total = sum(j.stop - j.start for j in jobs)
    bar = tqdm(total=total, desc=desc, unit="problem", disable=not progress, leave=False)
    pool = mp.get_context("fork").Pool(workers) if workers > 1 and len(pieces) > 1 else None
    try:
        results = bounded_imap(pool, pieces, 4 * workers) if pool else map(run_job, pieces)
        it = iter(zip(pieces, results))
        for job in jobs:
            parts = []
            while sum(len(p["target"]) for p in parts) < job.stop - job.start:
                piece, arrays = next(it)
                parts.append(arrays)
                bar.update(piece.stop - piece.start)
            lists = {k: [p[k] for p in parts] for k in parts[0]}
            yield job, {k: np.concatenate(v) for k, v in lists.items()} if concat else lists
    finally:
        bar.close()
        if pool:
            pool.terminate()
            pool.join()
