"""SavedModel export: any-size uint8 images in, detections of the original images out.

::

    tfzoo.export.export_saved_model(detector, "saved_models/retinanet_shapes/saved_model")
    served = tf.saved_model.load(path).signatures["serving_default"]
    served(images=tf.constant(uint8_images))["detection_boxes"]

Signatures (B batch, M detections, S x S the model input):

``serving_default``: ``images`` uint8 ``[B, H, W, 3]`` RGB of any size (one size per
  batch) -> ``detection_boxes`` float32 ``[B, M, 4]`` normalized ``[y1, x1, y2, x2]`` **of
  the original image**, ``detection_scores`` ``[B, M]``, ``detection_classes`` int32
  ``[B, M]`` (0..K-1, -1 on padding), ``num_detections`` int32 ``[B]``. The images are
  resized inside exactly as the evaluation pipeline resizes them
  (:func:`tfzoo.data.augment.resize_images`: aspect-preserving resize and bottom/right
  zero padding for letterboxing detectors such as RetinaNet, a plain resize for the
  others), and the boxes mapped back with
  :func:`tfzoo.data.augment.boxes_to_original`.
``serving_bytes``: ``encoded_images`` string ``[B]``, encoded JPEG/PNG/BMP/GIF files
  (sizes may differ within a batch; decoded with ``tf.io.decode_image(channels=3)``, so
  alpha is dropped and EXIF orientation is *not* applied) -> the same outputs.
``detect``: ``images`` float32 ``[B, S, S, 3]`` in [0, 255], already resized -> detections
  normalized to that input (what ``detector.detect`` returns; evaluation uses it).
``raw_outputs``: ``images`` float32 ``[B, S, S, 3]`` -> the raw head outputs
  (``detector(images)``), for parity checks.

Beside the graph the directory holds ``config.json`` (the detector's config dataclass,
class names included) and ``export.json`` (:func:`tfzoo.export.artifacts.export_metadata`).
A SavedModel holds executable TensorFlow graphs: load only files you trust.
"""
from __future__ import annotations

import os
import types

import numpy as np
import tensorflow as tf

from tfzoo import atomic, layers
from tfzoo.data import augment as aug
from tfzoo.export import artifacts
from tfzoo.ops import boxes as box_ops

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
DETECT = "detect"
RAW_OUTPUTS = "raw_outputs"
#: Signature name -> what it takes (recorded in export.json).
SIGNATURES = {
    SERVING_DEFAULT: "images uint8 [B, H, W, 3], any size -> detections normalized to the original images",
    SERVING_BYTES: "encoded_images string [B] (JPEG/PNG) -> detections normalized to the original images",
    DETECT: "images float32 [B, S, S, 3] at the model input -> detections normalized to the input",
    RAW_OUTPUTS: "images float32 [B, S, S, 3] at the model input -> raw head outputs",
}
#: Raw outputs of the export and of the Keras model must agree within this, relative to
#: the largest output (verification).
RAW_TOLERANCE = 1e-4


def detections_on_original(detections, image_info):
    """Detections normalized to the model input -> normalized to the original images.

    ``image_info [B, 4, 2]`` as written by the resize ops (:mod:`tfzoo.data.augment`);
    the other keys pass through.
    """
    image_info = tf.convert_to_tensor(image_info, tf.float32)
    boxes_px = aug.boxes_to_original(detections["detection_boxes"], image_info)  # [B, M, 4]
    in_size = image_info[:, 0, :]  # [B, 2] original height, width
    out = dict(detections)
    out["detection_boxes"] = box_ops.normalize(boxes_px, in_size[:, 0:1], in_size[:, 1:2])  # [B, M, 4]
    return out


def detect_any_size(detect_fn, images, image_size, keep_aspect_ratio):
    """``detect_fn`` on ``images [B, H, W, 3]`` of any size; boxes normalized to the originals.

    ``detect_fn(images float32 [B, S, S, 3]) -> detections normalized to the input``. This
    is the graph of ``serving_default``; loaded models of every format use it eagerly.
    """
    resized, info = aug.resize_images(images, image_size, keep_aspect_ratio=keep_aspect_ratio)
    outputs = {k: tf.convert_to_tensor(v) for k, v in detect_fn(resized).items()}
    return detections_on_original(outputs, info)


