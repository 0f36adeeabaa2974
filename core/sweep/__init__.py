"""Train every mask of one network in one process; resume a killed sweep; one HTML report.

    python -m core.sweep --params params.yaml --net 0 --train data/train/net0 \\
        --data data/raven --out data/masks/net0 --report data/reports/masks/net0.html \\
        [--executor inprocess|process|ray] [--workers N]   (or MASKS_EXECUTOR=ray in the environment)

The mask list (:func:`plan`) comes from the configuration: for every checkpoint
(``train.milestones``; only the last for the families in ``masks.families_last``), every task
of ``masks.families`` (``core.tasks``; a task that names a shape only when the shape is in
``masks.tasks``; before the last checkpoint, in ``masks.tasks_early`` when that is set) and
every seed of ``masks.seeds`` at ``masks.alpha``; for the families in
``masks.complement_masks`` also each task's complement and the family's reference set (the
complement protocol; ``seeds[0]`` only); plus the alpha sweep (``masks.alpha_sweep``) of every
task of the families masked at every checkpoint, at the last checkpoint with ``seeds[0]``. Each run is written atomically to
``<out>/<checkpoint>/<set>-a<alpha>-s<seed>.pt`` (``core.formats.masks``).

Every checkpoint and every data split is loaded once per process (no per-mask start-up).
Executors: ``inprocess`` (one run after another), ``process`` (``masks.workers`` spawned
processes, the default when that is > 1) or ``ray`` (each mask run a Ray
task asking for ``masks.threads`` CPUs and, on CUDA, ``masks.gpu_share`` of a GPU; a local Ray
on this machine with ``--workers`` runs at a time, or the cluster at ``RAY_ADDRESS``). A run
is a pure function of its inputs, so both executors write byte-identical files.

Resume: a sweep killed midway and started again keeps every finished mask file whose recorded
``settings`` (mask settings, alpha, seed, sets, checkpoint and data fingerprints, device type,
precision) equal the ones it would use now and trains only the rest; files of other settings,
files no longer in the plan and ``.tmp-*`` litter of interrupted writes are removed. (The DVC
stage declares ``data/masks/net<k>`` with ``persist: true`` so this works under ``dvc repro``.)

After the last mask of a checkpoint, its masks are evaluated (mask, inverted and selective
ablations on every evaluation set of their families, select = ``val`` and report = ``test``
splits; ``core.masking.evaluate_part``, one part per family and seed, in the same pool as the
mask runs) into ``<out>/<checkpoint>/evals.nc`` (``core.masking.merge_parts``: the same bytes
as one ``evaluate_group`` call), kept on resume when its inputs (mask files, evaluation
settings, data) are unchanged.
Inference (final accuracies, evaluations) runs in batches of ``train.eval_batch_size``.

Timing: each run records its compute seconds (training + its final evaluation); the summary
(:meth:`Sweep.run`) has them with the sweep's wall time, and the report shows the overhead share.

``--report`` runs the whole sweep through the mask notebook (``analysis/train_masks.ipynb``)
into an HTML report with the timing summary beside it (:mod:`core.sweep.cli`). Progress: a bar over the masks and one over the
evaluation parts (``core.progress``).

Modules: :mod:`~core.sweep.plan` (the mask runs, :class:`PlannedMask`, and what ``evals.nc``
evaluates), :mod:`~core.sweep.jobs` (one run or evaluation part, a pure function),
:mod:`~core.sweep.executors` (in this process, spawned processes, Ray),
:mod:`~core.sweep.sweep` (:class:`Sweep`: inputs, fingerprints, resume, evaluation parts),
:mod:`~core.sweep.schedule` (the pool's loop, bars and timing), :mod:`~core.sweep.cli`
(``python -m core.sweep``).
"""

from core.formats.evals import EVALS
from core.sweep.cli import main, process_age
from core.sweep.errors import SweepError
from core.sweep.executors import EXECUTORS
from core.sweep.jobs import QUICK_N
from core.sweep.plan import PlannedMask, eval_plan, eval_sets, mask_sets, plan, role
from core.sweep.sweep import NOT_RUN_SETTINGS, Sweep

__all__ = ["EVALS", "EXECUTORS", "NOT_RUN_SETTINGS", "QUICK_N", "PlannedMask", "Sweep",
           "SweepError", "eval_plan", "eval_sets", "main", "mask_sets", "plan", "process_age",
           "role"]
