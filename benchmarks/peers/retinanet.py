"""RetinaNet in ``bench_model.py``: how a random tfzoo RetinaNet is made comparable (its
class head given a trained head's score statistics) and its peer, KerasHub's
``RetinaNetObjectDetector`` (0.32), built from architecture arguments (no weights can be
downloaded here).

Random weights give random scores, so both sides get the same preparation before timing
(it changes no compute): tfzoo's class head starts at the focal-loss prior (every score
about 0.01: NMS would get no candidate); KerasHub 0.32 builds the prior bias into its *box*
head and leaves its class head at 0 (every score 0.5). The prior is moved to KerasHub's
class head (the paper's and tfzoo's place); then each class head's output kernel is scaled
so that its logits on the benchmark image have standard deviation :data:`LOGIT_SPREAD`,
and its bias shifted so that exactly ``--candidates`` (anchor, class) pairs score above
:data:`SCORE_THRESHOLD`, as a trained detector's would.
"""
from __future__ import annotations

import numpy as np

FAMILY = "RetinaNet"

#: Decoder settings both sides use.
SCORE_THRESHOLD = 0.05

NMS_IOU = 0.5

MAX_DETECTIONS = 100

#: ImageNet mean/std of KerasHub's image converter (torch convention, pixels / 255).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)

_IMAGENET_STD = (0.229, 0.224, 0.225)

#: Standard deviation given to the random class logits (see calibrate_class_head).
LOGIT_SPREAD = 1.0

#: RetinaNet's class prior (the initial score of every class logit).
_PRIOR_PROBABILITY = 0.01

#: Ground-truth rows per image in KerasHub's training batches.
_MAX_BOXES = 8

#: Training speed target against the peer.
TRAIN_TARGET = 1.25

#: ``--tiny``: small widths for a seconds-long smoke run (tfzoo MobileNetV2 0.35 with
#: 16-channel FPN and heads; KerasHub a one-block-per-stage ResNet with 1-conv heads).
TINY_TFZOO = dict(backbone="mobilenet_v2", backbone_alpha=0.35, fpn_channels=16, head_channels=16, head_convs=1)


def prior_bias(probability):
    """``log(p / (1 - p))``: the logit whose sigmoid is ``probability`` (tfzoo's own)."""
    from tfzoo.ops.losses import prior_bias as tfzoo_prior_bias

    return tfzoo_prior_bias(probability)


def calibrate_class_head(layer, class_logits, candidates, threshold=SCORE_THRESHOLD, spread=LOGIT_SPREAD):
    """Gives a random class head the score statistics of a trained one, on the benchmark image.

    ``layer``: the head's output conv; ``class_logits()``: the class logits it produces for
    the benchmark image (any shape). The (pointwise) kernel is scaled so that the logits' standard
    deviation is ``spread`` (a random head's logits differ by ~1e-2, which int8
    quantization flattens), then the bias is shifted so that exactly ``candidates`` logits
    lie above ``logit(threshold)``. Returns ``{"kernel_scale", "bias_shift"}``.
    """
    from tfzoo.layers import output_kernel

    logits = np.asarray(class_logits(), "float64")
    scale = spread / max(float(logits.std()), 1e-12)
    kernel = output_kernel(layer)
    kernel.assign(kernel.numpy() * np.float32(scale))
    flat = np.sort(np.asarray(class_logits(), "float64").ravel())[::-1]
    candidates = int(min(max(candidates, 1), flat.size - 1))
    cut = 0.5 * (flat[candidates - 1] + flat[candidates])
    shift = prior_bias(threshold) - cut  # the logit whose sigmoid is ``threshold``
    layer.bias.assign(layer.bias.numpy() + np.float32(shift))
    return {"kernel_scale": scale, "bias_shift": shift}


def candidate_counts(logits, threshold=SCORE_THRESHOLD):
    """``(pairs, anchors)``: (anchor, class) pairs and anchors with a score above ``threshold``."""
    scores = 1.0 / (1.0 + np.exp(-np.asarray(logits, "float64")))
    above = scores > threshold
    return int(above.sum()), int(above.any(axis=-1).sum())


