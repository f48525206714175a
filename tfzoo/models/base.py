"""The Detector contract every tfzoo detector implements.

A detector is a functional ``keras.Model`` subclass built from one frozen config
dataclass::

    detector = tfzoo.build_model("retinanet_mobile", num_classes=3)
    train = tfzoo.data.pipeline(tfzoo.data.load("shapes", "train"), detector, 8, training=True)
    detector.compile(optimizer="adam")      # the loss is built in; compile() also works
    detector.fit(train, epochs=1)
    out = detector.predict(images)          # detection_boxes/scores/classes, num_detections
    detector.save("x.keras"); keras.saving.load_model("x.keras")   # safe_mode=True works

- Inputs: RGB pixels in [0, 255], uint8 or float32, ``[B, H, W, 3]`` at ``image_size``;
  the model normalizes them itself.
- ``detector(images)`` returns the raw head outputs (a dict of float32 tensors); that is
  what ``fit`` trains. ``predict`` / ``predict_on_batch`` / :meth:`Detector.detect` run the
  decoder (box decoding + NMS) and return::

      detection_boxes    float32 [B, M, 4]  normalized [y1, x1, y2, x2] of the model input
      detection_scores   float32 [B, M]
      detection_classes  int32   [B, M]     0..K-1, -1 on padding rows
      num_detections     int32   [B]

- ``detector.config``: the config dataclass; ``detector.encoder``: the tf.data target
  encoder (:class:`tfzoo.data.pipeline.Encoder`); ``detector.anchors`` where it has any.
- ``get_config`` is ``{"config": <the dataclass as a dict>}`` and ``from_config`` rebuilds
  the graph from it (with random backbone weights; the saved weights are loaded after), so
  a ``.keras`` file holds only the config JSON and weights, no code.

What a detector file implements (one file per detector, configuring the shared parts):

- a config dataclass subclassing :class:`DetectorConfig` (its paper's defaults; the shared
  fields are the name, classes, image size, backbone and the :class:`TrainingRecipe`);
- a :class:`Detector` subclass with ``config_class``, ``family``, ``kind``, ``presets``
  (name -> config) and ``cpu_presets`` (the :data:`tfzoo.models.MODELS` table is built
  from them), ``loss_names`` / ``box_loss_names``, ``tiny`` (the contract test's config),
  and the methods ``create(config)`` (a classmethod building the functional graph from
  :mod:`tfzoo.backbones` feature maps and :mod:`tfzoo.layers`), ``make_encoder()`` (its
  tf.data targets, :class:`tfzoo.data.Encoder`), ``compute_losses(targets, outputs)``
  (``{name: scalar}``, the ``loss_names``) and ``decode(outputs)`` (detections through
  :mod:`tfzoo.ops.nms`).

By ``kind``:

- **one-stage** (RetinaNet, SSD, YOLO): dense head outputs; the encoder matches anchors,
  default boxes or grid cells to the ground truth in tf.data; one training stage (``fit``).
  YOLOv2/v3 may list ``train_sizes`` in their encoder (multi-scale training); YOLOv1 sets
  ``fixed_size`` on its config (its fully connected layers fix the input).
- **two-stage** (Faster R-CNN, FPN): the RPN's proposals are generated inside the graph,
  under :func:`float_section` (an int8 export keeps that part float32; :func:`float_barrier`
  where it reads the network, :func:`float_exit` where the network reads it back: the RoI
  crops' sampling plan is float32, their reads of the feature maps int8); the
  RoI head needs the ground truth to sample RoIs, so ``call(training=True)`` stops after
  the RPN and :meth:`Detector.compute_losses`, which gets the batch's targets, samples the
  RoIs and runs the head's layers on them (Keras' own ``train_step``; ``fit`` stays the
  loop); ``pre_nms_outputs`` names the RPN outputs that parity checks compare.
- **proposals** (R-CNN, SPP-Net, Fast R-CNN): ``input_names = ("images", "proposals")``;
  examples carry ``proposals`` (moved with the image by augmentation and resizing) and the
  encoder pads them to ``max_proposals``; R-CNN adds training ``stages`` after ``fit``
  (``train_stage_<name>``: its SVMs and box regression), each checkpointed and resumable.
"""
from __future__ import annotations

