"""TFLite export with NMS inside, TFLite builtin ops only (no Flex, no custom ops).

::

    tfzoo.export.export_tflite(detector, "model_fp32.tflite")
    tfzoo.export.export_tflite(detector, "model_int8.tflite", quantize="int8",
                               calibration_images=images)   # float32 [S, S, 3] each

The file has one signature, ``serving_default``:

- input ``images``: float32 ``[1, S, S, 3]``, RGB in [0, 255], **already resized** to the
  model input the way the evaluation pipeline does it (for RetinaNet an aspect-preserving
  resize with bottom/right zero padding: :func:`tfzoo.data.augment.resize_images`). The
  batch is static 1 (a dynamic batch would need a ``WHILE`` loop around NMS). The input
  stays float32 for every ``quantize`` mode (int8 files quantize and dequantize inside).
- outputs ``detection_boxes`` float32 ``[1, M, 4]`` normalized ``[y1, x1, y2, x2]`` of the
  input, ``detection_scores`` ``[1, M]``, ``detection_classes`` int32 ``[1, M]`` (-1 on
  padding), ``num_detections`` int32 ``[1]``; use the signature runner to get them by
  name. Map boxes to the original image with the ``image_info`` of the resize
  (:func:`tfzoo.export.saved_model.detections_on_original`).

With ``raw_outputs=True`` the file also has a ``raw_outputs`` signature (the raw head
outputs, for parity checks; it makes the file about twice as large).

NMS is the shared :mod:`tfzoo.ops.nms` (``detector.decode``): ``TOPK_V2``, ``GATHER`` and
``NON_MAX_SUPPRESSION_V5``. Quantization (``quantize``): ``None`` float32; ``"float16"``
float16 weights; ``"dynamic"`` int8 weights, float activations; ``"int8"`` full integer
quantization of the network (weights and activations) calibrated on
``calibration_images``, with the decoder (sigmoid, box decoding, top-k, NMS: every op
under :data:`tfzoo.models.base.DECODER_SCOPE`) and any float-only part inside the graph
(a two-stage detector's proposal generation, under :data:`~tfzoo.models.base.FLOAT_SCOPE`:
:data:`~tfzoo.models.base.FLOAT_SCOPES`) kept in float32. Quantizing the decoder
too would requantize the scores with a scale calibrated on background anchors (most
scores near 0) and lose the detections; a ``DEQUANTIZE`` between the int8 heads and the
float decoder costs little. The quantizer may still put a float -> int8 -> float round trip
on a decoder tensor (it does on the sigmoid's scores of the RetinaNet decoder); such
round trips are removed after quantization. The input and outputs stay float32 in every mode.

The detector's metadata (:func:`tfzoo.export.artifacts.export_metadata`: config, class
names, input size) is stored inside the file as the TFLite metadata entry ``tfzoo``
(:func:`read_metadata`). Every file is written to a temporary name, loaded in the LiteRT
interpreter (``ai_edge_litert``), checked (builtin ops only, ``NON_MAX_SUPPRESSION_V5``
present, weights frozen into constants, int8 files with int8 convolutions and a float32
decoder, one run giving the four outputs, detections where the Keras model detects, the
top score within :data:`SCORE_TOLERANCE` of Keras' for float32) and only then renamed
into place.
"""
from __future__ import annotations

import contextlib

import json
import os
import re
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from tfzoo import atomic, layers
from tfzoo.export import artifacts
from tfzoo.export import saved_model as sm

#: ``quantize`` modes of :func:`export_tflite`.
QUANTIZE_MODES = (None, "float16", "dynamic", "int8")
#: Name of the metadata entry holding the tfzoo metadata JSON.
METADATA_NAME = "tfzoo"
#: Ops that mean the weights were not frozen (the Keras 3 weightless-file trap).
VARIABLE_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")
#: The NMS op every detector file must contain.
NMS_OP = "NON_MAX_SUPPRESSION_V5"
#: Detections of a float32 file must agree with Keras within this (verification).
SCORE_TOLERANCE = 1e-3
#: A Keras detection this far above the score threshold must not vanish in any export.
CLEAR_MARGIN = 0.1


