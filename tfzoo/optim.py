"""Learning-rate schedules and optimizers of the training recipes.

:class:`WarmupDecaySchedule` (linear warm-up from 1/3 of the rate, Detectron's; then step
decay, x0.1 at 2/3 and 8/9 of training as the paper's 60k and 80k of 90k iterations, or a
cosine to 0), :class:`L2SGD` (momentum SGD with L2 weight decay added to the gradient, as
in the paper and Detectron) and :class:`FusedAdamW` (decoupled weight decay), each updated
by TensorFlow's fused kernels. They are registered Keras serializables (package
``tfzoo``), so a compiled ``model.keras`` loads wherever this module is imported:
:mod:`tfzoo.models.base` imports it.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

#: Warm-up starts at this fraction of the learning rate (Detectron's WARM_UP_FACTOR).
WARMUP_START_FACTOR = 1.0 / 3.0

#: Warm-up never takes more than this fraction of the schedule (short runs).
MAX_WARMUP_FRACTION = 0.2

#: Step decay: the learning rate is multiplied by STEP_DECAY_FACTOR at these fractions of
#: training (the paper: 60k and 80k of 90k iterations).
STEP_DECAY_AT = (2.0 / 3.0, 8.0 / 9.0)

STEP_DECAY_FACTOR = 0.1


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
    """The :class:`WarmupDecaySchedule` of ``config`` over ``total_steps`` (warm-up capped;
    step decays at the config's ``lr_decay_at`` fractions of training)."""
    warmup = min(int(config.warmup_steps), int(MAX_WARMUP_FRACTION * total_steps))
    decay_at = tuple(getattr(config, "lr_decay_at", STEP_DECAY_AT))
    return WarmupDecaySchedule(config.learning_rate, total_steps, max(warmup, 0), config.lr_schedule,
                               warmup_start_factor=float(getattr(config, "warmup_factor", WARMUP_START_FACTOR)),
                               decay_at=decay_at)


def make_optimizer(config, schedule):
    """The optimizer named by ``config.optimizer`` driven by ``schedule`` (gradients clipped
    to the global norm ``config.clip_norm`` when it is set)."""
    clip = getattr(config, "clip_norm", None)
    extra = {} if clip is None else {"global_clipnorm": float(clip)}
    if config.optimizer == "sgd":
        return L2SGD(schedule, momentum=config.momentum, l2=config.weight_decay, **extra)
    if config.optimizer == "adamw":
        return FusedAdamW(schedule, weight_decay=config.weight_decay, **extra)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")