def _decode_and_resize(encoded, image_size, keep_aspect_ratio):
    """One encoded image (string scalar) -> (float32 [S, S, 3], image_info [4, 2])."""
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    resized, info = aug.resize_images(image[None], image_size, keep_aspect_ratio=keep_aspect_ratio)
    return resized[0], info[0]


def serving_functions(detector, batch=None, names=tuple(SIGNATURES)):
    """``{name: tf.function}`` of the export signatures ``names`` (see the module doc).

    ``batch``: static batch size (TFLite uses 1), ``None`` for any. The functions close over
    ``detector``; :class:`ServingModule` saves them with the variables they read.
    """
    size = tuple(detector.image_size)
    keep = bool(detector.encoder.keep_aspect_ratio)
    fixed = tf.TensorSpec([batch, size[0], size[1], 3], tf.float32, name="images")
    # A proposal-based detector also takes proposals [B, R, 4] in every signature: normalized
    # to the model input in detect/raw_outputs, to the original image in serving_default and
    # serving_bytes (moved to the input canvas with the image's resize).
    extra = [proposals_spec(detector, batch)] if takes_proposals(detector) else []

    def inputs(images, rest):
        return {"images": images, "proposals": rest[0]} if rest else images

    def raw_outputs(images, *rest):  # the tensors before any NMS (Detector.pre_nms_outputs)
        return detector.parity_outputs(detector(inputs(images, rest), training=False))

    # One traced graph of the network + decoder, called by every signature that needs it.
    detect = tf.function(lambda images, *rest: dict(detector.detect(inputs(images, rest))),
                         input_signature=[fixed, *extra], autograph=False)

    def serving_default(images, *rest):
        resized, info = aug.resize_images(images, size, keep_aspect_ratio=keep)
        moved = [aug.boxes_to_canvas(rest[0], info)] if rest else []
        return detections_on_original(detect(resized, *moved), info)

    def serving_bytes(encoded_images, *rest):
        spec = (tf.TensorSpec([size[0], size[1], 3], tf.float32), tf.TensorSpec([4, 2], tf.float32))
        resized, info = tf.map_fn(lambda e: _decode_and_resize(e, size, keep), encoded_images,
                                  fn_output_signature=spec)
        moved = [aug.boxes_to_canvas(rest[0], info)] if rest else []
        return detections_on_original(detect(resized, *moved), info)

    specs = {
        SERVING_DEFAULT: (serving_default, tf.TensorSpec([batch, None, None, 3], tf.uint8, name="images")),
        SERVING_BYTES: (serving_bytes, tf.TensorSpec([batch], tf.string, name="encoded_images")),
        DETECT: (detect, fixed),
        RAW_OUTPUTS: (raw_outputs, fixed),
    }
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise ValueError(f"unknown signature(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    return {name: specs[name][0] if name == DETECT else
            tf.function(specs[name][0], input_signature=[specs[name][1], *extra], autograph=False)
            for name in names}


def takes_proposals(detector):
    """Whether ``detector`` takes proposals beside the images (a proposal-based detector)."""
    return "proposals" in tuple(getattr(detector, "input_names", ("images",)))


def proposals_spec(detector, batch=None):
    """``TensorSpec [batch, R, 4]`` of a proposal-based detector's ``proposals`` input."""
    rows = int(detector.inputs[1].shape[1])
    return tf.TensorSpec([batch, rows, 4], tf.float32, name="proposals")


