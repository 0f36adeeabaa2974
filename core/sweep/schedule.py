"""The loop of :meth:`core.sweep.sweep.Sweep.run` (:class:`Schedule`): mask runs and evaluation
parts share one pool, a checkpoint's parts submitted as soon as its last mask is written; the
two progress bars (``core.progress``) and the timing summary (:meth:`Schedule.summary`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.formats.evals import EVALS
from core.io import atomic_write_bytes
from core.progress import bar as progress_bar
from core.sweep.executors import make_executor
from core.sweep.jobs import evaluate_one, train_chunk, train_one
from core.sweep.plan import PlannedMask

if TYPE_CHECKING:
    from core.sweep.sweep import Sweep


def chunks(todo: Sequence[PlannedMask], group: int) -> list[list[PlannedMask]]:
    """``todo`` in calls: runs of one checkpoint in chunks of up to ``group`` (``masks.group``
    > 1, :func:`core.sweep.jobs.train_chunk`), in order."""
    out: list[list[PlannedMask]] = []
    for r in todo:
        if out and out[-1][0].checkpoint == r.checkpoint and len(out[-1]) < group:
            out[-1].append(r)
        else:
            out.append([r])
    return out


class Schedule:
    """One run of a sweep: its pool (:func:`core.sweep.executors.make_executor`), the runs to
    train, the masks each checkpoint still waits for, its evaluated parts, bars and timings."""

    def __init__(self, sweep: Sweep, todo: Sequence[PlannedMask], executor: str, workers: int,
                 progress: bool):
        self.sweep, self.todo, self.progress = sweep, list(todo), progress
        self.executor, self.workers = executor, workers
        self.pool = make_executor(executor, workers, sweep.cfg.masks.threads)
        self.by_path = {r.relpath: r for r in self.todo}
        self.timings: list[dict] = []
        self.eval_seconds: dict[str, float] = {}
        self.parts: dict[str, list[dict]] = {}
        self.n_parts: dict[str, int] = {}
        ckpts = sweep.cfg.checkpoints
        self.remaining = {c: sum(r.checkpoint == c for r in self.todo) for c in ckpts}
        off = {} if progress else {"disable": True}
        self.mask_bar = progress_bar(total=len(self.todo), desc=f"masks net{sweep.network}",
                                     unit="mask", **off)
        # one evaluation part per (family, seed) of a checkpoint's masks (Sweep.eval_parts)
        self.expected = {c: len({(r.family, r.seed) for r in sweep.runs if r.checkpoint == c})
                         for c in ckpts}
        self.eval_bar = progress_bar(total=sum(self.expected.values()), unit="part", position=1,
                                     desc=f"evaluate net{sweep.network}", **off)

    def submit_runs(self) -> None:
        """Every run to train: one call per chunk (:func:`chunks`)."""
        for chunk in chunks(self.todo, self.sweep.cfg.masks.group):
            model, jobs, arrays = self.sweep.jobs(chunk)
            if len(chunk) == 1:
                self.pool.submit(("run", chunk[0].relpath), train_one, jobs[0], model,
                                 *arrays[0])
            else:
                self.pool.submit(("run", tuple(r.relpath for r in chunk)), train_chunk, jobs,
                                 model, arrays)

    def evaluate(self, ckpt: str) -> None:
        """Submit the evaluation parts of ``ckpt`` (none when its ``evals.nc`` is up to date)."""
        todo_parts = self.sweep.eval_parts(ckpt)
        bar = self.eval_bar
        if todo_parts is None:
            self.sweep.log(f"{self.sweep.out / ckpt / EVALS}: up to date")
            bar.total -= self.expected[ckpt]
            bar.refresh()
            return
        if bar.n == 0 and not self.eval_seconds:  # the first parts: the bar's clock starts now
            bar.reset(total=bar.total)
        bar.total += len(todo_parts) - self.expected[ckpt]
        self.parts[ckpt], self.n_parts[ckpt], self.eval_seconds[ckpt] = [], len(todo_parts), 0.0
        for i, (job, args) in enumerate(todo_parts):
            self.pool.submit(("eval", ckpt, i), evaluate_one, job, *args)

    def drain(self) -> None:
        """Evaluate the checkpoints with nothing to train, then take every result as the pool
        hands it back until none is left."""
        for ckpt in self.sweep.cfg.checkpoints:
            if self.remaining[ckpt] == 0:
                self.evaluate(ckpt)
        while len(self.pool):
            key, (result, seconds) = self.pool.next()
            if key[0] == "run":
                done = ([(key[1], result)] if isinstance(key[1], str) else
                        list(zip(key[1], result)))
                for relpath, data in done:  # a group's seconds shared by its masks
                    self.written(self.by_path[relpath], data, seconds / len(done))
            else:
                self.evaluated(key[1], result, seconds)

    def written(self, r: PlannedMask, data: bytes, seconds: float) -> None:
        """Write the mask file of ``r``; after the last mask of its checkpoint, evaluate it."""
        out = self.sweep.out
        atomic_write_bytes(out / r.relpath, data)
        self.timings.append({"mask": r.relpath, "compute_s": seconds})
        self.mask_bar.update(1)
        if self.mask_bar.n == self.mask_bar.total:
            self.mask_bar.close()  # (no more refreshes while the evaluations finish)
        if not self.progress:
            self.sweep.log(f"{out / r.relpath}: {seconds:.1f} s "
                           f"({len(self.timings)}/{len(self.todo)})")
        self.remaining[r.checkpoint] -= 1
        if self.remaining[r.checkpoint] == 0:
            self.evaluate(r.checkpoint)

    def evaluated(self, ckpt: str, part: dict, seconds: float) -> None:
        """Keep one evaluated part of ``ckpt``; after its last, write ``evals.nc``."""
        self.parts[ckpt].append(part)
        self.eval_seconds[ckpt] += seconds
        self.eval_bar.update(1)
        if len(self.parts[ckpt]) == self.n_parts[ckpt]:
            self.sweep.write_evals(ckpt, self.parts[ckpt])
            self.sweep.log(f"{self.sweep.out / ckpt / EVALS}: written ({self.n_parts[ckpt]} "
                           f"parts, {self.eval_seconds[ckpt]:.1f} s)")

    def close(self) -> None:
        self.mask_bar.close()
        self.eval_bar.close()
        self.pool.close()

    def summary(self, wall: float, setup: float) -> dict:
        """The timing summary of a sweep that took ``wall`` seconds, ``setup`` of them before
        its calls ran."""
        sweep, executor, workers = self.sweep, self.executor, self.workers
        compute = sum(t["compute_s"] for t in self.timings)
        eval_s = sum(self.eval_seconds.values())
        # the work spread over the lanes that ran it (one after another in process: 1 lane);
        # overhead = wall time not explained by that work: loading, resume checks, writing,
        # and, with a pool, a worker idling (e.g. waiting for the last run of a checkpoint)
        lanes = 1 if executor == "inprocess" else max(1, workers)
        busy = (compute + eval_s) / lanes
        return {"network": sweep.network, "executor": executor, "workers": workers,
                "masks": len(sweep.runs), "kept": len(sweep.runs) - len(self.todo),
                "trained": len(self.todo),
                "wall_s": wall, "setup_s": setup, "compute_s": compute, "group_eval_s": eval_s,
                "overhead_s": wall - busy,
                "overhead_share": (wall - busy) / busy if busy > 0 else None,
                "speedup": (compute + eval_s) / wall if wall > 0 else None,
                "pool_efficiency": (busy / wall if wall > 0 and executor != "inprocess"
                                    else None),
                "runs": self.timings, "device": str(sweep.device), "precision": sweep.precision}
