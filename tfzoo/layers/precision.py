"""Dtype policies for parts of a model (a float32 backbone under a mixed global policy)."""
from __future__ import annotations

import contextlib

import keras

#: Keras dtype policies a part of a model may be pinned to (see :func:`dtype_policy`).
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def dtype_policy(policy):
    """Layers created inside the block get the Keras dtype policy ``policy`` (a name of
    :data:`DTYPE_POLICIES`; ``None`` leaves the global policy alone); the previous global
    policy is restored afterwards, also on error."""
    if policy is None:
        yield keras.mixed_precision.global_policy().name
        return
    if policy not in DTYPE_POLICIES:
        raise ValueError(f"dtype policy must be one of {DTYPE_POLICIES}, got {policy!r}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)
