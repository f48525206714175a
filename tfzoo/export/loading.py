"""``load_model(path)``: any tfzoo model artifact behind one interface.

=========================  ===================================================  ============
PATH                       what is loaded                                       needs trust
=========================  ===================================================  ============
a training directory       its ``model.keras`` (``tfzoo train`` output)         no
``*.keras``                ``keras.saving.load_model(safe_mode=True)``:         no
                           config JSON and weights, never code
``*.tflite``               the LiteRT interpreter (``ai_edge_litert``)          no
a SavedModel directory     ``tf.saved_model.load`` (``saved_model.pb``)         yes
``*.h5``                   Keras' legacy HDF5 loader (no safe mode)             yes
=========================  ===================================================  ============

SavedModels hold executable TensorFlow graphs and legacy ``.h5`` files are deserialized
without Keras' safe mode, so both load only with ``trust_model=True``
(``--trust-model``): load them only from sources you trust. A ``.tflite`` file runs in
the LiteRT interpreter's fixed set of builtin kernels.

Every loaded model (:class:`LoadedModel`) has ``format``, ``path``, ``config`` (the
config dataclass for Keras models, its dict for exports), ``class_names``,
``image_size`` ``(h, w)``, ``keep_aspect_ratio`` and:

- ``detect(images float32 [B, S, S, 3])`` (a proposal-based model: the dict ``{"images",
  "proposals" [B, R, 4]}``, proposals normalized to the input): detections normalized to that input (NumPy
  dict: ``detection_boxes [B, M, 4]``, ``detection_scores``, ``detection_classes``,
  ``num_detections``); what :func:`tfzoo.eval.evaluate_detector` drives;
- ``detect_original(image uint8 [H, W, 3], proposals=None)``: one image of any size (and,
  for a proposal-based model, its proposals ``[R, 4]`` normalized to it) -> its detections
  normalized to *that* image (``detection_boxes [M, 4]``, ``detection_scores [M]``,
  ``detection_classes [M]``, ``num_detections`` an int), resized exactly as the
  evaluation pipeline resizes;
- ``raw_outputs(images)``: the raw head outputs where the format has them.

Errors are :class:`ModelLoadError` (a ``ValueError``) with one line naming the path and
the problem.
"""
from __future__ import annotations

import functools
import json
import os
import struct

import numpy as np

from tfzoo.export import artifacts

#: Files of a training directory (the contract with ``tfzoo train``).
TRAINING_MODEL_FILE = "model.keras"
TRAINING_STATE_FILE = "state.json"
#: Formats of :attr:`LoadedModel.format`.
FORMATS = ("keras", "saved_model", "tflite")
TRUST_HINT = ("it can run arbitrary code when loaded; pass trust_model=True (--trust-model) "
              "only for files from a source you trust")