def prepare_tfzoo(detector, image, candidates):
    """Calibrates a random tfzoo RetinaNet's class head on ``image`` (see the module doc);
    returns ``{"calibration", "candidates": {"pairs", "anchors"}}``."""
    calibration = calibrate_class_head(detector.get_layer("class_head_predict"),
                                       lambda: detector(image)["class_logits"], candidates)
    pairs, anchors = candidate_counts(detector(image, training=False)["class_logits"].numpy())
    return {"calibration": calibration, "candidates": {"pairs": pairs, "anchors": anchors}}


def keras_hub():
    """The ``keras_hub`` module, or None where it does not import (``pip install -e .[bench]``)."""
    try:
        import keras_hub as module
    except ImportError:
        return None
    return module


def build_keras_hub(args):
    """KerasHub ``RetinaNetObjectDetector``, ResNet-50 v1 (``--tiny``: ResNet-10-like),
    with its preprocessor and a NonMaxSuppression decoder at the shared settings."""
    import keras_hub

    size = args.image_size
    if args.tiny:
        resnet = dict(stackwise_num_filters=[64, 32, 32, 32], stackwise_num_blocks=[1, 1, 1, 1],
                      block_type="basic_block")
        head_convs = 1
    else:  # ResNet-50 v1 (He et al. 2016): bottleneck blocks 3-4-6-3
        resnet = dict(stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
                      block_type="bottleneck_block")
        head_convs = 4
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_strides=[1, 2, 2, 2],
        use_pre_activation=False, image_shape=(size, size, 3), **resnet,
    )
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=7, use_p5=True, image_shape=(size, size, 3),
    )
    converter = keras_hub.layers.RetinaNetImageConverter(
        image_size=(size, size),
        scale=[1.0 / (255.0 * s) for s in _IMAGENET_STD],
        offset=[-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)],
        crop_to_aspect_ratio=False, pad_to_aspect_ratio=True,
    )
    decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format="yxyx", from_logits=True, iou_threshold=NMS_IOU,
        confidence_threshold=SCORE_THRESHOLD, max_detections=MAX_DETECTIONS,
    )
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=args.num_classes, bounding_box_format="yxyx",
        pre_logits_num_conv_layers=head_convs,
        preprocessor=keras_hub.models.RetinaNetObjectDetectorPreprocessor(image_converter=converter),
        prediction_decoder=decoder,
    )
    # KerasHub 0.32 builds its *box* head with the focal-loss prior bias (-4.6 on every
    # delta: random boxes shrink to 1% of their anchor) and its class head with bias 0 (every
    # score 0.5: the first focal losses are ~1e4 and SGD diverges to NaN within a few steps).
    # Put the prior where the paper (and tfzoo) has it: on the class logits.
    prior = prior_bias(_PRIOR_PROBABILITY)
    for head, value in ((model.box_head, 0.0), (model.classification_head, prior)):
        bias = head.prediction_layer.bias
        bias.assign(np.full(bias.shape, value, "float32"))
    return model