def interpreter(model_path=None, model_content=None, num_threads=None):
    """A LiteRT ``Interpreter`` (``ai_edge_litert``; ``tf.lite.Interpreter`` is deprecated)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError("running .tflite files needs the LiteRT interpreter: pip install ai-edge-litert") from e
    return Interpreter(model_path=model_path, model_content=model_content,
                       num_threads=num_threads or os.cpu_count())


def op_names(model_bytes):
    """Names of every operator in every subgraph of a ``.tflite`` model.

    Builtins by their ``BuiltinOperator`` name (``CONV_2D``, ``NON_MAX_SUPPRESSION_V5``);
    custom ops (Flex included) as ``CUSTOM:<code>`` (``CUSTOM:FlexSomething``).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_bytes, 0)
    code_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        if builtin == schema.BuiltinOperator.CUSTOM or custom:
            names.add(f"CUSTOM:{custom.decode() if custom else ''}")
        else:
            names.add(code_names[builtin])
    return names


def _operators(model_bytes):
    """Yields ``(subgraph, operator, op type name)`` for every operator of a ``.tflite`` model."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_bytes, 0)
    code_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            yield graph, op, code_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")


def op_input_types(model_bytes):
    """``{op type: set of dtype names of its first input}`` over every subgraph of a model
    (``{"CONV_2D": {"INT8"}, "TOPK_V2": {"FLOAT32"}, ...}``)."""
    from tensorflow.lite.python import schema_py_generated as schema

    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    types = {}
    for graph, op, op_type in _operators(model_bytes):
        if op.InputsLength() and op.Inputs(0) >= 0:
            types.setdefault(op_type, set()).add(type_names[graph.Tensors(op.Inputs(0)).Type()])
    return types


#: Decoder ops whose input must stay float32 in an int8 file (see :func:`export_tflite`).
FLOAT_DECODER_OPS = ("LOGISTIC", "TOPK_V2", NMS_OP)


def non_builtin_ops(names):
    """The custom/Flex ops among ``names`` (from :func:`op_names`)."""
    return sorted(n for n in names if n.startswith("CUSTOM") or "FLEX" in n.upper())


def add_metadata(model_bytes, name, payload):
    """``model_bytes`` with a TFLite metadata entry ``name`` holding ``payload`` (JSON)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(payload, sort_keys=True).encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != name.encode()] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def is_tflite_export(path):
    """Whether ``path`` is a ``.tflite`` file with tfzoo's metadata (an earlier export)."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        model_bytes = f.read()
    if model_bytes[4:8] != b"TFL3":
        return False
    try:
        return read_metadata(model_bytes) is not None
    except Exception:  # noqa: BLE001 - a truncated or corrupt flatbuffer
        return False


def read_metadata(model_bytes, name=METADATA_NAME):
    """The JSON payload of metadata entry ``name`` of a ``.tflite`` model, or ``None``."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_bytes, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() is not None and entry.Name().decode() == name:
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode("utf-8"))
    return None


def _calibration_batches(calibration_images, image_size, limit=None):
    """``{"images": float32 [1, S, S, 3]}`` per calibration image (TFLite's representative
    dataset), with ``"proposals" [1, R, 4]`` where the elements carry them.

    Accepts an iterable (or ``tf.data.Dataset``) of images ``[S, S, 3]``, batches
    ``[B, S, S, 3]``, ``{"images", "proposals"}`` dicts of either, or ``(inputs, ...)``
    tuples as :func:`tfzoo.data.pipeline` yields.
    """
    expected = (int(image_size[0]), int(image_size[1]), 3)
    count = 0
    for element in calibration_images:
        if isinstance(element, (tuple, list)):
            element = element[0]
        proposals = None
        if isinstance(element, dict):
            proposals = element.get("proposals")
            element = element["images"]
        images = np.asarray(element, np.float32)
        batched = images.ndim == 4
        images = images if batched else images[None]
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"calibration images must be float32 {list(expected)} (resized to the model "
                             f"input), got shape {list(np.shape(element))}")
        if proposals is not None:
            proposals = np.asarray(proposals, np.float32)
            proposals = proposals if batched else proposals[None]
        for i, image in enumerate(images):
            if limit is not None and count >= limit:
                return
            count += 1
            batch = {"images": image[None]}
            if proposals is not None:
                batch["proposals"] = proposals[i:i + 1]
            yield batch