class ModelLoadError(ValueError):
    """A path that is not a loadable model; the message names the path and the problem."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class LoadedModel:
    """Common interface of the loaded formats (see the module doc)."""

    format = None

    def __init__(self, path, config, class_names, image_size, keep_aspect_ratio):
        self.path = str(path)
        self.config = config
        self.class_names = tuple(class_names)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.keep_aspect_ratio = bool(keep_aspect_ratio)

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def has_class_names(self):
        """False when the config names no classes (``class_names`` is then ``class_0`` ...)."""
        config = self.config
        names = config.get("class_names") if isinstance(config, dict) else getattr(config, "class_names", ())
        return bool(names)

    def _setting(self, name, default=None):
        config = self.config
        return config.get(name, default) if isinstance(config, dict) else getattr(config, name, default)

    @property
    def proposal_source(self):
        """A proposal-based model's ``proposals`` setting (``"ss:fast"``, ``"json:PATH"``
        ...), None for the others."""
        return self._setting("proposals")

    @property
    def max_proposals(self):
        """How many proposals the model takes per image (0: a model without proposals)."""
        return int(self._setting("max_proposals", 0) or 0)

    @property
    def input_names(self):
        return ("images", "proposals") if self.max_proposals else ("images",)

    def _proposals(self, image, proposals):
        """The first ``max_proposals`` proposals of one original image: ``proposals`` as
        given, else the model's own source's (:func:`tfzoo.proposals.for_image`)."""
        from tfzoo import proposals as proposal_source

        if proposals is None:
            if not self.proposal_source:
                raise ValueError(f"{self.path} takes proposals beside the image and names no source for them: "
                                 "pass the image's proposals")
            proposals = proposal_source.for_image(image, self.proposal_source, self.max_proposals)
        return np.asarray(proposals, np.float32).reshape(-1, 4)[:self.max_proposals]

    def _padded(self, proposals):
        """``proposals [R, 4]`` padded with zero boxes to ``[max_proposals, 4]``."""
        padded = np.zeros([self.max_proposals, 4], np.float32)
        padded[:len(proposals)] = proposals
        return padded

    #: Whether :meth:`detect` runs a frozen function (:meth:`frozen`).
    is_frozen = False

    def detect(self, images):
        raise NotImplementedError

    def frozen(self):
        """This model with :meth:`detect` (and :meth:`detect_original`) computed by a frozen
        function: the weights read once into constants (:mod:`tfzoo.export.frozen`; faster
        on an x86 CPU for wide models, at a cost of seconds when first called;
        :meth:`raw_outputs` stays as it was). Keras models and SavedModels; a TFLite file
        holds its weights as constants already and returns itself."""
        return self

    def raw_outputs(self, images):
        raise NotImplementedError(f"{self.format} model {self.path} has no raw outputs")

    def with_image_size(self, image_size):
        """This model at another square input size with the same weights (Keras models
        only, :meth:`tfzoo.models.base.Detector.with_image_size`); an export has a fixed
        input size and raises ``ValueError``."""
        raise ValueError(f"{self.path}: a {self.format} export has a fixed input size "
                         f"{self.image_size[0]}x{self.image_size[1]}; another input size needs a Keras model "
                         "(a training directory, .keras or .h5)")

    def detect_original(self, image, proposals=None):
        """Detections of one uint8 ``[H, W, 3]`` image (with its ``proposals [R, 4]``,
        normalized to it, for a proposal-based model: computed by the model's own source
        when None), boxes normalized to that image."""
        from tfzoo.data import augment as aug

        image = _one_image(image)
        resize, to_original = _original_size_graphs(self.image_size, self.keep_aspect_ratio)
        resized, info = resize(image[None])
        inputs = resized.numpy()
        if self.max_proposals:
            boxes = self._proposals(image, proposals)
            moved = np.asarray(aug.boxes_to_canvas(boxes[None], info))[0]  # then padded: zero boxes stay zero
            inputs = {"images": inputs, "proposals": self._padded(moved)[None]}
        outputs = {k: np.asarray(v) for k, v in self.detect(inputs).items()}
        return _unbatch(to_original(outputs, info))

    def __repr__(self):
        return (f"{type(self).__name__}({self.path!r}, image_size={self.image_size}, "
                f"classes={len(self.class_names)})")


@functools.lru_cache(maxsize=None)
def _original_size_graphs(image_size, keep_aspect_ratio):
    """``(resize, to_original)``: the resize of one uint8 image of any size to the model
    input (``tfzoo.data.augment.resize_images``) and the mapping of its detections back
    (``detections_on_original``), each traced once as a graph. Run op by op, the two took
    2.9 ms a call on 2 CPU cores, as graphs 1.7 ms, beside 4.3-5.4 ms for ``yolov1_tiny``'s
    TFLite file itself. (A SavedModel's ``serving_default`` has both in its graph.)"""
    import tensorflow as tf

    from tfzoo.data import augment as aug
    from tfzoo.export.saved_model import detections_on_original

    resize = tf.function(lambda images: aug.resize_images(images, image_size, keep_aspect_ratio=keep_aspect_ratio),
                         input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
    to_original = tf.function(detections_on_original, reduce_retracing=True)
    return resize, to_original


def _one_image(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected one RGB image [H, W, 3], got shape {list(image.shape)}")
    return image.astype(np.uint8) if image.dtype != np.uint8 else image


def _unbatch(outputs):
    out = {k: np.asarray(v)[0] for k, v in outputs.items()}
    out["num_detections"] = int(out["num_detections"])
    return out


def _numpy(outputs):
    return {k: np.asarray(v) for k, v in outputs.items()}


def _float_inputs(inputs):
    """Images (an array) or ``{"images", "proposals"}`` as float32 arrays."""
    if isinstance(inputs, dict):
        return {k: np.asarray(v, np.float32) for k, v in inputs.items()}
    return np.asarray(inputs, np.float32)


class KerasModel(LoadedModel):
    """A tfzoo Keras detector (from a ``.keras``/``.h5`` file or a training directory)."""

    format = "keras"

    def __init__(self, path, detector, frozen=False):
        self.detector = detector
        self.is_frozen = bool(frozen)
        self._raw_fn = self._frozen_fn = None
        super().__init__(path, detector.config, artifacts.class_names_of(detector.config), detector.image_size,
                         detector.encoder.keep_aspect_ratio)

    def with_image_size(self, image_size):
        return KerasModel(self.path, self.detector.with_image_size(image_size), self.is_frozen)

    def frozen(self):
        return self if self.is_frozen else KerasModel(self.path, self.detector, frozen=True)

    def detect(self, images):
        """``detector.predict_on_batch``: the model and decoder as one traced graph (frozen:
        :func:`tfzoo.export.frozen.freeze_detect`, traced and frozen at the first call)."""
        if not self.is_frozen:
            return _numpy(self.detector.predict_on_batch(_float_inputs(images)))
        if self._frozen_fn is None:
            from tfzoo.export.frozen import freeze_detect

            self._frozen_fn = freeze_detect(self.detector.as_float32())
        return _numpy(self._frozen_fn(_float_inputs(images)))

    def raw_outputs(self, images):
        """The raw head outputs, in graph mode like :meth:`detect` (eager Keras rounds
        fused ops differently, ~1e-5 relative)."""
        import tensorflow as tf

        if self._raw_fn is None:  # the tensors before any NMS, as the exports' raw_outputs
            self._raw_fn = tf.function(lambda x: self.detector.parity_outputs(self.detector(x, training=False)))
        return _numpy(self._raw_fn(tf.nest.map_structure(tf.constant, _float_inputs(images))))


class SavedModelModel(LoadedModel):
    """A SavedModel written by :func:`tfzoo.export.export_saved_model`."""

    format = "saved_model"

    def __init__(self, path, loaded, metadata, frozen=False):
        self.loaded = loaded
        self.metadata = metadata
        self.signatures = loaded.signatures
        self.is_frozen = bool(frozen)
        self._frozen_fn = None
        super().__init__(path, metadata["config"], metadata["class_names"], metadata["image_size"],
                         metadata["keep_aspect_ratio"])

    def frozen(self):
        return self if self.is_frozen else SavedModelModel(self.path, self.loaded, self.metadata, frozen=True)

    def _call(self, name, **inputs):
        import tensorflow as tf

        return _numpy(self.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()}))

    def detect(self, images):
        """The ``detect`` signature (frozen: :class:`tfzoo.export.frozen.FrozenFunction` of
        it, frozen at the first call)."""
        inputs = _float_inputs(images)
        inputs = inputs if isinstance(inputs, dict) else {"images": inputs}
        if not self.is_frozen:
            return self._call("detect", **inputs)
        if self._frozen_fn is None:
            from tfzoo.export.frozen import FrozenFunction

            self._frozen_fn = FrozenFunction(self.signatures["detect"])
        return _numpy(self._frozen_fn(inputs))

    def raw_outputs(self, images):
        inputs = _float_inputs(images)
        return self._call("raw_outputs", **(inputs if isinstance(inputs, dict) else {"images": inputs}))

    def detect_original(self, image, proposals=None):
        """Runs the SavedModel's own ``serving_default`` (resizing inside the graph); frozen,
        the frozen ``detect`` on the image resized as the other formats resize it."""
        if self.is_frozen:
            return super().detect_original(image, proposals)
        image = _one_image(image)
        extra = {"proposals": self._padded(self._proposals(image, proposals))[None]} if self.max_proposals else {}
        return _unbatch(self._call("serving_default", images=image[None], **extra))


class TFLiteModel(LoadedModel):
    """A ``.tflite`` file written by :func:`tfzoo.export.export_tflite` (batch 1 inside)."""

    format = "tflite"

    def __init__(self, path, interpreter, metadata):
        self.interpreter = interpreter
        self.signatures = interpreter.get_signature_list()
        self._runners = {}
        self.quantize = metadata.get("quantize")
        super().__init__(path, metadata["config"], metadata["class_names"], metadata["image_size"],
                         metadata["keep_aspect_ratio"])

    def _run(self, name, images):
        from tfzoo.export.tflite import run_signature

        if name not in self._runners:
            self._runners[name] = self.interpreter.get_signature_runner(name)
        inputs = _float_inputs(images)
        if isinstance(inputs, dict):  # one image and its proposals at a time (batch 1 inside)
            count = len(inputs["images"])
            per_image = [run_signature(self._runners[name], {k: v[i:i + 1] for k, v in inputs.items()}, name)
                         for i in range(count)]
        else:
            per_image = [run_signature(self._runners[name], image[None], name) for image in inputs]
        if not per_image:
            raise ValueError("detect needs at least one image")
        return {k: np.concatenate([o[k] for o in per_image]) for k in per_image[0]}

    def detect(self, images):
        return self._run("serving_default", images)

    def raw_outputs(self, images):
        if "raw_outputs" not in self.signatures:
            raise NotImplementedError(f"{self.path} has no raw_outputs signature (export it with raw_outputs=True)")
        return self._run("raw_outputs", images)


# --- loaders ------------------------------------------------------------------------


def _check_detector(path, model):
    from tfzoo.models.base import Detector

    if not isinstance(model, Detector):
        raise ModelLoadError(path, f"is a {type(model).__name__}, not a tfzoo detector")
    return model


def _load_keras_file(path):
    import keras

    import tfzoo.models  # noqa: F401  (registers the detector classes)

    _check_keras_archive(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for bad files
        raise ModelLoadError(path, f"cannot load the Keras model: {_first_line(e)}") from e
    return KerasModel(path, _check_detector(path, model))


def _check_keras_archive(path):
    """A ``.keras`` file is a zip archive holding ``config.json`` and the weights; Keras
    calls anything else "File not found". Names the real problem instead."""
    import zipfile  # noqa: PLC0415

    size = os.path.getsize(path)
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(path, f"not a complete .keras file: a .keras file is a zip archive and this one "
                                   f"({size} bytes) is truncated or corrupt; save or copy it again")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ModelLoadError(path, f"a corrupt .keras archive ({size} bytes): {_first_line(e)}") from e
    if broken is not None:
        raise ModelLoadError(path, f"a corrupt .keras archive: {broken} fails its checksum; save or copy it again")
    if "config.json" not in names:
        raise ModelLoadError(path, "a zip archive without config.json: not a Keras model file")


def _load_h5(path):
    import keras

    import tfzoo.models  # noqa: F401  (registers the detector classes)

    # The legacy loader looks classes up by their bare name, not "tfzoo>Name".
    custom = {name.split(">", 1)[1]: obj for name, obj in keras.saving.get_custom_objects().items()
              if name.startswith("tfzoo>")}
    try:
        model = keras.saving.load_model(path, compile=False, custom_objects=custom)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(path, f"cannot load the HDF5 model: {_first_line(e)}") from e
    return KerasModel(path, _check_detector(path, model))


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ModelLoadError(path, f"unreadable {what}: {_first_line(e)}") from e


def _check_metadata(path, metadata):
    required = ("image_size", "keep_aspect_ratio", "class_names", "config")
    missing = [k for k in required if k not in (metadata or {})]
    if missing:
        raise ModelLoadError(path, f"export metadata lacks {', '.join(missing)}")
    return metadata


def _load_saved_model(path):
    import tensorflow as tf

    metadata_path = os.path.join(path, artifacts.METADATA_FILE)
    if not os.path.isfile(metadata_path):
        raise ModelLoadError(path, f"a SavedModel without {artifacts.METADATA_FILE}: not a tfzoo export "
                                   "(export it with tfzoo export)")
    metadata = _check_metadata(metadata_path, _read_json(metadata_path, "export metadata"))
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(path, f"cannot load the SavedModel: {_first_line(e)}") from e
    missing = [name for name in ("serving_default", "detect") if name not in loaded.signatures]
    if missing:
        raise ModelLoadError(path, f"the SavedModel lacks signature(s) {', '.join(missing)}")
    return SavedModelModel(path, loaded, metadata)


def _load_tflite(path):
    from tfzoo.export import tflite

    with open(path, "rb") as f:
        model_bytes = f.read()
    if len(model_bytes) < 8 or model_bytes[4:8] != b"TFL3":
        raise ModelLoadError(path, "not a TFLite file (no TFL3 identifier)")
    try:
        metadata = tflite.read_metadata(model_bytes)
        runtime = tflite.interpreter(model_content=model_bytes)
    except ImportError:
        raise
    except (struct.error, IndexError) as e:  # the flatbuffer points past the end of the bytes
        raise ModelLoadError(path, f"a truncated or corrupt TFLite file ({len(model_bytes)} bytes): its flatbuffer "
                                   "refers to data past its end; export or copy it again") from e
    except Exception as e:  # noqa: BLE001 - flatbuffer and interpreter errors
        raise ModelLoadError(path, f"cannot load the TFLite model: {_first_line(e)}") from e
    if metadata is None:
        raise ModelLoadError(path, f"a TFLite file without tfzoo metadata: not a tfzoo export "
                                   "(export it with tfzoo export)")
    if "serving_default" not in runtime.get_signature_list():
        raise ModelLoadError(path, "the TFLite model has no serving_default signature")
    return TFLiteModel(path, runtime, _check_metadata(path, metadata))


def _refuse_untrusted(path, what):
    raise ModelLoadError(path, f"refusing to load a {what} without trust_model: {TRUST_HINT}")


def load_model(path, trust_model=False):
    """Loads the model artifact at ``path`` (see the module doc for the accepted kinds).

    Raises:
      ModelLoadError: missing, unknown, corrupt, or untrusted (SavedModel, ``.h5``) paths.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(path, "no such file or directory")
    if os.path.isdir(path):
        from tfzoo.export.saved_model import is_saved_model_dir

        model_file = os.path.join(path, TRAINING_MODEL_FILE)
        if os.path.isfile(model_file):
            return _load_keras_file(model_file)
        if is_saved_model_dir(path):
            if not trust_model:
                _refuse_untrusted(path, "SavedModel (a directory of executable TensorFlow graphs)")
            return _load_saved_model(path)
        if os.path.isfile(os.path.join(path, TRAINING_STATE_FILE)):
            raise ModelLoadError(path, f"a training directory without {TRAINING_MODEL_FILE}: no epoch has "
                                       "finished yet")
        raise ModelLoadError(path, f"not a model directory: expected a training directory ({TRAINING_MODEL_FILE}) "
                                   "or a SavedModel (saved_model.pb)")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".keras":
        return _load_keras_file(path)
    if suffix == ".tflite":
        return _load_tflite(path)
    if suffix in (".h5", ".hdf5"):
        if not trust_model:
            _refuse_untrusted(path, "legacy HDF5 model (loaded without Keras' safe mode)")
        return _load_h5(path)
    raise ModelLoadError(path, "unknown model file type: expected a training directory, a .keras, .tflite "
                               "or .h5 file, or a SavedModel directory")