class KerasHubPeer:
    """KerasHub's RetinaNet as ``bench_model.py``'s peer (``None`` of :func:`peer` where
    keras_hub is missing)."""

    name = "KerasHub"

    def __init__(self, args):
        self.args = args
        self.version = keras_hub().__version__

    def build(self):
        return build_keras_hub(self.args)

    def latency(self, image, spec):
        """``(functions to time, peer function name, info)`` of a calibrated model."""
        import tensorflow as tf

        args = self.args
        theirs = self.build()
        self.model = theirs
        preprocessed = tf.cast(theirs.preprocessor(image), tf.float32)  # bfloat16 under --policy mixed_bfloat16
        head = theirs.classification_head.prediction_layer
        calibration = calibrate_class_head(head, lambda: theirs(preprocessed)["cls_logits"], args.candidates)
        theirs_logits = theirs(preprocessed)["cls_logits"].numpy()
        theirs_forward = tf.function(lambda x: theirs(x, training=False), input_signature=[spec], autograph=False)
        fns, pob_error = {}, None
        if args.policy != "float32":
            # keras-hub 0.32's decoder multiplies the bfloat16 head outputs by float32
            # anchors and fails; the peer is its forward pass and decoder in one compiled
            # function, the outputs cast to float32 between them (preprocessor outside).
            def forward_decode(x):
                raw = tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), theirs(x, training=False))
                return theirs.decode_predictions(raw, x)

            predict_function = tf.function(forward_decode, input_signature=[spec])
            peer = "KerasHub forward + decode (float32 outputs; tf.function)"
            fns[peer] = lambda: predict_function(tf.cast(theirs.preprocessor(image), tf.float32))
            theirs_out = predict_function(preprocessed)
        else:
            theirs.make_predict_function()
            predict_function = theirs.predict_function
            try:
                theirs.predict_on_batch(image)
                fns["KerasHub predict_on_batch"] = lambda: theirs.predict_on_batch(image)
                peer = "KerasHub predict_on_batch"
            except ValueError as error:
                # keras-hub 0.32: RetinaNetObjectDetector.predict_step gets ``(x,)`` from
                # predict_on_batch and decode_predictions unpacks it as ``(images, _)``.
                pob_error = f"{type(error).__name__}: {error}"
                peer = "KerasHub preprocessor + predict_function"
                fns[peer] = lambda: predict_function([theirs.preprocessor(image)])
            fns["KerasHub predict()"] = lambda: theirs.predict(image, verbose=0)
            theirs_out = predict_function([preprocessed])
        fns["KerasHub forward only (tf.function)"] = lambda: theirs_forward(preprocessed)
        theirs_raw = tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), theirs_forward(preprocessed))
        theirs_decode = tf.function(theirs.decode_predictions)
        fns["KerasHub decode + NMS only (tf.function)"] = lambda: theirs_decode(theirs_raw, preprocessed)
        info = {
            "version": self.version, "params": int(theirs.count_params()), "calibration": calibration,
            "candidates": dict(zip(("pairs", "anchors"), candidate_counts(theirs_logits))),
            "num_detections": int(np.asarray(theirs_out["num_detections"])[0]),
            "predict_on_batch_error": pob_error, "peer": peer,
            "forward": "KerasHub forward only (tf.function)", "decode": "KerasHub decode + NMS only (tf.function)",
        }
        return fns, info

    def forward_fn(self):
        """The model's forward pass, for the FLOP count (after :meth:`latency`)."""
        return lambda x: self.model(x, training=False)

    def train_contender(self, images, batch_size, learning_rate, in_memory):
        """``(compiled model, batches)``: KerasHub's ``fit`` on its own input format."""
        import keras

        theirs = self.build()
        theirs.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9))
        return theirs, keras_hub_train_batches(self.args.image_size, images, batch_size, in_memory)


def keras_hub_train_batches(size, images, batch_size, in_memory):
    """The same images for KerasHub: ``(images, {"boxes": [B, G, 4] yxyx pixels, "labels":
    [B, G]})``, absent rows -1 (its bounding-box convention), held in memory, repeated."""
    import tensorflow as tf

    import tfzoo.data as data
    from tfzoo.data.pipeline import PaddedBoxesEncoder, pipeline
    from tfzoo.ops import boxes as box_ops

    encoder = PaddedBoxesEncoder(size, max_boxes=_MAX_BOXES, augment="none")
    ds = pipeline(data.load(f"shapes:{images}", "train"), encoder, batch_size, training=True, seed=0,
                  shuffle_buffer=0)

    @tf.autograph.experimental.do_not_convert
    def to_keras_hub(image, truth):
        valid = truth["classes"] >= 0  # [B, G]
        boxes_px = box_ops.denormalize(truth["boxes"], size, size)  # [B, G, 4]
        return image, {
            "boxes": tf.where(valid[..., None], boxes_px, -1.0),
            "labels": tf.where(valid, tf.cast(truth["classes"], tf.float32), -1.0),
        }

    return in_memory(ds.map(to_keras_hub), images // batch_size)


def peer(args):
    """The peer of this family that runs here (:class:`KerasHubPeer`), or None."""
    return KerasHubPeer(args) if keras_hub() is not None else None