import dataclasses
import json
import typing

import keras
import tensorflow as tf

from tfzoo import layers, optim  # noqa: F401  (optim registers the schedule and optimizers)

#: Name scope of the decoder ops in :meth:`Detector.detect` (box decoding, top-k, NMS).
DECODER_SCOPE = "tfzoo_decoder"
#: Name scope of a float-only part inside a model's graph (a two-stage detector's proposal
#: generation: box decoding, top-k and NMS between the RPN and the RoI head); open it with
#: :func:`float_section`.
FLOAT_SCOPE = "tfzoo_float"
#: Ops under these name scopes stay float32 in an int8 TFLite export, wherever they sit in
#: the graph (:func:`tfzoo.export.tflite.decoder_ops`).
FLOAT_SCOPES = (DECODER_SCOPE, FLOAT_SCOPE)
#: Name scope of a float section's result that the int8 network reads on purpose (the
#: bilinear weights of a two-stage detector's RoI crops, computed from float32 RoI
#: coordinates, weight int8 feature rows): :func:`float_exit`.
FLOAT_EXIT = "tfzoo_float_exit"


def float_section():
    """``with float_section(): ...`` creates the ops inside under :data:`FLOAT_SCOPE`: an
    int8 export keeps them in float32 (scores, box coordinates and NMS lose detections on
    an int8 grid calibrated on the network's activations)."""
    return tf.name_scope(FLOAT_SCOPE)


def float_barrier(tensor):
    """``tensor`` in float32 through an elementwise op the int8 quantizer decides on by its
    name (``MAXIMUM`` with the lowest float32): called inside :func:`float_section` or the
    decoder's scope on a network output, it keeps the ops after it in float32. Without it
    a pass-through op (``GATHER``, ``RESHAPE``, ``SELECT_V2``, ``PACK``) reading an int8
    network output is quantized with that output whatever its scope."""
    return tf.maximum(tf.cast(tensor, tf.float32), tf.float32.min)


def float_exit(tensor):
    """The result of a :func:`float_section` that the network goes on with (the RoI crops'
    bilinear weights in a two-stage detector's TFLite file, its crops in TensorFlow): an int8
    export quantizes it, the one kind of float-section tensor it may (the export's check that
    no score or box is requantized skips it)."""
    with tf.name_scope(FLOAT_EXIT):
        return tf.maximum(tensor, tf.float32.min)
#: The smallest input size :meth:`Detector.with_image_size` (and ``--image-size``,
#: ``--serve-size``) accepts: P7, the coarsest level, is 1/128 of the input.
MIN_IMAGE_SIZE = 32


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _field_types(cls):
    return typing.get_type_hints(cls)


def _coerce(value, annotation, name):
    """A config field value from JSON or ``--set`` text, checked against the field type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and str(origin) == "types.UnionType"):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config field {name!r} takes a list, got {value!r}")
        item = args[0] if args else None
        return tuple(_coerce(v, item, name) if item not in (None, Ellipsis) else v for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config field {name!r} takes true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"config field {name!r} takes an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config field {name!r} takes a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"config field {name!r} takes a string, got {value!r}")
        return value
    return value


class ConfigMixin:
    """JSON round trip and checked overrides for the frozen config dataclasses."""

    def to_dict(self):
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        return cls().replace(**values)

    def replace(self, **overrides):
        """A copy with ``overrides``, each checked against its field's type."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {', '.join(unknown)} for {type(self).__name__}; "
                             f"fields: {', '.join(sorted(names))}")
        types = _field_types(type(self))
        checked = {k: _coerce(v, types[k], k) for k, v in overrides.items()}
        return dataclasses.replace(self, **checked)

    def with_settings(self, settings):
        """A copy with ``["key=value", ...]`` overrides; values parse as JSON, else as text."""
        overrides = {}
        for item in settings or ():
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--set expects key=value, got {item!r}")
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            overrides[key.strip()] = value
        return self.replace(**overrides)