def sample_proposals(detector, batch=1, seed=0):
    """Reproducible proposals ``[batch, R, 4]`` for checks: random boxes, the last few rows
    zero boxes (padding, which must never become detections)."""
    rows = int(detector.inputs[1].shape[1])
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0.0, 0.7, [batch, rows, 2])
    boxes = np.concatenate([corner, corner + rng.uniform(0.1, 0.3, [batch, rows, 2])], -1).clip(0, 1)
    boxes[:, rows - max(1, rows // 4):] = 0.0
    return boxes.astype(np.float32)


class ServingModule(tf.Module):
    """The object a SavedModel is saved from: the signatures and the variables they read.

    Only the variables the traced functions capture are tracked (as TF variables), not the
    Keras model object: the TFLite converter can then freeze them into constants (a
    tracked Keras model leaves ``VAR_HANDLE``/``READ_VARIABLE`` ops and no weights), and
    saving skips the walk over every Keras layer.
    """

    def __init__(self, detector, functions):
        super().__init__(name="tfzoo_serving")
        self._held = types.SimpleNamespace(detector=detector)  # not tracked
        self.functions = dict(functions)
        variables, seen = [], set()
        for fn in self.functions.values():
            for v in fn.get_concrete_function().variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    variables.append(v)
        self.model_variables = variables

    def signatures(self):
        return {name: fn.get_concrete_function() for name, fn in self.functions.items()}


def save_module(detector, directory, names=tuple(SIGNATURES), batch=None):
    """Writes a SavedModel of ``detector`` with signatures ``names`` to ``directory`` (no checks)."""
    module = ServingModule(detector, serving_functions(detector, batch, names))
    tf.saved_model.save(module, directory, signatures=module.signatures())
    return module


def sample_image(height, width, seed=0):
    """A reproducible noisy uint8 test image ``[height, width, 3]`` with a few flat blocks."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, [height, width, 3], dtype=np.uint8)
    image[height // 4: height // 2, width // 4: width // 2] = (220, 40, 40)
    image[height // 2: 3 * height // 4, width // 2: 7 * width // 8] = (30, 200, 90)
    return image


def max_detections_of(detector, outputs):
    """M: the config's ``max_detections``, else the width of ``outputs``' scores."""
    return int(getattr(detector.config, "max_detections", np.asarray(outputs["detection_scores"]).shape[1]))


def _verify(directory, detector, module):
    """Loads the SavedModel in ``directory`` back and checks it against ``module``.

    ``module`` is the :class:`ServingModule` it was saved from: its functions run the live
    Keras model in graph mode, as ``predict`` does (eager Keras differs from any graph by
    float32 rounding of fused ops, ~1e-5 relative), so the raw outputs must agree closely.
    """
    loaded = tf.saved_model.load(directory)
    missing = [name for name in SIGNATURES if name not in loaded.signatures]
    if missing:
        raise artifacts.ExportError(f"SavedModel lacks signature(s) {', '.join(missing)}")
    h, w = detector.image_size
    image = sample_image(h * 3 // 4 + 5, w + 7)  # another size and aspect than the input
    extra = {"proposals": tf.constant(sample_proposals(detector))} if takes_proposals(detector) else {}
    outputs = loaded.signatures[SERVING_DEFAULT](images=tf.constant(image[None]), **extra)
    outputs = {k: v.numpy() for k, v in outputs.items()}
    artifacts.check_detections(outputs, 1, max_detections_of(detector, outputs), f"SavedModel {SERVING_DEFAULT}")
    resized, _ = aug.resize_images(image[None], (h, w), keep_aspect_ratio=detector.encoder.keep_aspect_ratio)
    raw = loaded.signatures[RAW_OUTPUTS](images=resized, **extra)
    expected = module.functions[RAW_OUTPUTS](resized, *extra.values())
    for key, value in expected.items():
        value = np.asarray(value)
        diff = float(np.max(np.abs(raw[key].numpy() - value)))
        if not diff <= RAW_TOLERANCE * (1.0 + float(np.max(np.abs(value)))):
            raise artifacts.ExportError(f"SavedModel {RAW_OUTPUTS} {key} differs from the Keras model by {diff:g}")


def is_saved_model_dir(path):
    """True when ``path`` is a directory holding a SavedModel (``saved_model.pb``)."""
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def export_saved_model(detector, path):
    """Exports ``detector`` as a SavedModel directory at ``path`` (see the module doc).

    The directory is built next to ``path`` under a temporary name, loaded back and run
    (one image of another size through ``serving_default``: keys, shapes, dtypes, finite
    values; ``raw_outputs`` equal to the Keras model's), and only then moved to ``path``.
    An existing SavedModel at ``path`` is replaced; any other existing folder is refused.
    A detector with mixed-precision layers is exported as its float32 copy
    (:meth:`tfzoo.models.base.Detector.as_float32`). The graph holds plain convolutions
    (:func:`tfzoo.layers.portable_convolutions`), whatever machine exports it.

    Returns:
      ``path``.
    """
    detector = detector.as_float32()
    with atomic.atomic_directory(path, is_saved_model_dir) as tmp:
        with layers.portable_convolutions(detector):
            module = save_module(detector, tmp)
        detector.save_config(os.path.join(tmp, artifacts.CONFIG_FILE))
        atomic.write_json(os.path.join(tmp, artifacts.METADATA_FILE),
                             artifacts.export_metadata(detector, SIGNATURES))
        _verify(tmp, detector, module)
    return path
