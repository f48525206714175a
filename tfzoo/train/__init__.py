"""Training: ``tfzoo.train.train(model, data)`` runs a detector's recipe with ``model.fit``.

::

    result = tfzoo.train.train("retinanet_mobile", "shapes", out="runs/retinanet_mobile")
    result.metrics["AP"], result.out_dir, result.detector

**Recipe.** Everything comes from the detector's config dataclass (``--set key=value``
overrides): ``optimizer`` (``"sgd"``: momentum SGD with L2 weight decay added to the
gradient, as in the paper and Detectron, :class:`L2SGD`; ``"adamw"``: decoupled weight
decay, :class:`FusedAdamW`), ``learning_rate`` (for the config's ``batch_size``),
``momentum``, ``weight_decay``, ``warmup_steps`` (linear warm-up from 1/3 of the rate,
Detectron's), ``lr_schedule`` (``"step"``: x0.1 at 2/3 and 8/9 of training, the paper's
60k and 80k of 90k iterations; ``"cosine"``: to 0 at the end) and ``epochs``. A batch
size other than the recipe's scales the learning rate linearly (the Goyal et al. rule),
unless ``learning_rate`` is set explicitly. The schedule length follows the data:
``steps_per_epoch = floor(train examples / batch_size)`` and ``total = epochs *
steps_per_epoch``; warm-up is capped at :data:`MAX_WARMUP_FRACTION` of the total for
short runs.

**Time budget.** With ``minutes=M`` the first epoch runs on a provisional schedule
(``epochs`` or the config's), then the number of epochs that fit in the budget is
estimated from its steady-state step time plus the per-epoch overhead (checkpoint,
evaluation), and the schedule's length is set to end exactly there (step decay and the
cosine end move with it; warm-up stays as started). After every later epoch the plan is
fitted again to the time left at the median length of the last whole epochs
(:class:`_Replan`), so a stall at the first epoch's end neither wastes the budget nor
runs past it. A deadline also stops training mid-epoch if the estimate was optimistic;
that last partial epoch is saved. ``epochs``,
if given, caps the estimate. The budget covers ``fit`` (steps, checkpoints, per-epoch
evaluation); building the model, counting the data and the final evaluation come on
top.

**Training directory** (``out``; by default a new folder per run: ``runs/<model>``, then
``runs/<model>-2``, ``-3`` ...)::

    config.json    the detector config (class_names, actual batch_size and learning rate)
    model.keras    the latest good model, compiled (optimizer state inside), atomic
    state.json     {"epoch", "step", "finished", "stopped", ...the plan}
    metrics.json   evaluator metrics on the val split (tfzoo.eval.RESULT_KEYS)
    logs/          TensorBoard

``model.keras`` is written after every epoch (temp file + ``os.replace``), never with
non-finite weights: a non-finite loss stops training with a message naming the step and
the epoch, ``state.json`` records it and the previous ``model.keras`` stays as it was.
``resume=True`` loads ``model.keras`` (its optimizer and iteration count included) and
continues from ``state.json``'s epoch on the same schedule (``minutes`` then only bounds
the session); options that disagree with the saved run are an error. ``epochs`` above
the run's plan extends it, finished or not: the schedule's end moves to the new last step
(step and cosine decays with it). Resuming a finished run without more epochs only says
so. ``resume`` without ``out`` continues the latest ``runs/<model>[-N]``.

Earlier work is never lost by mistake: without ``resume``, an ``out`` that holds a run or
any other files is refused (the error names what is there and the ``--resume`` /
``--overwrite`` / ``--out`` choices) unless ``overwrite=True``; then an earlier run's
``model.keras`` is replaced at the new run's first checkpoint and other files are left
alone.
A val split the dataset lacks (a VOC folder with only ``train``) skips evaluation with a
warning.

**Strategies.** ``"default"`` (none), ``"mirrored"`` (``tf.distribute.MirroredStrategy``
over the local GPUs, else the local logical CPUs; the batch size is the global batch)
and ``"multiworker"`` (``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``; it must be
the first TensorFlow work in the process; only the chief writes the training directory,
the other workers write to temporary folders that are deleted, as the TensorFlow guide
recommends; ``minutes`` is refused since workers would stop at different steps). Keras
3.15's ``model.fit`` does not run under ``MultiWorkerMirroredStrategy`` with more than
one worker (keras-team/keras#20585: its symbolic build and its metric reduction both
fail), so today only the single-worker path works; that failure is reported as such.
``mixed_precision=True`` trains under ``mixed_float16`` on GPU, ``mixed_bfloat16`` on CPU
(float16 matmuls are slow there); the heads' outputs and the loss stay float32, and the
previous global policy is restored afterwards.
"""
from __future__ import annotations

# The package's parts: tfzoo.optim (schedules, optimizers), config (the run's config),
# data (specs, classes, counts), distribute (strategies, precision), rundir (the training
# directory), callbacks (guards, budget, checkpoints, progress) and loop (train itself).
from tfzoo.optim import (MAX_WARMUP_FRACTION, STEP_DECAY_AT, STEP_DECAY_FACTOR, WARMUP_START_FACTOR,
                         FusedAdamW, L2SGD, WarmupDecaySchedule, make_optimizer, make_schedule)
from tfzoo.train.callbacks import (StopOnNonFiniteLoss, TimeBudget, TrainingProgress, plan_epochs,
                                   warmup_epochs)
from tfzoo.train.config import FROM_CONFIG, preset_config, resolve_config
from tfzoo.train.data import count_examples, split_exists
from tfzoo.train.distribute import (FLOAT32, STRATEGIES, cpu_has_amx, is_chief, make_strategy,
                                    mixed_policy_name, optimizer_step, precision)
from tfzoo.train.loop import MIRROR_CHECK_IMAGES, TRAIN_SAMPLE_IMAGES, TrainResult, init_weights, train
from tfzoo.train.rundir import (CONFIG_FILE, LOGS_DIR, METRICS_FILE, MODEL_FILE, PLOT_FILE,
                                STATE_FILE)

__all__ = [
    "MAX_WARMUP_FRACTION",
    "STEP_DECAY_AT",
    "STEP_DECAY_FACTOR",
    "WARMUP_START_FACTOR",
    "FusedAdamW",
    "L2SGD",
    "WarmupDecaySchedule",
    "make_optimizer",
    "make_schedule",
    "StopOnNonFiniteLoss",
    "TimeBudget",
    "TrainingProgress",
    "plan_epochs",
    "warmup_epochs",
    "FROM_CONFIG",
    "preset_config",
    "resolve_config",
    "init_weights",
    "count_examples",
    "split_exists",
    "FLOAT32",
    "STRATEGIES",
    "cpu_has_amx",
    "is_chief",
    "make_strategy",
    "mixed_policy_name",
    "optimizer_step",
    "precision",
    "MIRROR_CHECK_IMAGES",
    "TRAIN_SAMPLE_IMAGES",
    "TrainResult",
    "train",
    "CONFIG_FILE",
    "LOGS_DIR",
    "METRICS_FILE",
    "MODEL_FILE",
    "PLOT_FILE",
    "STATE_FILE",
]