@dataclasses.dataclass(frozen=True)
class TrainingRecipe:
    """The training settings every detector config carries; ``tfzoo train`` reads them.

    The defaults are the papers' ImageNet-initialized recipe (SGD 0.01, step decay, 12
    epochs, the RetinaNet/Detectron 1x schedule); a config class inherits these fields and
    a preset overrides them, the CPU presets with :data:`SCRATCH_RECIPE`.
    """

    augment: str = "flip"  # an augmentation preset (tfzoo.data.augment.PRESETS)
    # Horizontal flips in the augmentation preset. A dataset-level choice: turn it off
    # (tfzoo train --no-flip) where a mirrored object is another class or none (b/d, arrows).
    # tfzoo train turns it off by itself, with a warning, when mirrored classes of the
    # training data look like each other (tfzoo.data.mirror), unless flip is set explicitly.
    flip: bool = True
    batch_size: int = 16
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    # The warm-up's first rate as a fraction of the peak (linear to 1 over warmup_steps):
    # Detectron's 1/3; YOLOv1 warms up from 1e-3 to 1e-2 (0.1).
    warmup_factor: float = 1.0 / 3.0
    lr_schedule: str = "step"
    epochs: int = 12
    # Fractions of training where the step schedule multiplies the rate by 0.1 (the
    # RetinaNet paper's 60k and 80k of 90k iterations; SSD's 40k and 50k of 60k: 2/3, 5/6).
    lr_decay_at: tuple[float, ...] = (2.0 / 3.0, 8.0 / 9.0)
    # A model to start from (fine-tuning): a .keras file or a folder holding model.keras (a
    # training directory, a 'tfzoo convert' output). Its weights replace this run's layer by
    # layer where a layer's name and weight shapes match (tfzoo.train.init_weights); the
    # rest keep their initialization (a head for other classes). None: none.
    init: str | None = None
    # Gradients rescaled so that their global norm is at most this (None: not clipped): for
    # heads whose linear outputs let a large step run away (YOLOv1's).
    clip_norm: float | None = None


@dataclasses.dataclass(frozen=True)
class DetectorConfig(TrainingRecipe, ConfigMixin):
    """The fields every detector config has: what training, the demo, the CLI and export
    read without knowing the detector (its recipe comes from :class:`TrainingRecipe`).
    A detector's config subclasses it, adds its own fields and sets the paper's defaults."""

    name: str = "detector"  # the preset's name
    num_classes: int = 80
    class_names: tuple[str, ...] = ()  # names of classes 0..K-1 (set by tfzoo train); () = unnamed
    image_size: int = 640  # the square training and serving size (pixels)
    backbone: str = "resnet50"  # a tfzoo.backbones name
    backbone_weights: str | None = "imagenet"  # "imagenet", None (random) or a weights file
    backbone_alpha: float = 1.0  # width multiplier (MobileNetV2, the basic-block ResNets)
    # Momentum of the backbone's batch-norm moving statistics. keras.applications' MobileNetV2
    # uses 0.999: after 500 steps its moving averages still weigh their initial values by
    # 0.6, and a network trained from scratch for a few hundred steps detects nothing in
    # inference mode. 0.99 is the TF Model Garden RetinaNet value.
    batchnorm_momentum: float = 0.99
    # Keras dtype policy of the input normalization and the backbone, whatever the global
    # policy; None follows it. "float32" with a mixed global policy runs only the necks and
    # heads in bfloat16/float16: on CPUs with AMX, MobileNetV2's depthwise convolutions are
    # slower in bfloat16 while 3x3 head convolutions are several times faster.
    backbone_dtype: str | None = None

    #: Input sides must be multiples of this (the coarsest feature map's stride, at least
    #: the backbone's 32); a detector whose layers fix the size sets ``fixed_size``.
    size_divisor = 32
    #: True where the layers fix the input size (YOLOv1's fully connected layers).
    fixed_size = False

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class_names for num_classes {self.num_classes}")
        if self.image_size < 1 or self.image_size % self.size_divisor:
            raise ValueError(f"image_size must be a positive multiple of {self.size_divisor}, got {self.image_size}")
        if not 0.0 <= self.batchnorm_momentum < 1.0:
            raise ValueError(f"batchnorm_momentum must be in [0, 1), got {self.batchnorm_momentum}")
        if self.backbone_dtype not in (None, *layers.DTYPE_POLICIES):
            raise ValueError(f"backbone_dtype must be None or one of {layers.DTYPE_POLICIES}, "
                             f"got {self.backbone_dtype!r}")