def _convert(detector, quantize, calibration_images, raw_outputs, calibration_limit):
    from tfzoo.ops.roi import builtin_crops, unrolled_chunks

    # Every trace in here takes the builtin RoI crops (crop_and_resize is not one); an int8
    # file also unrolls chunked loops (R-CNN's windows), which its calibration cannot run.
    with builtin_crops(), (unrolled_chunks() if quantize == "int8" else contextlib.nullcontext()):
        return _convert_traced(detector, quantize, calibration_images, raw_outputs, calibration_limit)


def _convert_traced(detector, quantize, calibration_images, raw_outputs, calibration_limit):
    names = (sm.SERVING_DEFAULT, sm.RAW_OUTPUTS) if raw_outputs else (sm.SERVING_DEFAULT,)
    functions = sm.serving_functions(detector, batch=1, names=(sm.DETECT,) + names[1:])
    functions[sm.SERVING_DEFAULT] = functions.pop(sm.DETECT)  # fixed-size float input
    module = sm.ServingModule(detector, functions)
    with tempfile.TemporaryDirectory(prefix="tfzoo-tflite-") as directory:
        tf.saved_model.save(module, directory, signatures=module.signatures())
        converter = tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=list(names))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            return _convert_int8(converter, detector, names, calibration_images, calibration_limit)
        return converter.convert()


def decoder_ops(model_bytes, layers=()):
    """What an int8 export keeps in float32: ``(tensor_names, op_types)`` of a ``.tflite`` model.

    ``tensor_names``: outputs of the ops under a float scope (the decoder's,
    :data:`tfzoo.models.base.DECODER_SCOPE`, or a float-only part inside the graph,
    :data:`~tfzoo.models.base.FLOAT_SCOPE`) or of one of the Keras ``layers`` named
    (:meth:`~tfzoo.models.base.Detector.int8_float_layers`; a fused op's tensor is named
    ``"a;b"`` after its parts, each part is listed too) and the outputs of every subgraph that has such
    ops. ``op_types``: the op types that occur only in the decoder. The quantizer honours
    the tensor names for ops it quantizes on their own (``MUL``, ``ADD``), but quantizes
    pass-through ops (``TOPK_V2``, ``SPLIT_V``, ``GATHER``) with their input unless their type
    is denied, hence both lists.
    """
    names, decoder_types, network_types = set(), set(), set()
    graphs_with_decoder = {}

    def tensor_name(graph, i):
        return (graph.Tensors(i).Name() or b"").decode("utf-8", "replace")

    for graph, op, op_type in _operators(model_bytes):
        outputs = [tensor_name(graph, op.Outputs(i)) for i in range(op.OutputsLength()) if op.Outputs(i) >= 0]
        if any(_in_float_scope(name) for name in outputs):
            graphs_with_decoder[id(graph)] = graph
            decoder_types.add(op_type)
            for name in outputs:
                names.update(part for part in [name, *name.split(";")] if _in_float_scope(part))
        else:
            network_types.add(op_type)
            for name in outputs:  # a float layer's ops: by name only, their types serve the network too
                names.update(part for part in [name, *name.split(";")] if _in_layers(part, layers))
    for graph in graphs_with_decoder.values():
        names.update(tensor_name(graph, graph.Outputs(i)) for i in range(graph.OutputsLength()))
    return sorted(names), sorted(decoder_types - network_types)


def _in_layers(name, layers):
    """Whether a tensor name is one of the Keras ``layers``' (``"model_1/p5_box_1/BiasAdd"``:
    the layer ``p5_box`` called once)."""
    return any(re.search(rf"(^|/){re.escape(layer)}(_\d+)?/", name) for layer in layers)


