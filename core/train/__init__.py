"""Train networks to validation-accuracy milestones: checkpoints, training log, resume.

    python -m core.train --params params.yaml --net 0 --data data/raven \\
        --out data/train/net0 --state data/state/train/net0

(the command line, ``--net all`` and ``torchrun``: :mod:`core.train.entry`).


Milestones. Validation is adaptive (:func:`validation_interval`): after each check the next
one comes after ``FRACTION`` of the steps the recent slope of validation accuracy needs to the
next milestone plus ``train.milestone_tolerance`` (at once when the milestone is within the
tolerance plus twice a check's noise), bounded by ``train.val_min_every`` and
``train.val_every`` steps. A milestone ``m`` is reached at the first validation with accuracy
``>= m``; the checkpoint kept is that model, or the model of the validation before it when the
crossing overshoots by more than the tolerance and that earlier one is closer to m. The achieved
validation accuracy is recorded in the checkpoint (``val_acc``) and in ``training.nc``
(``milestone_val_acc``, ``milestone_error``); a checkpoint still off by more than the
tolerance is recorded as such and warned about (:class:`MilestoneWarning`). Training stops
after the last milestone or after ``train.epochs``; milestones not reached are listed in one
error (the CLI exits 1) after everything reached has been written.

Restarts. A network whose validation accuracy has stayed at chance (below ``100 / 8 +
CHANCE_MARGIN``) for ``train.restart_after`` steps, no milestone reached, is re-initialised
(:func:`restart`): new weights from :func:`init_seed` (derived from its seed and the attempt),
a new optimiser and schedule, step 0 again; at most ``train.max_restarts`` times. SCL's initial
plateau holds some initialisations for good on some CPUs (docs/decisions.md). ``training.nc``
holds the kept attempt's curves, the abandoned attempts' steps and best accuracy
(``restart_steps``, ``restart_best_val_acc``) and the ``init_seed`` / ``restarts``
attributes; a checkpoint of a re-initialised network records its ``init_seed``.

Files. ``--out`` gets the milestone checkpoints ``<arch>_<m>.pt`` and ``training.nc`` (per-step
loss/accuracy/lr, per-validation accuracy, per-milestone step/epoch/achieved val and test
accuracy and the checkpoint's sha256; provenance attributes: network seed, config hashes, data
fingerprint, device, precision). They are written when the run ends; nothing in them depends
on time, so identical runs give identical bytes (:func:`check_training_dir` verifies a folder).
``--state`` (outside the DVC output, which DVC deletes before re-running a stage) holds
``last.pt`` (model, optimiser, scheduler, RNG, data position, logs; every
``train.checkpoint_every`` steps) and the milestone checkpoints reached so far. A killed run
started again with the same command resumes there and ends with the same bytes as an
uninterrupted run; resume state of other parameters or other data is refused with one error.

Devices. ``device`` / ``precision`` (``core.device``): model and batches on the device, forward
passes under bf16 autocast when chosen, everything saved as CPU tensors. A loss or parameter
that becomes non-finite stops the run (:class:`NonFiniteError`, naming step and quantity).

DDP: ``train.batch_size`` is the *global* batch, split evenly over the processes; the data
order, step count, schedule and milestone logic are the same as with one process. BatchNorm
normalises each process's share of the batch with its own statistics; validation uses rank 0's
running statistics (those its checkpoint holds).

Parts (each testable alone; the test seams are their parameters, not :func:`train`'s):
:mod:`core.train.data` (:func:`open_splits`: data, read once, and its fingerprint),
:mod:`core.train.setup` (:func:`setup_process`: device, precision, DDP; :func:`setup_run`:
model, optimiser, schedule, resume identity), :mod:`core.train.state` (:func:`start`: fresh or
resumed :class:`State`), :mod:`core.train.milestones` (:func:`validate`: milestones,
:func:`save_checkpoint`, rewind, restart), :mod:`core.train.loop` (:func:`train_step`,
:func:`train_loop` with ``evaluate`` and ``stop_after``, :func:`finish`: test accuracy,
outputs, cleanup), :mod:`core.train.entry` (:func:`train`, :func:`train_all`, :func:`main`).
This package re-exports the names other modules and the tests use.
"""

from core.train.data import DataError, Splits, data_fingerprint, open_splits, take
from core.train.entry import MilestonesNotReached, main, not_reached_message, train, train_all
from core.train.loop import (
    Evaluator,
    NonFiniteError,
    Result,
    check_finite,
    finish,
    split_accuracy,
    train_loop,
    train_step,
)
from core.train.milestones import (
    FRACTION,
    MilestoneWarning,
    keep_for,
    restart,
    should_restart,
    should_rewind,
    validate,
    validation_interval,
)
from core.train.setup import (
    Process,
    Training,
    init_seed,
    schedule_factor,
    setup_process,
    setup_run,
)
from core.train.state import ResumeError, State, save_state, start

__all__ = [
    "FRACTION", "DataError", "Evaluator", "MilestoneWarning", "MilestonesNotReached",
    "NonFiniteError", "Process", "Result", "ResumeError", "Splits", "State", "Training",
    "check_finite", "data_fingerprint", "finish", "init_seed", "keep_for", "main",
    "not_reached_message", "open_splits", "restart", "save_state", "schedule_factor",
    "setup_process", "setup_run", "should_restart", "should_rewind", "split_accuracy", "start",
    "take", "train", "train_all", "train_loop", "train_step", "validate", "validation_interval",
]