@dataclasses.dataclass(frozen=True)
class Preset:
    """One row of :data:`tfzoo.models.MODELS`: a named config of a detector class.

    Calling it builds the detector: ``preset(**overrides)`` (each override checked against
    the config's field types). ``family`` is the detector's paper name, ``kind`` what it
    implements (see :class:`Detector`), ``cpu`` whether it trains usefully from random
    initialization on a CPU (the presets ``tfzoo demo`` and the benchmarks use)."""

    name: str
    detector: type
    config: DetectorConfig
    cpu: bool = False

    @property
    def family(self):
        return self.detector.family

    @property
    def kind(self):
        return self.detector.kind

    def build(self, **overrides):
        return self.detector.create(self.config.replace(**overrides))

    def __call__(self, **overrides):
        return self.build(**overrides)


def model_table(*detectors):
    """``{preset name: Preset}`` of the detector classes' ``presets`` (name -> config) and
    ``cpu_presets``; a name used twice is an error."""
    table = {}
    for detector in detectors:
        for name, config in detector.presets.items():
            if name in table:
                raise ValueError(f"preset {name!r} is defined by {table[name].family} and {detector.family}")
            if config.name != name:
                raise ValueError(f"preset {name!r} has config.name {config.name!r}")
            table[name] = Preset(name, detector, config, cpu=name in detector.cpu_presets)
    return table


#: The shared recipe of the presets that train from random initialization on a CPU
#: (``retinanet_mobile``; the SSD, Faster R-CNN, proposal and YOLO CPU presets start from
#: it), spread into their configs: ``Config(..., **SCRATCH_RECIPE)``. What it holds and why
#: (issue 17, BENCHMARKS.md "Classes that differ by shape alone"):
#:
#: - AdamW 2e-3, 100 warm-up steps, cosine decay fitted to the time budget (what
#:   ``retinanet_mobile`` has trained with; 4e-3 and batch 8 were measured against it on
#:   glyphs and did not replace it).
#: - Batch-norm statistics with momentum 0.9: they must follow weights that move fast.
#: - Scale jitter with flips (a dataset-level choice: ``--no-flip``; ``tfzoo train`` turns
#:   flips off by itself where mirrored classes look alike, e.g. ``b``/``d``).
#:
#: Not here, because it belongs to each architecture: the backbone (``retinanet_mobile``
#: trains a dense-convolution ResNet-10 at half width, ``tfzoo.backbones.basic_resnet``:
#: its training pass is 1.8x MobileNetV2-0.5's speed on 2 cores, so a time budget holds
#: 1.6x the epochs, and glyphs went from val AP50 0.668 to 0.817 in 20 minutes); the
#: head's norm (GroupNorm heads for training from scratch) and a full-strength class term
#: on positives (RetinaNet's ``class_ce_weight``: its focal loss alone told shape-only
#: classes apart slowly; SSD's and Faster R-CNN's softmax and YOLO's per-class BCE on
#: positives have one already).
SCRATCH_RECIPE = {
    "batchnorm_momentum": 0.9,
    "augment": "scale_jitter",
    "batch_size": 16,
    "optimizer": "adamw",
    "learning_rate": 2e-3,
    "weight_decay": 1e-4,
    "warmup_steps": 100,
    "lr_schedule": "cosine",
    "epochs": 20,
}