def _in_float_scope(name):
    """Whether a tensor name lies under one of :data:`tfzoo.models.base.FLOAT_SCOPES`."""
    from tfzoo.models.base import FLOAT_SCOPES

    return any(scope in name for scope in FLOAT_SCOPES)


def _is_float_decoder_tensor(tensor_type, name):
    """Whether a tensor (its ``TensorType`` and name, bytes or str) is a float32 tensor under
    the decoder's name scope."""
    from tensorflow.lite.python import schema_py_generated as schema

    from tfzoo.models.base import FLOAT_EXIT

    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return tensor_type == schema.TensorType.FLOAT32 and _in_float_scope(name or "") and FLOAT_EXIT not in name


def decoder_requantizations(model_bytes):
    """Names of the float32 decoder tensors that a ``.tflite`` model puts on an integer grid
    (a ``QUANTIZE`` op reading them): each is a float -> int8 -> float round trip."""
    found = set()
    for graph, op, op_type in _operators(model_bytes):
        if op_type == "QUANTIZE" and op.InputsLength() and op.Inputs(0) >= 0:
            tensor = graph.Tensors(op.Inputs(0))
            if _is_float_decoder_tensor(tensor.Type(), tensor.Name()):
                found.add(tensor.Name().decode("utf-8", "replace"))
    return sorted(found)


