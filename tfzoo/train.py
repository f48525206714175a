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

**Training directory** (``out``, default ``runs/<model>``)::

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
the session); options that disagree with the saved run are an error, and resuming a
finished run only says so. Without ``resume``, a directory holding a previous run is
reused with a warning: its ``model.keras`` is replaced at the new run's first checkpoint.
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

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import types
import warnings

import keras
import tensorflow as tf

import tfzoo
import tfzoo.data
import tfzoo.eval
from tfzoo import layers
from tfzoo.data import validate
from tfzoo.export.artifacts import write_json_atomic

#: The distribution strategies :func:`train` accepts.
STRATEGIES = ("default", "mirrored", "multiworker")
#: Warm-up starts at this fraction of the learning rate (Detectron's WARM_UP_FACTOR).
WARMUP_START_FACTOR = 1.0 / 3.0
#: Warm-up never takes more than this fraction of the schedule (short runs).
MAX_WARMUP_FRACTION = 0.2
#: Step decay: the learning rate is multiplied by STEP_DECAY_FACTOR at these fractions of
#: training (the paper: 60k and 80k of 90k iterations).
STEP_DECAY_AT = (2.0 / 3.0, 8.0 / 9.0)
STEP_DECAY_FACTOR = 0.1
#: Files of the training directory.
CONFIG_FILE, MODEL_FILE, STATE_FILE, METRICS_FILE, LOGS_DIR, PLOT_FILE = (
    "config.json", "model.keras", "state.json", "metrics.json", "logs", "training.png")
#: Images of the training split scored after training, beside val, to tell under- from
#: overfitting (the first ones of the split, without augmentation).
TRAIN_SAMPLE_IMAGES = 200
#: ``backbone_weights`` default of :func:`train`: the config's value.
FROM_CONFIG = "from-config"
#: Precision policies recorded in state.json.
FLOAT32 = "float32"


# --- learning rate and optimizer -------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfzoo")
class WarmupDecaySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then step decay or cosine decay, indexed by the optimizer iteration.

    For step ``s`` (updates done so far), ``W`` warm-up steps and ``T`` total steps::

        warm(s)  = f + (1 - f) * s / W  for s < W, else 1          (f = warmup_start_factor)
        step:    lr(s) = base * warm(s) * decay_factor ** #{b in round(T * decay_at): s >= b}
        cosine:  lr(s) = base * warm(s)                               for s < W
                 lr(s) = base * (1 + cos(pi * min(s - W, T - W) / (T - W))) / 2    after

    ``total_steps`` lives in a variable so that :meth:`set_total_steps` can move the end
    of a running schedule (the time budget) without retracing the train step; the config
    holds its current value, so the schedule saves and loads with the model.
    """

    def __init__(self, base_learning_rate, total_steps, warmup_steps=0, kind="step",
                 warmup_start_factor=WARMUP_START_FACTOR, decay_at=STEP_DECAY_AT,
                 decay_factor=STEP_DECAY_FACTOR, name="warmup_decay"):
        if kind not in ("step", "cosine"):
            raise ValueError(f"lr_schedule must be 'step' or 'cosine', got {kind!r}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
        self.base_learning_rate = float(base_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        self.warmup_start_factor = float(warmup_start_factor)
        self.decay_at = tuple(float(f) for f in decay_at)
        self.decay_factor = float(decay_factor)
        self.name = name
        with tf.init_scope():
            self._total_steps = tf.Variable(int(total_steps), dtype=tf.int64, trainable=False,
                                            name="lr_total_steps")

    @property
    def total_steps(self):
        return int(self._total_steps.numpy())

    def set_total_steps(self, total_steps):
        """Moves the end of the schedule (takes effect at the next step, no retracing)."""
        if total_steps < max(1, self.warmup_steps):
            raise ValueError(f"total_steps must be >= max(1, warmup_steps={self.warmup_steps}), got {total_steps}")
        self._total_steps.assign(int(total_steps))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        total = tf.cast(self._total_steps, tf.float32)
        base = tf.constant(self.base_learning_rate, tf.float32)
        if self.warmup_steps > 0:
            warmup = float(self.warmup_steps)
            progress = tf.minimum(step / warmup, 1.0)
            warm = self.warmup_start_factor + (1.0 - self.warmup_start_factor) * progress
        else:
            warmup = 0.0
            warm = tf.constant(1.0)
        if self.kind == "step":
            passed = [tf.cast(step >= tf.round(total * f), tf.float32) for f in self.decay_at]
            decay = tf.pow(self.decay_factor, tf.add_n(passed)) if passed else tf.constant(1.0)
        else:
            span = tf.maximum(total - warmup, 1.0)
            done = tf.clip_by_value((step - warmup) / span, 0.0, 1.0)
            decay = 0.5 * (1.0 + tf.cos(math.pi * done))
        return base * warm * decay

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "kind": self.kind,
            "warmup_start_factor": self.warmup_start_factor,
            "decay_at": list(self.decay_at),
            "decay_factor": self.decay_factor,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="tfzoo")
class L2SGD(keras.optimizers.SGD):
    """Momentum SGD with L2 weight decay added to the gradient (``g + l2 * w``), which is
    what the paper's "weight decay 1e-4" means (Detectron, Caffe2). Keras' own
    ``SGD(weight_decay=...)`` decays the weights directly instead, outside the momentum,
    which is about ``1 / (1 - momentum)`` times weaker at momentum 0.9.

    With momentum, each variable is updated by one fused kernel
    (``ResourceApplyKerasMomentum``: ``m = momentum * m - lr * g; w += m``, or the Nesterov
    form), the exact arithmetic of ``keras.optimizers.SGD``, which spends five elementwise
    passes over every weight on it. ``l2=0`` is Keras' SGD, updated faster: 26 against 52 ms
    per step over ResNet-50-FPN RetinaNet's 38 million weights on 2 CPU cores
    (``benchmarks/bench_train_kernels.py``), the same weights to the bit.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, l2=1e-4, name="l2_sgd", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = keras.ops.add(
                keras.ops.cast(keras.ops.convert_to_tensor(gradient), variable.dtype),
                keras.ops.multiply(variable, keras.ops.cast(self.l2, variable.dtype)),
            )
        if self.momentum == 0 or isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable, learning_rate)
            return
        slot = self.momentums[self._get_variable_index(variable)].value  # the tf.Variable under it
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=slot.handle, lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype), momentum=tf.cast(self.momentum, dtype),
            use_locking=False, use_nesterov=self.nesterov,
        )

    def get_config(self):
        config = super().get_config()
        config["l2"] = self.l2
        return config