class Detector(keras.Model):
    """Base class of the functional detectors (see the module doc for the contract)."""

    #: The detector's config dataclass (a :class:`DetectorConfig` subclass).
    config_class = None
    #: The paper name shown by ``tfzoo list`` ("RetinaNet", "SSD", ...).
    family = None
    #: ``"one-stage"`` (dense predictions decoded into detections), ``"two-stage"`` (an RPN
    #: proposes, a RoI head classifies) or ``"proposals"`` (boxes from outside the model,
    #: selective search, come in as a second input).
    kind = "one-stage"
    #: Preset name -> config, and the names among them that are CPU presets; the
    #: :data:`tfzoo.models.MODELS` table is built from these (:func:`model_table`).
    presets = {}
    cpu_presets = ()
    #: The model's inputs, in order: ``"images"`` (RGB pixels ``[B, S, S, 3]``), and for
    #: the proposal-based detectors also ``"proposals"`` (``[B, R, 4]`` normalized boxes).
    input_names = ("images",)
    #: Names of the loss terms :meth:`compute_losses` returns (each tracked and logged as
    #: a metric); ``box_loss_names`` are those that vanish on an image without objects.
    loss_names = ()
    box_loss_names = ()
    #: Config overrides of the smallest model that still runs every part (tests, smoke
    #: runs): applied to each preset by the contract test over ``MODELS``.
    tiny = {}
    #: Training stages in order. ``"fit"`` is ``model.fit`` on the pipeline's batches (a
    #: one-stage detector has only it); every other name ``x`` is the method
    #: ``train_stage_x(examples, config, deadline=None, progress=False) -> {figure: number}``
    #: (``deadline``: ``time.monotonic()`` at the end of ``--minutes``), run by :func:`tfzoo.train.train`
    #: after ``fit`` on the training split's canonical examples (R-CNN: per-class SVMs on
    #: the fine-tuned features, then box regression). Each stage is checkpointed
    #: (``model.keras`` and ``state.json``) when it ends and skipped on resume once done.
    #: Where the ground truth must reach the forward pass (RoI sampling in a two-stage
    #: detector), the part that needs it runs in ``compute_losses`` (see the module doc),
    #: and ``model.fit`` stays the loop.
    stages = ("fit",)
    #: Names of the raw outputs computed before any NMS: what the exports' ``raw_outputs``
    #: signature returns and parity checks compare (``None``: every raw output, as for a
    #: one-stage detector). A two-stage detector lists its RPN's: the RoI head's outputs
    #: follow proposals chosen by NMS, which a rounding difference may reorder.
    pre_nms_outputs = None

    def parity_outputs(self, outputs):
        """The raw ``outputs`` (a dict) that parity checks compare (:attr:`pre_nms_outputs`)."""
        names = type(self).pre_nms_outputs
        return dict(outputs) if names is None else {name: outputs[name] for name in names}

    def __init__(self, inputs, outputs, config, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._detector_config = config
        self._encoder = None
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}

    # --- construction / serialization -------------------------------------------------

    @classmethod
    def create(cls, config):
        raise NotImplementedError

    @property
    def config(self):
        return self._detector_config

    def get_config(self):
        return {"config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        values = dict(config["config"])
        # The architecture is rebuilt without downloading weights: the file's weights follow.
        if "backbone_weights" in values:
            values["backbone_weights"] = None
        return cls.create(cls.config_class.from_dict(values))

    def as_float32(self):
        """This detector if every layer computes in float32, else a float32 copy with the same
        weights (a model trained under mixed precision keeps float32 variables; the copy is
        what exports and evaluations of the shipped model use)."""
        if all(layer.compute_dtype == "float32" for layer in _all_layers(self)):
            return self
        return self._float32_copy(self.config)

    def with_image_size(self, image_size):
        """A float32 copy of this detector with the same weights at another square input size.

        The detectors are fully convolutional: their weights do not depend on the input size,
        only the feature maps and the anchors do, and the copy's anchors are those of the new
        size. A detector trained at a small size often finds small objects better when it
        serves at a larger one (``tfzoo demo`` trains at 256 and serves at 320; BENCHMARKS.md
        has the measurements). The copy's ``config.image_size`` is the new size, so exports
        and the config JSON beside them describe the served model.
        """
        size = int(image_size)
        if size != image_size or size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
        if self.config.fixed_size and (size, size) != self.image_size:
            raise ValueError(f"{self.config.name} has fixed-size layers and serves at "
                             f"{self.image_size[0]} x {self.image_size[1]} only")
        if self.image_size == (size, size):
            return self.as_float32()
        return self._float32_copy(self.config.replace(image_size=size))

    def _float32_copy(self, config):
        """A float32 model built from ``config`` with this detector's weights."""
        values = config.to_dict()
        for field in ("backbone_weights", "backbone_dtype"):  # weights follow; all in float32
            if field in values:
                values[field] = None
        with layers.dtype_policy("float32"):
            copy = type(self).create(self.config_class.from_dict(values))
        copy.set_weights(self.get_weights())
        copy._detector_config = config
        return copy

    # --- data ---------------------------------------------------------------------------

    @property
    def encoder(self):
        """The tf.data target encoder for :func:`tfzoo.data.pipeline`."""
        if self._encoder is None:
            self._encoder = self.make_encoder()
            self._encoder.input_names = tuple(self.input_names)  # what the pipeline feeds
        return self._encoder

    def make_encoder(self):
        raise NotImplementedError

    @property
    def image_size(self):
        """``(height, width)`` of the model input."""
        return tuple(int(d) for d in self.inputs[0].shape[1:3])

    def detect_spec(self, batch_size=None):
        """What :meth:`detect` takes: float32 images ``tf.TensorSpec [B, H, W, 3]``, in a dict
        with ``proposals [B, R, 4]`` for a proposal-based detector (``B`` any when None)."""
        height, width = self.image_size
        images = tf.TensorSpec([batch_size, height, width, 3], tf.float32)
        if "proposals" not in self.input_names:
            return images
        return {"images": images, "proposals": tf.TensorSpec([batch_size, int(self.inputs[1].shape[1]), 4], tf.float32)}

    # --- training -----------------------------------------------------------------------

    def compile(self, optimizer="adam", **kwargs):
        """``keras.Model.compile`` with the detector's built-in loss (pass no ``loss``)."""
        if kwargs.get("loss") is not None:
            raise ValueError(f"{type(self).__name__} has its loss built in; do not pass loss=")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Restores the compiled state saved in a ``.keras`` file (optimizer included).

        A model trained by :func:`tfzoo.train.train` saves tfzoo's learning-rate schedule and
        optimizer classes (:mod:`tfzoo.optim`, imported by this module, registers them).
        """
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss", None)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_losses(self, targets, outputs):
        """``{name: scalar}`` loss terms of one (per-replica) batch; summed for training."""
        raise NotImplementedError

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del x, sample_weight
        if y is None:
            raise ValueError(f"{type(self).__name__} needs targets: build the dataset with "
                             "tfzoo.data.pipeline(..., detector, training=True)")
        losses = self.compute_losses(y, y_pred)
        # Each replica's terms are its share of the global sum (see replica_sum): the
        # trackers show the whole, as Keras does for its own loss.
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        for name, value in losses.items():
            if name not in self.loss_trackers:
                raise KeyError(f"no tracker for loss term {name!r}")
            self.loss_trackers[name].update_state(value * replicas)
        total = tf.add_n(list(losses.values()))
        regularization = self.losses
        if regularization:
            total = total + tf.add_n([tf.cast(r, total.dtype) for r in regularization])
        return total

    # --- inference ----------------------------------------------------------------------

    def decode(self, outputs):
        """Raw head outputs -> the detections dict (see the module doc)."""
        raise NotImplementedError

    def int8_float_layers(self):
        """Names of the layers an int8 TFLite export keeps in float32 besides the decoder
        (:func:`tfzoo.export.tflite.decoder_ops`): none by default. A detector whose raw
        outputs the decoder reads without a nonlinearity that forgives their rounding
        (YOLO's box offsets, through exp) lists its small output convolutions here."""
        return ()

    def detect(self, images):
        """Detections of a batch of images at ``image_size`` (graph-safe).

        The decoder's ops are created under the name scope :data:`DECODER_SCOPE`, which is
        how an int8 TFLite export finds them to keep them in float32.
        """
        outputs = self(images, training=False)
        with tf.name_scope(DECODER_SCOPE):
            return self.decode(outputs)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.detect(x)

    def save_config(self, path):
        """Writes ``config.json`` (the dataclass) to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.config.to_json() + "\n")


def replica_sum(value):
    """``value`` summed over the replicas of the current distribution strategy (identity
    outside a multi-replica replica context)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _all_layers(model):
    """Every layer of ``model``, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
