"""Frozen inference: a traced function with its variables turned into constants.

:class:`FrozenFunction` traces a function (a detector's ``detect``, a loaded SavedModel's
signature; :func:`freeze_detect`) and replaces every variable it reads by a constant holding its current value
(TensorFlow's ``convert_variables_to_constants_v2``, what the TFLite converter does
first). The result computes the same detections. Why it exists: on an x86 CPU, TF's
oneDNN convolutions treat a constant kernel differently from a variable one. A constant
kernel is reordered once into oneDNN's blocked layout and cached, and each inference batch
norm and activation runs fused into its convolution (a profile of frozen ``yolov3``
shows its 75 convolutions as fused oneDNN ops, ``_MklNativeFusedConv2D``, and little else). A variable kernel is read in its
stored layout at every call, where TF 2.21 picks slower kernels for wide layers (256
channels and up; :class:`tfzoo.layers.Conv2D` documents the same effect).

Figures (``benchmarks/bench_model.py --parts frozen``, BENCHMARKS.md; batch 1, end to end,
decoder and NMS included, 2-core AVX-512 Xeon): ``yolov3`` at 416 1.61x as fast (its
convolutions are 256 to 1,024 channels wide), ``yolov2`` 1.84x, ``ssd300`` 1.16x; the narrow
CPU presets gain nothing (``yolov3_tiny`` 1.01x).

The costs:

- Freezing traces the function and copies every weight into the graph: about 7 s for
  ``yolov3`` (62 M parameters) on 2 cores, then about as long again in the first call
  (Grappler folds the batch norms into the kernels). Worth it for a few hundred images,
  not for one.
- Memory: the weights are held again, as the graph's constants, besides the model's
  variables, and oneDNN keeps its reordered copies of the kernels (``yolov3``: 250 MB of
  weights each time; not measured).
- The weights are those of the moment of freezing: later training does not reach a frozen
  function.
- oneDNN caches its convolution primitives by shape for the whole process, not per
  function: a process that ran the variable-kernel path first can reuse its primitives in
  the frozen function and lose most of the gain. Freeze before the first call, and time
  the two paths in separate processes (``bench_model.py`` runs ``--parts frozen`` alone).

TFLite files hold their weights as constants already (:mod:`tfzoo.export.tflite`).
"""
from __future__ import annotations

import tensorflow as tf


def _convert(concrete):
    # The v2 converter has no public alias (tf.compat.v1.graph_util's works on v1 graphs).
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: PLC0415

    return convert_variables_to_constants_v2(concrete)


class FrozenFunction:
    """``fn`` traced for ``input_signature`` (a structure of ``tf.TensorSpec``), its
    variables read once into constants. Called with inputs of that structure, it returns
    the structure ``fn`` returns (a dict of tensors for ``detect``).

    ``fn`` may also be a ``ConcreteFunction`` taking keyword arguments (a loaded
    SavedModel's signature; no ``input_signature``): the frozen function takes the dict of
    its arguments.
    """

    def __init__(self, fn, input_signature=None):
        self._keywords = isinstance(fn, tf.types.experimental.ConcreteFunction)
        if self._keywords:
            concrete = fn
            input_signature = fn.structured_input_signature[1]
        else:
            concrete = tf.function(fn, input_signature=[input_signature], autograph=False).get_concrete_function()
        self.input_signature = input_signature
        # (the outputs' structure only: holding the traced tensors would keep the traced
        # graph, and its variables, alive)
        self._structure = tf.nest.map_structure(lambda _: None, concrete.structured_outputs)
        self._frozen = _convert(concrete)

    def __call__(self, inputs):
        try:
            tf.nest.assert_same_structure(self.input_signature, inputs)
        except (ValueError, TypeError):
            want = (f"a dict with the keys {sorted(self.input_signature)}" if isinstance(self.input_signature, dict)
                    else "one tensor")
            got = f"a dict with the keys {sorted(inputs)}" if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(f"this frozen function takes {want}, got {got}") from None
        inputs = tf.nest.map_structure(tf.convert_to_tensor, inputs)
        outputs = self._frozen(**inputs) if self._keywords else self._frozen(*tf.nest.flatten(inputs))
        if isinstance(outputs, dict):
            return outputs
        return tf.nest.pack_sequence_as(self._structure, tf.nest.flatten(outputs))


def freeze_detect(detector, batch_size=None):
    """``detector.detect`` as a :class:`FrozenFunction` (any batch by default)."""
    return FrozenFunction(detector.detect, detector.detect_spec(batch_size))