#: Variable dtypes :class:`FusedAdamW` updates with TensorFlow's fused kernels (others take
#: Keras' path).
_FUSED_ADAM_DTYPES = (tf.float32, tf.float64)


@keras.saving.register_keras_serializable(package="tfzoo")
class FusedAdamW(keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` (Adam with decoupled weight decay, ``w -= lr * wd * w``
    before the Adam step) with each weight updated by two fused kernels instead of about
    fifteen elementwise ops: ``ResourceApplyGradientDescent`` for the decay and
    ``ResourceApplyAdam`` for the step.

    The arithmetic is Keras': ``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``, ``w -=
    m * alpha / (sqrt(v) + eps)`` with ``alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)``. The
    weights agree with Keras' to float32 rounding, not to the bit: the kernel computes
    ``1 - b1`` and ``1 - b2`` in float32 where Keras rounds the Python float (at b2 =
    0.999 they differ by 1.3e-5 relative), so a step differs from Keras' by up to about
    7e-6 relative. The tests hold both to a float64 NumPy AdamW. Training from scratch
    amplifies such differences within a few steps, as any change of rounding does: a
    seeded run with this optimizer follows another path than with Keras' (same
    algorithm, another sample of the run-to-run spread).

    What it is worth: the demo's ``retinanet_mobile`` (198 weights, 2.3 million values)
    is updated in 10.8 against 15.7 ms on 2 CPU cores (``benchmarks/bench_train_kernels.py``),
    and its whole training step (256 px, batch 8) takes about 3.5% less time. AMSGrad,
    sparse gradients (``IndexedSlices``) and dtypes other than float32/float64 take Keras'
    path, with the same decay.
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.004, name="fused_adamw", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs)

    def _apply_weight_decay(self, variables):
        # Applied weight by weight in update_step (the decay of one weight depends on that
        # weight only, so decaying it just before its Adam step is Keras' order).
        return

    def _decays(self, variable):
        return self.weight_decay is not None and self._use_weight_decay(variable)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        fused = (not self.amsgrad and not isinstance(gradient, tf.IndexedSlices)
                 and tf.as_dtype(dtype) in _FUSED_ADAM_DTYPES)
        if not fused:
            if self._decays(variable):
                lr = tf.cast(learning_rate, dtype)
                variable.assign_sub(variable * tf.cast(self.weight_decay, dtype) * lr)
            super().update_step(gradient, variable, learning_rate)
            return
        lr = tf.cast(learning_rate, dtype)
        if self._decays(variable):
            # w -= (lr * wd) * w; the kernel copies w's buffer first when the read aliases it.
            tf.raw_ops.ResourceApplyGradientDescent(
                var=variable.handle, alpha=lr * tf.cast(self.weight_decay, dtype),
                delta=tf.convert_to_tensor(variable), use_locking=False,
            )
        index = self._get_variable_index(variable)
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].value.handle,  # the tf.Variable under each Keras slot
            v=self._velocities[index].value.handle,
            beta1_power=tf.pow(beta_1, local_step), beta2_power=tf.pow(beta_2, local_step),
            lr=lr, beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype), use_locking=False, use_nesterov=False,
        )


def make_schedule(config, total_steps):
    """The :class:`WarmupDecaySchedule` of ``config`` over ``total_steps`` (warm-up capped)."""
    warmup = min(int(config.warmup_steps), int(MAX_WARMUP_FRACTION * total_steps))
    return WarmupDecaySchedule(config.learning_rate, total_steps, max(warmup, 0), config.lr_schedule)


def make_optimizer(config, schedule):
    """The optimizer named by ``config.optimizer`` driven by ``schedule``."""
    if config.optimizer == "sgd":
        return L2SGD(schedule, momentum=config.momentum, l2=config.weight_decay)
    if config.optimizer == "adamw":
        return FusedAdamW(schedule, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")


# --- configuration ---------------------------------------------------------------------


def preset_config(model):
    """The config dataclass of preset ``model`` (from its detector module's ``PRESETS``)."""
    from tfzoo import models

    if model not in models.MODELS:
        known = ", ".join(sorted(models.MODELS)) or "none registered yet"
        raise ValueError(f"unknown model {model!r}; known models: {known}")
    config = getattr(models.MODELS[model], "config", None)
    if config is not None:
        return config
    for module in vars(models).values():
        presets = getattr(module, "PRESETS", None) if isinstance(module, types.ModuleType) else None
        if isinstance(presets, dict) and model in presets:
            return presets[model]
    raise ValueError(f"model {model!r} has no preset config in its detector module's PRESETS table")


def _setting_keys(settings):
    """Config fields named in ``["key=value", ...]`` (``with_settings`` parses the values)."""
    return {item.partition("=")[0].strip() for item in settings or ()}


def resolve_config(model, class_names, *, image_size=None, batch_size=None, epochs=None, settings=(),
                   backbone_weights=FROM_CONFIG):
    """The config a run trains with: the preset, ``settings``, the data's classes, the
    overrides, and the learning rate scaled to the actual batch size.

    The preset's ``learning_rate`` is meant for its ``batch_size``; another batch size
    (``batch_size`` or ``--set batch_size=N``) scales it linearly, unless ``learning_rate``
    is set in ``settings`` (then it is taken as the rate for the actual batch).
    """
    preset = preset_config(model)
    config = preset.with_settings(settings)
    explicit = _setting_keys(settings)
    overrides = {"num_classes": len(class_names), "class_names": tuple(class_names)}
    if image_size is not None:
        overrides["image_size"] = int(image_size)
    if epochs is not None:
        overrides["epochs"] = int(epochs)
    if backbone_weights != FROM_CONFIG:
        overrides["backbone_weights"] = backbone_weights
    actual = int(batch_size) if batch_size is not None else config.batch_size
    if actual < 1:
        raise ValueError(f"batch_size must be >= 1, got {actual}")
    overrides["batch_size"] = actual
    if "learning_rate" not in explicit:
        overrides["learning_rate"] = preset.learning_rate * actual / preset.batch_size
    config = config.replace(**overrides)
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    return config


def _requested_fields(settings, image_size, batch_size, epochs):
    """Config fields a call sets explicitly (what a resume must agree with)."""
    fields = _setting_keys(settings) | {"num_classes", "class_names"}
    if image_size is not None:
        fields.add("image_size")
    if batch_size is not None or "batch_size" in fields:
        fields |= {"batch_size", "learning_rate"}
    if epochs is not None:
        fields.add("epochs")
    return fields - {"backbone_weights"}  # only the initialization; a resume loads weights


# --- data ------------------------------------------------------------------------------


def _specs(data):
    """One spec string, or several (concatenated, e.g. VOC 2007 + 2012) -> list."""
    if isinstance(data, str):
        return [data]
    specs = list(data)
    if not specs or not all(isinstance(s, str) for s in specs):
        raise ValueError(f"data must be a dataset spec string or a list of them, got {data!r}")
    return specs


def _class_names(specs):
    names = tfzoo.data.class_names(specs[0])
    for spec in specs[1:]:
        other = tfzoo.data.class_names(spec)
        if list(other) != list(names):
            raise ValueError(f"{spec} has other classes than {specs[0]}: {other} vs {names}")
    return list(names)


def _load(specs, split):
    dataset = None
    for spec in specs:
        part = tfzoo.data.load(spec, split)
        dataset = part if dataset is None else dataset.concatenate(part)
    return dataset


def split_exists(spec, split):
    """Whether dataset ``spec`` has a split ``split`` (how each reader names its splits:
    shapes' ``SPLITS``, VOC's ``ImageSets/Main/*.txt``, COCO's ``instances_*.json`` with
    the ``2017`` fallback, TFDS' builder info, when it is known before download)."""
    kind, arg = tfzoo.data._parse(spec)
    if kind == "shapes":
        from tfzoo.data import shapes

        return split in shapes.SPLITS
    if kind == "voc":
        from tfzoo.data import voc

        return split in voc.splits(arg)
    if kind == "coco":
        from tfzoo.data import coco

        try:
            coco.resolve_split(arg, split)
        except validate.DataError:
            return False
        return True
    from tfzoo.data import tfds_reader

    known = list(tfds_reader._tfds(arg).builder(arg).info.splits.keys())
    if not known:  # not prepared yet and no metadata: let the reader decide
        return True
    wanted = [re.sub(r"\[.*\]$", "", part.strip()) for part in split.split("+")]
    return all(name in known for name in wanted)


def count_examples(specs, split, dataset):
    """Examples in ``dataset`` (split ``split`` of ``specs``): its cardinality when known;
    for VOC/COCO folders (whose decoding filter hides the count from tf.data) the records
    of the annotation index without reading image headers again (an image that turns out
    missing or corrupt is only dropped from the stream: epochs count steps, so the schedule
    stays right); else one pass over the data."""
    count = int(dataset.cardinality())
    if count >= 0:
        return count
    if count == tf.data.INFINITE_CARDINALITY:
        raise ValueError(f"{'+'.join(specs)} [{split}] is infinite; training needs a finite dataset")
    total = 0
    for spec in specs:
        kind, arg = tfzoo.data._parse(spec)
        if kind in ("voc", "coco"):
            reader = importlib.import_module(f"tfzoo.data.{kind}")
            total += len(reader.scan(arg, split, check_images=False))
            continue
        part = tfzoo.data.load(spec, split)
        known = int(part.cardinality())
        if known < 0:
            warnings.warn(f"{spec} [{split}]: counting the examples with one pass over the data")
            known = int(part.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
        total += known
    return total


# --- strategies and precision -----------------------------------------------------------


def make_strategy(name):
    """``tf.distribute`` strategy for ``name`` (see :data:`STRATEGIES`); ``None`` for default."""
    if name == "default":
        return None
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as error:
            raise RuntimeError(
                f"strategy 'multiworker' could not start ({error}); it must be created before any other "
                "TensorFlow work in the process, with TF_CONFIG naming this worker"
            ) from error
    raise ValueError(f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}")


def is_chief(strategy):
    """True on the worker that writes files: no cluster, the ``chief`` task, or worker 0
    of a cluster without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type or task_type == "chief":
        return True
    return task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def optimizer_step(model):
    """The optimizer's iteration count as an int (also for a distributed variable)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _workers(strategy):
    """Number of worker machines of a multi-worker strategy (1 otherwise)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(job, ())) for job in ("chief", "worker"))


def mixed_policy_name():
    """``mixed_float16`` with a GPU, else ``mixed_bfloat16``."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def cpu_has_amx(cpuinfo="/proc/cpuinfo"):
    """Whether this machine's CPU has AMX bfloat16 tiles (Intel Sapphire Rapids and later),
    where oneDNN's bfloat16 convolutions run several times faster than float32 ones."""
    try:
        with open(cpuinfo) as f:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in f)
    except OSError:  # not Linux
        return False


@contextlib.contextmanager
def precision(policy):
    """Sets the Keras global dtype policy (``float32``, ``mixed_float16``/``bfloat16``, or
    ``True`` for :func:`mixed_policy_name`) inside the block; restores the previous one."""
    if policy is True:
        policy = mixed_policy_name()
    elif policy in (False, None):
        policy = FLOAT32
    with layers.dtype_policy(policy):
        yield policy


# --- files -----------------------------------------------------------------------------


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def save_model_atomic(detector, path):
    """``detector.save`` to a temp ``.keras`` file beside ``path``, then ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.splitext(os.path.basename(path))[0]}.tmp-{os.getpid()}.keras")
    try:
        detector.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class _RunDir:
    """The training directory; workers other than the chief write to a temp folder."""

    def __init__(self, out, chief):
        self.out = os.path.abspath(out)
        self.chief = chief
        self.root = self.out if chief else tempfile.mkdtemp(prefix="tfzoo-worker-")

    def path(self, name):
        return os.path.join(self.root, name)

    def cleanup(self):
        if not self.chief:
            shutil.rmtree(self.root, ignore_errors=True)


# --- callbacks -------------------------------------------------------------------------


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose running loss is NaN or infinite; ``stopped``
    then names the optimizer step and the epoch."""

    def __init__(self):
        super().__init__()
        self.stopped = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or self.stopped is not None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            step = optimizer_step(self.model)
            self.stopped = f"non-finite loss ({loss}) at step {step} (optimizer iteration), epoch {self._epoch + 1}"
            self.model.stop_training = True


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the batch that ends past ``deadline`` (``time.monotonic()``)."""

    def __init__(self, deadline, minutes):
        super().__init__()
        self.deadline = deadline
        self.minutes = minutes
        self.stopped = None

    def on_train_batch_end(self, batch, logs=None):
        if self.stopped is None and time.monotonic() >= self.deadline:
            step = optimizer_step(self.model)
            self.stopped = f"time budget of {self.minutes:g} minutes spent at step {step}"
            self.model.stop_training = True


class _Checkpoint(keras.callbacks.Callback):
    """After every epoch (unless the loss went non-finite): model.keras, state.json, and
    with ``evaluate_each`` metrics.json (also logged to TensorBoard as ``val_*``)."""

    def __init__(self, run, nan_guard, steps_per_epoch, evaluate_each):
        super().__init__()
        self.run = run
        self.nan_guard = nan_guard
        self.steps_per_epoch = steps_per_epoch
        self.evaluate_each = evaluate_each
        self.batches = 0
        self.epoch_times = []  # (first batch end, last batch end, batches) per epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.batches = 0
        self._first = self._last = None

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        self._last = time.monotonic()
        if self._first is None:
            self._first = self._last

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_times.append((self._first, self._last, self.batches))
        if self.nan_guard.stopped is not None:
            return
        complete = self.batches >= self.steps_per_epoch
        if complete:
            self.run.record_epoch(epoch + 1, logs)
        self.run.checkpoint(epoch + 1 if complete else epoch)
        if complete and self.evaluate_each:
            metrics = self.run.evaluate()
            if metrics is not None and logs is not None:
                for key in ("AP", "AP50", "voc07_mAP"):
                    if metrics.get(key) is not None:
                        logs[f"val_{key}"] = float(metrics[key])
                self.run.record_epoch(epoch + 1, {k: v for k, v in logs.items() if k.startswith("val_")})
                self.run.write_state()


class TrainingProgress(keras.callbacks.Callback):
    """Training progress on ``stream`` (stderr: stdout is for results). On a terminal, a
    bar per epoch (steps, running loss); otherwise (a log file, a pipe) one plain line per
    epoch, with no terminal escape codes: ``epoch 3/20: loss 0.8123, ... (41.0 s, 39.0
    img/s)``. Put it after the checkpoint callback so that an epoch's val AP is in its line."""

    def __init__(self, batch_size, stream=None, interactive=None):
        super().__init__()
        self.batch_size = batch_size
        self.stream = sys.stderr if stream is None else stream
        self.interactive = _isatty(self.stream) if interactive is None else interactive
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()
        self._batches = 0
        self._shown = 0.0
        if self.interactive:
            from tqdm import tqdm  # noqa: PLC0415

            self._bar = tqdm(total=self.params.get("steps"), desc=f"epoch {epoch + 1}/{self.params.get('epochs')}",
                             unit="step", file=self.stream, dynamic_ncols=True, leave=True)

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self._bar is not None:
            self._bar.update(1)
            now = time.monotonic()
            if (logs or {}).get("loss") is not None and now - self._shown > 0.5:
                self._shown = now
                self._bar.set_postfix_str(f"loss {float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self._started
        values = ", ".join(f"{key} {float(value):.4f}" for key, value in (logs or {}).items()
                           if isinstance(value, (int, float)) or getattr(value, "shape", None) == ())
        rate = self._batches * self.batch_size / seconds if seconds > 0 else 0.0
        summary = f"{values} ({seconds:.1f} s, {rate:.1f} img/s)"
        if self._bar is not None:
            self._bar.set_postfix_str(summary)
            self._bar.close()
            self._bar = None
        else:
            print(f"tfzoo: epoch {epoch + 1}/{self.params.get('epochs')}: {summary}", file=self.stream, flush=True)

    def on_train_end(self, logs=None):
        if self._bar is not None:  # stopped inside an epoch
            self._bar.close()
            self._bar = None


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Replan(keras.callbacks.Callback):
    """With a time budget, after every epoch from the second on: fits the plan to the time
    left, at the median length of the last three whole epochs (end to end, so checkpoint
    and evaluation count). The first plan rests on one epoch whose end may hold one-off
    work (the input pipeline's teardown, a busy machine): multiplied by every epoch, such a
    stall once left a third of a 10-minute budget unused. The cosine or step schedule moves
    its end with the plan (no retracing); a shorter plan stops ``fit`` at its last epoch, a
    longer one is run by :func:`_fit`'s next ``fit`` call."""

    def __init__(self, run, schedule, steps_per_epoch, deadline, max_epochs, verbose):
        super().__init__()
        self.run = run
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.deadline = deadline
        self.max_epochs = max_epochs
        self.verbose = verbose
        self.planned = None  # set once the first plan is made
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        self.ends.append(now)
        if self.planned is None or len(self.ends) < 2 or self.run.state.get("epoch") != epoch + 1:
            return  # before the first plan, or an epoch the budget cut short
        recent = self.ends[-4:]
        lengths = sorted(b - a for a, b in zip(recent, recent[1:]))
        epoch_s = max(lengths[len(lengths) // 2], 1e-3)
        completed = epoch + 1
        planned = completed + max(0, int((self.deadline - now) // epoch_s))
        if self.max_epochs:
            planned = min(planned, int(self.max_epochs))
        planned = max(planned, completed, warmup_epochs(self.schedule, self.steps_per_epoch))
        if planned != self.planned:
            _info(self.verbose, f"time budget: {planned} epochs planned now, not {self.planned} (epochs take about "
                                f"{epoch_s:.1f} s)")
            self.planned = planned
            self.schedule.set_total_steps(planned * self.steps_per_epoch)
            self.run.write_state(planned_epochs=planned, total_steps=planned * self.steps_per_epoch)
        if completed >= self.planned:
            self.model.stop_training = True


# --- the run ---------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns."""

    out_dir: str
    detector: keras.Model
    metrics: dict | None
    epochs: int  # completed epochs (those in model.keras)
    steps: int  # optimizer iterations in model.keras
    stopped: str | None  # why training ended early (non-finite loss, time budget ...), else None
    seconds: float
    finished: bool = False  # the schedule ran to its end
    planned_epochs: int = 0
    steps_per_epoch: int = 0
    history: dict = dataclasses.field(default_factory=dict)  # per-epoch logs (loss, cls_loss ...)
    diagnostics: dict | None = None  # train-sample AP, verdict, confused pairs (also in metrics.json)


class _Run:
    """State shared by the callbacks: the directory, the plan, the evaluation set."""

    def __init__(self, rundir, detector, state, val, verbose, train_data=None):
        self.dir = rundir
        self.train_data = train_data  # (specs, split, class_names) for diagnostics, or None: none
        self.detector = detector
        self.state = state
        self.val = val  # (specs, split, class_names) or None
        self.verbose = verbose
        self.metrics = None
        self.metrics_step = None
        self.evaluator = None  # the val Evaluator of self.metrics (its image records)
        self.diagnostics = None  # what diagnose() found
        self._detect = None

    def write_state(self, **changes):
        self.state.update(changes)
        write_json_atomic(self.dir.path(STATE_FILE), self.state)

    def record_epoch(self, epoch, logs):
        """Adds ``logs``' finite numbers to ``state["history"]`` as ``{key: [[epoch, value], ...]}``
        (a resumed run keeps the epochs before it and replaces any after)."""
        history = self.state.setdefault("history", {})
        for key, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                rows = [row for row in history.get(key, []) if row[0] < epoch]
                history[key] = rows + [[int(epoch), value]]

    def checkpoint(self, completed_epochs):
        save_model_atomic(self.detector, self.dir.path(MODEL_FILE))
        self.write_state(epoch=int(completed_epochs), step=optimizer_step(self.detector))

    def evaluate(self):
        """Scores the detector on the val split, writes metrics.json (chief) and returns them."""
        if self.val is None or not self.dir.chief:
            return None
        step = optimizer_step(self.detector)
        if self.metrics_step == step:
            return self.metrics
        specs, split, names = self.val
        self.metrics, self.evaluator = self._score(_load(specs, split), specs, names)
        self.metrics_step = step
        write_json_atomic(self.dir.path(METRICS_FILE), self.metrics)
        return self.metrics

    def _score(self, dataset, specs, names):
        """``(metrics, evaluator)`` of the detector on ``dataset``."""
        if self._detect is None:
            height, width = self.detector.image_size
            self._detect = tf.function(
                self.detector.detect, input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)]
            )
        return tfzoo.eval.evaluate_detector(
            self._detect, dataset, self.detector.image_size, names, tfzoo.data.category_ids(specs[0]),
            keep_aspect_ratio=self.detector.encoder.keep_aspect_ratio, progress=bool(self.verbose),
            return_evaluator=True,
        )

    def diagnose(self, specs, split, names):
        """Scores the first :data:`TRAIN_SAMPLE_IMAGES` of the training split beside val, names
        what it sees (:func:`tfzoo.eval.diagnostics.diagnose`), finds the most confused
        class pairs on val, adds it all to metrics.json as ``diagnostics`` and returns the
        report lines (:func:`~tfzoo.eval.diagnostics.report_lines`)."""
        from tfzoo.eval import diagnostics as diag  # noqa: PLC0415

        if not self.dir.chief:
            return []
        _info(self.verbose, f"scoring up to {TRAIN_SAMPLE_IMAGES} images of the training split beside val ...")
        train_metrics, train_evaluator = self._score(_load(specs, split).take(TRAIN_SAMPLE_IMAGES), specs, names)
        val_metrics = self.metrics
        pairs, analysis = [], None
        if self.evaluator is not None:
            analysis = diag.analyze(self.evaluator.image_records(), names)
            pairs = diag.confused_pairs(analysis["confusions"])
        verdict = diag.diagnose(train_metrics["AP50"], val_metrics["AP50"] if val_metrics else None)
        report = {
            **verdict,
            "train_sample": {"split": split, "images": len(train_evaluator.image_ids),
                             **{k: train_metrics[k] for k in ("AP", "AP50", "AR100")},
                             "per_class_AP50": {n: v["AP50"] for n, v in train_metrics["per_class"].items()}},
            "val_recall_by_size": analysis["recall_by_size"] if analysis else None,
            "confused_pairs": pairs,
        }
        if val_metrics is not None:
            self.metrics = dict(val_metrics, diagnostics=report)
            write_json_atomic(self.dir.path(METRICS_FILE), self.metrics)
        self.diagnostics = report
        return diag.report_lines(val_metrics, train_metrics, pairs, verdict, names)

    def plot(self):
        """Writes training.png from ``state["history"]`` (chief only); a failure only warns."""
        from tfzoo.eval import diagnostics as diag  # noqa: PLC0415

        if not self.dir.chief or not self.state.get("history"):
            return None
        final = {}
        if self.metrics is not None:
            final["final val AP50"] = self.metrics.get("AP50")
        if self.diagnostics is not None:
            final["train-sample AP50"] = self.diagnostics["train_sample"]["AP50"]
        try:
            return diag.plot_training(self.state["history"], self.dir.path(PLOT_FILE), final)
        except Exception as error:  # a plot must never fail a finished run
            warnings.warn(f"could not write {PLOT_FILE}: {error}")
            return None


#: Training images :func:`_check_flips` looks at.
MIRROR_CHECK_IMAGES = 300


def _check_flips(config, dataset, names, where, explicit):
    """The config to train with, flips decided: where, mirrored, some classes look like
    others (:mod:`tfzoo.data.mirror`, on the first :data:`MIRROR_CHECK_IMAGES` training
    images), flips would teach the model that they are alike, so a recipe whose flips
    were not asked for explicitly trains without them (said in a warning); one that asks
    for them (``--set flip=true``) keeps them, with the same warning's figures."""
    if not getattr(config, "flip", False) or getattr(config, "augment", "none") == "none":
        return config
    from tfzoo.data import mirror  # noqa: PLC0415

    pairs = mirror.check(dataset, names, limit=MIRROR_CHECK_IMAGES)["mirror_pairs"]
    if not pairs:
        return config
    shown = ", ".join("/".join(p["classes"]) for p in pairs)
    if "flip" in explicit:
        warnings.warn(f"{where}: mirrored, these classes look like each other: {shown}; the horizontal flips "
                      "asked for (flip=true) teach the model they are alike: --no-flip turns them off; "
                      "'tfzoo inspect' shows the figures")
        return config
    warnings.warn(f"{where}: mirrored, these classes look like each other: {shown}; horizontal flips would teach "
                  "the model they are alike, so this run trains without them (--set flip=true keeps them); "
                  "'tfzoo inspect' shows the figures")
    return config.replace(flip=False)


def _augment_text(config):
    """``"scale_jitter with horizontal flips (--no-flip turns them off)"`` or ``"... without ..."``."""
    augment = getattr(config, "augment", "none")
    if augment == "none":
        return "none"
    if getattr(config, "flip", True):
        return f"{augment} with horizontal flips (--no-flip turns them off)"
    return f"{augment} without horizontal flips"


def _info(verbose, message):
    if verbose:
        print(f"tfzoo: {message}", file=sys.stderr, flush=True)


def _build(model, config):
    """Builds preset ``model`` with ``config``; ImageNet weights that cannot be downloaded
    fall back to random initialization with a warning."""
    from tfzoo.models import MODELS

    from tfzoo.backbones import WeightsUnavailableError

    try:
        return MODELS[model](**config.to_dict())
    except WeightsUnavailableError as error:
        reason = str(error.__cause__ or error).strip().splitlines()[0]
        warnings.warn(f"could not download the backbone's ImageNet weights ({reason}); training from random "
                      f"initialization (--set backbone_weights=null says so explicitly)")
        return MODELS[model](**config.replace(backbone_weights=None).to_dict())


def warmup_epochs(schedule, steps_per_epoch):
    """Whole epochs that hold ``schedule``'s warm-up: the shortest plan it can end after."""
    return -(-schedule.warmup_steps // steps_per_epoch)


def plan_epochs(budget_s, first_epoch_s, epoch_s, max_epochs=None):
    """Epochs (>= 1) that fit in ``budget_s`` seconds when the first took ``first_epoch_s``
    and each further one takes ``epoch_s``; at most ``max_epochs`` if given."""
    more = int(max(0.0, budget_s - first_epoch_s) // epoch_s) if epoch_s > 0 else 0
    total = 1 + more
    return min(total, int(max_epochs)) if max_epochs else total


def _epoch_seconds(timing, steps_per_epoch, epoch_end_overhead):
    """Steady-state epoch time from one epoch's (first, last batch end, batches) timing:
    the first batch (tracing) is left out."""
    first, last, batches = timing
    if batches > 1 and first is not None:
        per_step = (last - first) / (batches - 1)
        return per_step * steps_per_epoch + epoch_end_overhead
    return None


def train(model, data, split="train", val_split="val", image_size=None, batch_size=None, epochs=None,
          minutes=None, out=None, resume=False, settings=(), strategy="default", mixed_precision=False,
          eval_every_epoch=False, seed=0, verbose=1, backbone_weights=FROM_CONFIG, *, val_data=None,
          callbacks=(), cache=False, diagnostics=True):
    """Trains preset ``model`` on dataset ``data`` and writes the training directory.

    Args:
      model: a preset of :func:`tfzoo.list_models`.
      data: a dataset spec (``shapes``, ``shapes:N``, ``voc:PATH``, ``coco:PATH``,
        ``tfds:NAME``) or a list of specs with the same classes, concatenated (VOC 07+12).
      split / val_split: training and evaluation splits; ``val_split=None`` skips the
        evaluation; a val split the dataset lacks is skipped with a warning.
      image_size, batch_size, epochs: override the config (the learning rate follows the
        batch size, see :func:`resolve_config`).
      minutes: time budget; the schedule is fitted to it (see the module doc).
      out: the training directory (default ``runs/<model>``).
      resume: continue the run in ``out`` from its last checkpoint.
      settings: ``["key=value", ...]`` config overrides. Unless they set ``flip``, a recipe
        with flips trains without them where mirrored classes of the training data look
        alike (:func:`_check_flips`; the decision is in ``config.json``).
      strategy: one of :data:`STRATEGIES`.
      mixed_precision: mixed_float16 on GPU, mixed_bfloat16 on CPU.
      eval_every_epoch: also evaluate (and write metrics.json) after every epoch.
      seed: Keras' global seed and the input pipeline's.
      verbose: 1 shows progress on stderr (a bar per epoch on a terminal, one plain line per
        epoch otherwise) and progress lines; 0 is quiet.
      backbone_weights: overrides the config's initialization (``None``: random,
        ``"imagenet"``, a weights file); ImageNet weights that cannot be downloaded fall
        back to random with a warning.
      val_data: dataset spec(s) to evaluate on, if not ``data`` (VOC 07+12 evaluates on
        the 2007 test split).
      callbacks: extra ``keras.callbacks.Callback`` objects for ``fit``. One that stops
        training and has a ``stopped`` text (a :class:`TimeBudget` with a deadline of the
        caller's) gives its reason to ``TrainResult.stopped``.
      cache: ``True`` keeps the decoded, validated training examples in memory after the
        first epoch, so later epochs neither read, decode nor generate them (it costs
        height x width x 3 bytes per image: about 190 KiB for a shapes image, 0.5 MiB for
        a 500 x 375 VOC photo); augmentation still runs every epoch. ``False`` (default)
        reads the data every epoch.
      diagnostics: after training, also score the first :data:`TRAIN_SAMPLE_IMAGES` of
        ``split`` and name under- or overfitting, with per-class AP and the most confused
        class pairs on val (printed, and in metrics.json as ``diagnostics``); the losses
        (and per-epoch val AP) are drawn in ``training.png`` either way.

    Returns:
      :class:`TrainResult`.
    """
    started = time.monotonic()
    specs = _specs(data)
    val_specs = _specs(val_data) if val_data is not None else specs
    preset_config(model)  # unknown model: error before any work
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known strategies: {', '.join(STRATEGIES)}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be True or False, got {cache!r}")
    if minutes is not None and strategy == "multiworker":
        raise ValueError("minutes is not supported with the multiworker strategy: workers would stop at "
                         "different steps; use epochs")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    for spec in specs + val_specs:
        tfzoo.data._parse(spec)  # a malformed spec: error before any TensorFlow work
    out = os.path.abspath(out or os.path.join("runs", model))
    dist = make_strategy(strategy)  # first: multiworker needs to start before other TF work
    scope = dist.scope() if dist is not None else contextlib.nullcontext()
    names = _class_names(specs)

    if resume:
        config, state = _resume_config(out, model, names, settings, image_size, batch_size, epochs, mixed_precision)
        policy = state.get("precision", FLOAT32)
    else:
        config = resolve_config(model, names, image_size=image_size, batch_size=batch_size, epochs=epochs,
                                settings=settings, backbone_weights=backbone_weights)
        policy = mixed_policy_name() if mixed_precision else FLOAT32
        state = None

    train_set = _load(specs, split)
    where = f"{'+'.join(specs)} [{split}]"
    if not resume:
        config = _check_flips(config, train_set, names, where, _setting_keys(settings))
    count = count_examples(specs, split, train_set)
    if count == 0:
        raise validate.DataError(f"{where} has no examples")
    if count < config.batch_size:
        raise validate.DataError(f"{where} has {count} examples, fewer than batch_size {config.batch_size}; "
                                 "lower the batch size or add data")
    steps_per_epoch = count // config.batch_size
    if resume and state.get("steps_per_epoch") not in (None, steps_per_epoch):
        raise ValueError(f"{out}: the run was planned with {state['steps_per_epoch']} steps per epoch; {where} "
                         f"now gives {steps_per_epoch} ({count} examples / batch {config.batch_size})")

    val = None
    if val_split is not None:
        missing = [s for s in val_specs if not split_exists(s, val_split)]
        if missing:
            warnings.warn(f"{', '.join(missing)} has no split {val_split!r}: skipping evaluation")
        else:
            val_names = _class_names(val_specs)
            if val_names != names:
                raise ValueError(f"val data {'+'.join(val_specs)} has other classes than {where}")
            val = (val_specs, val_split, names)

    keras.utils.set_random_seed(seed)
    with precision(policy), scope:
        rundir = _RunDir(out, is_chief(dist) if dist is not None else True)
        try:
            if resume:
                if state.get("finished"):
                    return _finished(out, state, started)
                model_path = os.path.join(out, MODEL_FILE)
                if not os.path.exists(model_path):
                    raise ValueError(f"{out}: no {MODEL_FILE} to resume from (the run stopped before its first "
                                     "checkpoint); start it again without resume")
                detector = keras.saving.load_model(model_path, safe_mode=True)
                if optimizer_step(detector) != int(state.get("step", -1)):
                    warnings.warn(f"{model_path} holds step {optimizer_step(detector)}, state.json says "
                                  f"{state.get('step')}")
                schedule = None
                planned = int(state["planned_epochs"])
                initial_epoch = int(state["epoch"])
                rundir_state = dict(state, stopped=None)
                _info(verbose, f"resuming {out} at epoch {initial_epoch + 1}/{planned}, step "
                               f"{optimizer_step(detector)}")
            else:
                detector = _build(model, config)
                config = detector.config
                planned = config.epochs
                schedule = make_schedule(config, planned * steps_per_epoch)
                detector.compile(optimizer=make_optimizer(config, schedule))
                # Optimizer slots now, not inside the first traced step (which tf.function
                # would then trace a second time to lift the new variables).
                detector.optimizer.build(detector.trainable_variables)
                initial_epoch = 0
                if rundir.chief:
                    _start_over(out)
                write_json_atomic(rundir.path(CONFIG_FILE), json.loads(config.to_json()))
                rundir_state = {
                    "model": model, "data": specs, "split": split, "epoch": 0, "step": 0, "finished": False,
                    "stopped": None, "planned_epochs": planned, "steps_per_epoch": steps_per_epoch,
                    "total_steps": planned * steps_per_epoch, "warmup_steps": schedule.warmup_steps,
                    "batch_size": config.batch_size, "precision": policy, "seed": seed,
                }
                _info(verbose, f"training {model} on {where}: {count} examples, {steps_per_epoch} steps/epoch x "
                               f"{planned} epochs{' (provisional, time budget)' if minutes else ''}, batch "
                               f"{config.batch_size}, {config.optimizer} lr {config.learning_rate:g} "
                               f"({config.lr_schedule}), {policy}, augment {_augment_text(config)}, out {out}")
            run = _Run(rundir, detector, rundir_state, val, verbose,
                       train_data=(specs, split, names) if diagnostics else None)
            run.write_state()
            return _fit(run, train_set, config, schedule, steps_per_epoch, planned, initial_epoch, minutes,
                        eval_every_epoch, seed, verbose, dist, callbacks, started, epochs, cache)
        finally:
            rundir.cleanup()


def _start_over(out):
    """Prepares ``out`` for a new run: a previous run there is replaced (its model.keras
    only when the first epoch's checkpoint is written; its metrics.json at once)."""
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, MODEL_FILE)) or os.path.exists(os.path.join(out, STATE_FILE)):
        warnings.warn(f"{out} holds a previous run: starting a new one over it (resume=True would continue it)")
    if os.path.exists(os.path.join(out, METRICS_FILE)):
        os.remove(os.path.join(out, METRICS_FILE))


def _resume_config(out, model, names, settings, image_size, batch_size, epochs, mixed_precision):
    state_path, config_path = os.path.join(out, STATE_FILE), os.path.join(out, CONFIG_FILE)
    for path in (state_path, config_path):
        if not os.path.exists(path):
            raise ValueError(f"cannot resume: {path} does not exist")
    state = _read_json(state_path)
    saved = preset_config(model).from_dict(_read_json(config_path)) if state.get("model") == model else None
    if saved is None:
        raise ValueError(f"cannot resume {out} with model {model!r}: it was trained with {state.get('model')!r}")
    requested = resolve_config(model, names, image_size=image_size, batch_size=batch_size, epochs=epochs,
                               settings=settings)
    fields = sorted(_requested_fields(settings, image_size, batch_size, epochs))
    if epochs is not None and epochs != state.get("planned_epochs"):
        raise ValueError(f"cannot resume {out}: it is planned for {state.get('planned_epochs')} epochs, not {epochs}")
    fields = [f for f in fields if f != "epochs"]
    diffs = [f"{f}={getattr(requested, f)!r} (saved: {getattr(saved, f)!r})" for f in fields
             if getattr(requested, f) != getattr(saved, f)]
    if diffs:
        raise ValueError(f"cannot resume {out} with another config: {'; '.join(diffs)}; drop these options or "
                         "train into another out")
    if mixed_precision and state.get("precision", FLOAT32) == FLOAT32:
        raise ValueError(f"cannot resume {out} with mixed precision: it was trained in float32")
    return saved, state


def _finished(out, state, started):
    model_path = os.path.join(out, MODEL_FILE)
    warnings.warn(f"{out}: the run already finished ({state.get('epoch')} epochs, step {state.get('step')}); "
                  "nothing to resume")
    detector = keras.saving.load_model(model_path, safe_mode=True)
    metrics_path = os.path.join(out, METRICS_FILE)
    metrics = _read_json(metrics_path) if os.path.exists(metrics_path) else None
    return TrainResult(out, detector, metrics, int(state.get("epoch", 0)), int(state.get("step", 0)),
                       state.get("stopped"), time.monotonic() - started, True,
                       int(state.get("planned_epochs", 0)), int(state.get("steps_per_epoch", 0)))


def _tensorboard(log_dir):
    """``[keras.callbacks.TensorBoard(log_dir)]``, or ``[]`` with a warning when the
    ``tensorboard`` package (which TensorFlow >= 2.20 no longer installs) is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        warnings.warn(f"TensorBoard is not installed, so {log_dir} stays empty; pip install tensorboard")
        return []
    return [keras.callbacks.TensorBoard(log_dir)]


def _fit(run, train_set, config, schedule, steps_per_epoch, planned, initial_epoch, minutes, eval_every_epoch,
         seed, verbose, dist, extra_callbacks, started, max_epochs, cache=False):
    detector = run.detector
    # A resumed run draws a new data order rather than repeating its first epochs'.
    batches = tfzoo.data.pipeline(train_set, detector, config.batch_size, training=True,
                                  seed=seed + initial_epoch, cache=cache).repeat()
    if dist is not None and isinstance(dist, tf.distribute.MultiWorkerMirroredStrategy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        batches = batches.with_options(options)
    nan_guard = StopOnNonFiniteLoss()
    checkpoint = _Checkpoint(run, nan_guard, steps_per_epoch, eval_every_epoch)
    callbacks = [nan_guard]
    budget = replan = None
    if minutes is not None:
        budget = TimeBudget(time.monotonic() + 60.0 * minutes, minutes)
        callbacks.append(budget)
    callbacks.append(checkpoint)
    if verbose:
        callbacks.append(TrainingProgress(config.batch_size))  # after the checkpoint: its line holds val AP
    if minutes is not None and schedule is not None and initial_epoch == 0:
        replan = _Replan(run, schedule, steps_per_epoch, budget.deadline, max_epochs, verbose)
        callbacks.append(replan)  # after the checkpoint: an epoch's length includes it
    callbacks += [*_tensorboard(run.dir.path(LOGS_DIR)), *extra_callbacks]
    history = {}

    def fit(first, last):
        try:
            result = detector.fit(batches, epochs=last, initial_epoch=first, steps_per_epoch=steps_per_epoch,
                                  callbacks=callbacks, verbose=0, shuffle=False)  # the pipeline shuffles
        except ValueError as error:
            if _workers(dist) > 1 and ("PerReplica" in str(error) or "reduction dimension" in str(error)):
                raise RuntimeError(
                    f"Keras {keras.__version__} model.fit fails under MultiWorkerMirroredStrategy with more than one "
                    "worker (keras-team/keras#20585); train on one machine with strategy 'mirrored'"
                ) from error
            raise
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)

    fit_started = time.monotonic()
    if minutes is not None and schedule is not None and initial_epoch == 0 and planned > 1:
        # Time budget: one epoch on the provisional schedule, then fit the schedule to the budget.
        fit(0, 1)
        if budget.stopped is None and nan_guard.stopped is None and not detector.stop_training:
            overhead = time.monotonic() - (checkpoint.epoch_times[-1][1] or fit_started)
            epoch_s = _epoch_seconds(checkpoint.epoch_times[-1], steps_per_epoch, overhead)
            first_s = time.monotonic() - fit_started
            planned = plan_epochs(60.0 * minutes, first_s, epoch_s or first_s, max_epochs)
            # A schedule ends after its warm-up: a budget that holds fewer steps is cut by its
            # deadline instead (as the re-planner does).
            planned = max(planned, warmup_epochs(schedule, steps_per_epoch))
            schedule.set_total_steps(planned * steps_per_epoch)
            run.write_state(planned_epochs=planned, total_steps=planned * steps_per_epoch)
            _info(verbose, f"time budget {minutes:g} min: {planned} epochs planned (first epoch {first_s:.1f} s, "
                           f"then about {epoch_s or first_s:.1f} s each; re-planned after each epoch)")
            replan.planned = planned
            # The re-planner may lengthen the plan while a fit runs: then fit again up to it.
            while int(run.state["epoch"]) < replan.planned:
                fit(int(run.state["epoch"]), replan.planned)
                if budget.stopped or nan_guard.stopped or (
                        detector.stop_training and int(run.state["epoch"]) < replan.planned):
                    break  # the deadline, a non-finite loss or another callback ended it
    elif initial_epoch < planned:
        fit(initial_epoch, planned)

    if nan_guard.stopped is not None:
        message = f"training stopped: {nan_guard.stopped}"
        model_path = run.dir.path(MODEL_FILE)
        if os.path.exists(model_path):
            message += f"; {model_path} keeps epoch {run.state['epoch']} (step {run.state['step']})"
            detector = keras.saving.load_model(model_path, safe_mode=True)
        else:
            message += "; no checkpoint was written (the weights are not finite)"
        warnings.warn(message)
        run.write_state(stopped=nan_guard.stopped, finished=False)
        run.plot()
        return TrainResult(run.dir.out, detector, None, int(run.state["epoch"]), int(run.state["step"]),
                           nan_guard.stopped, time.monotonic() - started, False, int(run.state["planned_epochs"]),
                           steps_per_epoch, history)

    completed = int(run.state["epoch"])
    finished = completed >= int(run.state["planned_epochs"])
    stopped = None
    if not finished:
        # The reason of the callback that stopped it: the time budget, or an extra
        # callback with a ``stopped`` text (a caller's own TimeBudget ...).
        reasons = [getattr(c, "stopped", None) for c in [budget, *extra_callbacks] if c is not None]
        stopped = next((r for r in reasons if isinstance(r, str) and r),
                       f"stopped by a callback after epoch {completed}")
        _info(verbose, f"training stopped: {stopped}; resume to finish the schedule")
    if optimizer_step(detector) != int(run.state["step"]):
        run.checkpoint(completed)
    metrics = run.evaluate()
    run.write_state(finished=finished, stopped=stopped,
                    seconds=round(float(run.state.get("seconds", 0.0)) + time.monotonic() - fit_started, 1))
    if metrics is not None:
        _info(verbose, f"{run.val[1]} AP {metrics.get('AP', 0.0):.4f}, AP50 {metrics.get('AP50', 0.0):.4f}, "
                       f"VOC07 mAP {metrics.get('voc07_mAP', 0.0):.4f} -> {run.dir.path(METRICS_FILE)}")
    if run.train_data is not None and int(run.state["step"]) > 0:
        for line in run.diagnose(*run.train_data):
            _info(verbose, line)
        metrics = run.metrics
    plot = run.plot()
    if plot:
        _info(verbose, f"losses{' and val AP' if 'val_AP' in run.state.get('history', {}) else ''} by epoch -> {plot}")
    return TrainResult(run.dir.out, detector, metrics, completed, int(run.state["step"]), stopped,
                       time.monotonic() - started, finished, int(run.state["planned_epochs"]), steps_per_epoch,
                       history, run.diagnostics)