def _strip_decoder_requantization(model_bytes):
    """Removes the float -> int8 -> float round trips on decoder tensors from a quantized model.

    The quantizer keeps the denylisted decoder ops in float32 but, depending on the ops
    around them, may still insert ``QUANTIZE`` (-> ``QUANTIZE``) -> ``DEQUANTIZE`` on one of
    their float outputs (seen on the sigmoid's scores, which then come in steps of 1/256,
    and on the decoded boxes). Such a chain is removed when it starts at a float32 tensor
    under the decoder's name scope and ends only in ``DEQUANTIZE`` ops: their consumers read
    the float tensor instead. A chain feeding any other op is left alone.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    quantize, dequantize = schema.BuiltinOperator.QUANTIZE, schema.BuiltinOperator.DEQUANTIZE
    changed = False
    for graph in model.subgraphs:
        ops = graph.operators or []
        consumers = {}
        for index, op in enumerate(ops):
            for tensor in op.inputs if op.inputs is not None else []:
                consumers.setdefault(int(tensor), []).append(index)
        outputs = {int(t) for t in (graph.outputs if graph.outputs is not None else [])}
        removed, replace = set(), {}
        for index, op in enumerate(ops):
            if codes[op.opcodeIndex] != quantize or index in removed:
                continue
            source = int(op.inputs[0])
            if not _is_float_decoder_tensor(graph.tensors[source].type, graph.tensors[source].name):
                continue
            chain, ends, frontier, ok = {index}, [], [int(op.outputs[0])], True
            while frontier and ok:
                current = frontier.pop()
                if current in outputs:
                    ok = False
                for user in consumers.get(current, []):
                    code = codes[ops[user].opcodeIndex]
                    if code == quantize:
                        chain.add(user)
                        frontier.append(int(ops[user].outputs[0]))
                    elif code == dequantize:
                        chain.add(user)
                        ends.append(int(ops[user].outputs[0]))
                    else:
                        ok = False
            if ok and ends:
                removed |= chain
                replace.update({end: source for end in ends})
        if not removed:
            continue
        changed = True
        for op in ops:
            if op.inputs is not None:
                op.inputs = np.array([replace.get(int(t), int(t)) for t in op.inputs], np.int32)
        if graph.outputs is not None:
            graph.outputs = np.array([replace.get(int(t), int(t)) for t in graph.outputs], np.int32)
        graph.operators = [op for index, op in enumerate(ops) if index not in removed]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if changed else model_bytes


def _convert_int8(converter, detector, names, calibration_images, calibration_limit):
    """Full-integer network, float32 decoder (see the module doc).

    The converter calibrates only (what ``tf.lite.experimental.QuantizationDebugger`` does),
    then the calibrated model is quantized with the decoder's tensors on the deny list, as
    the debugger's ``denylisted_nodes`` does.
    """
    from tensorflow.lite.python import convert as tflite_convert

    from tfzoo.models.base import DECODER_SCOPE, FLOAT_SCOPE

    seen = []

    def representative_dataset():
        for batch in _calibration_batches(calibration_images, detector.image_size, calibration_limit):
            seen.append(1)
            if len(names) == 1:
                yield batch
            else:  # a multi-signature model takes (signature key, inputs); calibrate every one
                for name in names:
                    yield name, batch

    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    with warnings.catch_warnings():  # the calibrator runs the deprecated tf.lite.Interpreter
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        calibrated = converter.convert()
    if not seen:
        raise ValueError("int8 quantization got no calibration images")
    keep_float, float_types = decoder_ops(calibrated, detector.int8_float_layers())
    if not keep_float:
        raise artifacts.ExportError(f"int8 export found no tensor under the decoder's name scope "
                                    f"{DECODER_SCOPE!r} (or {FLOAT_SCOPE!r}) to keep in float32")
    quantized = tflite_convert.mlir_quantize(
        calibrated,
        disable_per_channel=converter._experimental_disable_per_channel,  # pylint: disable=protected-access
        fully_quantize=False,
        denylisted_nodes=keep_float,
        denylisted_ops=float_types,
    )
    return _strip_decoder_requantization(quantized)


def run_signature(runner_or_interpreter, images, signature=sm.SERVING_DEFAULT):
    """Runs ``signature`` of an interpreter on ``images float32 [1, S, S, 3]`` (or the dict
    ``{"images", "proposals" [1, R, 4]}`` of a proposal-based model); dict of arrays."""
    runner = runner_or_interpreter
    if hasattr(runner, "get_signature_runner"):
        runner = runner.get_signature_runner(signature)
    inputs = images if isinstance(images, dict) else {"images": images}
    return {k: np.asarray(v) for k, v in runner(**{k: np.asarray(v, np.float32) for k, v in inputs.items()}).items()}


def _verify(path, detector, quantize, raw_outputs):
    with open(path, "rb") as f:
        model_bytes = f.read()
    names = op_names(model_bytes)
    bad = non_builtin_ops(names)
    if bad:
        raise artifacts.ExportError(f"the TFLite model uses non-builtin ops {', '.join(bad)}")
    if NMS_OP not in names:
        raise artifacts.ExportError(f"the TFLite model has no {NMS_OP} op: NMS is missing")
    variable_ops = sorted(set(VARIABLE_OPS) & names)
    if variable_ops:
        raise artifacts.ExportError(f"the TFLite model reads variables ({', '.join(variable_ops)}): "
                                    "its weights were not frozen")
    if quantize == "int8":
        types = op_input_types(model_bytes)
        quantized = [op for op in FLOAT_DECODER_OPS if types.get(op, {"FLOAT32"}) != {"FLOAT32"}]
        if quantized:
            raise artifacts.ExportError(f"the int8 TFLite model quantized its decoder ({', '.join(quantized)} "
                                        "take integer inputs): its scores would be requantized")
        requantized = decoder_requantizations(model_bytes)
        if requantized:
            raise artifacts.ExportError(f"the int8 TFLite model puts decoder tensors on an int8 grid "
                                        f"({', '.join(requantized)}): its scores or boxes would be requantized")
        if "INT8" not in types.get("CONV_2D", set()):
            raise artifacts.ExportError("the int8 TFLite model has no int8 convolution: the network was not quantized")
    if read_metadata(model_bytes) is None:
        raise artifacts.ExportError(f"the TFLite model lacks its {METADATA_NAME!r} metadata")
    runtime = interpreter(model_path=path)
    signatures = runtime.get_signature_list()
    expected = {sm.SERVING_DEFAULT} | ({sm.RAW_OUTPUTS} if raw_outputs else set())
    if set(signatures) != expected:
        raise artifacts.ExportError(f"the TFLite model has signatures {sorted(signatures)}, expected {sorted(expected)}")
    h, w = detector.image_size
    image = sm.sample_image(h, w)[None].astype(np.float32)
    if sm.takes_proposals(detector):
        image = {"images": image, "proposals": sm.sample_proposals(detector)}
    outputs = run_signature(runtime, image)
    keras_outputs = {k: np.asarray(v) for k, v in detector.detect(image).items()}
    artifacts.check_detections(outputs, 1, sm.max_detections_of(detector, keras_outputs), "TFLite serving_default")
    # A quantized file may lose detections near the threshold, never all the clear ones (the
    # int8 trap: a decoder quantized with the network returns nothing at all).
    threshold = float(getattr(detector.config, "score_threshold", 0.0))
    clear = int(np.sum(keras_outputs["detection_scores"][0] > threshold + CLEAR_MARGIN))
    if clear and int(outputs["num_detections"][0]) == 0:
        raise artifacts.ExportError(f"the {quantize or 'float32'} TFLite model detects nothing on the check image "
                                    f"where the Keras model detects {clear} objects scoring above "
                                    f"{threshold + CLEAR_MARGIN:g}")
    if quantize is None:
        got, want = outputs["detection_scores"].max(), keras_outputs["detection_scores"].max()
        if not abs(got - want) <= SCORE_TOLERANCE:
            raise artifacts.ExportError(f"the float32 TFLite model's top score {got:g} differs from the Keras "
                                        f"model's {want:g}")


def export_tflite(detector, path, quantize=None, calibration_images=None, *, raw_outputs=False,
                  calibration_limit=None):
    """Writes ``detector`` as a ``.tflite`` file at ``path`` (see the module doc).

    Args:
      detector: a tfzoo Keras detector (one with mixed-precision layers is converted as its
        float32 copy, :meth:`tfzoo.models.base.Detector.as_float32`).
      path: the file to write (replaced atomically; its directory is created).
      quantize: one of :data:`QUANTIZE_MODES`.
      calibration_images: ``"int8"`` only: an iterable or ``tf.data.Dataset`` of float32
        images ``[S, S, 3]`` resized to the model input (batches ``[B, S, S, 3]`` and
        ``(images, ground_truth)`` pairs from ``tfzoo.data.pipeline(..., training=False)``
        work too); a few hundred from the training split is typical.
      raw_outputs: also add the ``raw_outputs`` signature.
      calibration_limit: use at most this many calibration images.

    Returns:
      ``path``.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantize mode {quantize!r}; use one of "
                         f"{', '.join(str(m) for m in QUANTIZE_MODES)}")
    if quantize == "int8" and calibration_images is None:
        raise ValueError("int8 quantization needs calibration_images (images from the training split)")
    if quantize != "int8" and calibration_images is not None:
        raise ValueError(f"calibration_images apply to int8 quantization only, not {quantize!r}")
    if os.path.lexists(path) and not is_tflite_export(path):
        # As for SavedModel folders: only an earlier tfzoo export is replaced, never a user's file.
        raise FileExistsError(f"{path}: exists and is not a tfzoo TFLite export; choose a new path or remove it")
    detector = detector.as_float32()
    with layers.portable_convolutions(detector):  # plain CONV_2D ops, never tfzoo.layers.Conv2D's grouped form
        model = _convert(detector, quantize, calibration_images, raw_outputs, calibration_limit)
    signatures = {sm.SERVING_DEFAULT: "images float32 [1, S, S, 3] at the model input -> detections "
                                      "normalized to the input"}
    if raw_outputs:
        signatures[sm.RAW_OUTPUTS] = sm.SIGNATURES[sm.RAW_OUTPUTS].replace("[B,", "[1,")
    metadata = {**artifacts.export_metadata(detector, signatures), "quantize": quantize}
    model = add_metadata(model, METADATA_NAME, metadata)
    with atomic.atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(model)
        _verify(tmp, detector, quantize, raw_outputs)
    return path
