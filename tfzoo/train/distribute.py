"""Distribution strategies and numeric precision of a run."""
from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from tfzoo import layers

#: The distribution strategies :func:`train` accepts.
STRATEGIES = ("default", "mirrored", "multiworker")

#: Precision policies recorded in state.json.
FLOAT32 = "float32"


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
