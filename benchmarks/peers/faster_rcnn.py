"""Faster R-CNN in ``bench_model.py``: how a random tfzoo Faster R-CNN is made comparable
(its softmax RoI classifier given a trained head's score statistics) and its peer,
torchvision's ``fasterrcnn_resnet50_fpn`` (``--tiny``: ``fasterrcnn_mobilenet_v3_large_fpn``),
built with random weights (none can be downloaded here), in eval mode with its own pre- and
postprocessing, ``min_size = max_size = --image-size`` (no resizing of the square benchmark
image), on ``torch.set_num_threads(--threads)``.

Both sides run torchvision's test settings, which are the FPN paper's: 1,000 proposals per
level before NMS (0.7), 1,000 after, softmax over K + 1, score threshold 0.05, per-class NMS
at 0.5, 100 detections. tfzoo's ``faster_rcnn_fpn`` has them except the final NMS threshold
(0.3, the VOC paper's), set to 0.5 here (:data:`TFZOO_SETTINGS`).

Class counts: torchvision's ``num_classes`` counts the background (91 for COCO: background +
90 category ids), tfzoo's does not; ``--num-classes K`` builds tfzoo with K and torchvision
with K + 1, so both have K + 1 class logits (``--num-classes 90``: torchvision's COCO head).

Random weights would score every class 1 / (K + 1), under the 0.05 threshold for 90 classes:
no candidate at all, where a trained detector has hundreds. Both sides get the same
preparation (it changes no compute, the SSD adapter's): the RoI classifier's logits on the
benchmark image's proposals are scaled to a standard deviation (the smallest of
:data:`SPREADS` at which 90 classes can reach the count), then the background logit's bias
is moved until exactly ``--candidates`` (proposal, class) pairs score above 0.05. The
RPN needs none: with no score threshold, every level's top 1,000 go to NMS either way.
"""
from __future__ import annotations

import numpy as np

from peers import ssd

FAMILY = "Faster R-CNN"

#: Decoder settings both sides use (torchvision's defaults).
SCORE_THRESHOLD = 0.05

NMS_IOU = 0.5

MAX_DETECTIONS = 100

#: tfzoo settings matched to the peer's (build_tfzoo applies them).
TFZOO_SETTINGS = dict(score_threshold=SCORE_THRESHOLD, nms_iou_threshold=NMS_IOU, max_detections=MAX_DETECTIONS)

#: Training speed target against the peer (issue 20: at least as fast as torchvision).
TRAIN_TARGET = 1.0

#: The network's FLOP rate target, a fraction of the fp32 matmul rate (issue 20).
FLOP_TARGET = 0.70

#: Export latency targets (issue 20): int8 TFLite of ``--model`` and fp32 TFLite of
#: ``--mobile-model``, each against its SavedModel.
EXPORT_TARGETS = {"int8": "<= 0.4x", "mobile fp32": "<= 0.6x"}


#: Logit spreads tried in turn: the first whose softmax can put ``--candidates`` pairs above
#: the threshold is used (90 classes at spread 1 give a few hundred pairs at most).
SPREADS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def calibrate(scale_kernels, shift_background, class_logits, background, candidates):
    """:func:`peers.ssd.calibrate_softmax_head` at the smallest of :data:`SPREADS` that can
    reach ``candidates`` pairs above :data:`SCORE_THRESHOLD` (with the background logit out
    of the way); returns its dict plus ``spread``."""
    logits = np.asarray(class_logits(), "float64")
    logits = logits.reshape(-1, logits.shape[-1])
    spread = SPREADS[-1]
    for value in SPREADS:
        scaled = logits * (value / max(float(logits.std()), 1e-12))
        scaled[:, background] = -1e9
        if ssd.softmax_candidates(scaled, background, SCORE_THRESHOLD)[0] > candidates:
            spread = value
            break
    result = ssd.calibrate_softmax_head(scale_kernels, shift_background, class_logits, background, candidates,
                                        threshold=SCORE_THRESHOLD, spread=spread)
    return {**result, "spread": spread}


def valid_rows(logits, proposals):
    """The rows of ``logits [B, R, K + 1]`` whose proposal is not padding (a zero box)."""
    proposals = np.asarray(proposals).reshape(-1, 4)
    logits = np.asarray(logits, "float64").reshape(proposals.shape[0], -1)
    return logits[(proposals[:, 2] > proposals[:, 0]) & (proposals[:, 3] > proposals[:, 1])]


def prepare_tfzoo(detector, image, candidates):
    """Calibrates a random tfzoo Faster R-CNN's RoI classifier on ``image``'s proposals;
    returns ``{"calibration", "candidates": {"pairs", "anchors"}, "proposals"}`` (anchors:
    proposals with a candidate)."""
    from tfzoo.layers import output_kernel

    layer = detector.get_layer("roi_class")
    background = detector.config.num_classes  # tfzoo: background last

    def scale_kernels(factor):
        kernel = output_kernel(layer)
        kernel.assign(kernel.numpy() * np.float32(factor))
        layer.bias.assign(layer.bias.numpy() * np.float32(factor))

    def shift_background(shift):
        bias = layer.bias.numpy()
        bias[background] += np.float32(shift)
        layer.bias.assign(bias)

    def logits():
        outputs = detector(image, training=False)
        return valid_rows(outputs["class_logits"].numpy(), outputs["proposals"].numpy())

    calibration = calibrate(scale_kernels, shift_background, logits, background, candidates)
    rows = logits()
    pairs, boxes = ssd.softmax_candidates(rows, background, SCORE_THRESHOLD)
    return {"calibration": calibration, "candidates": {"pairs": pairs, "anchors": boxes},
            "proposals": int(rows.shape[0])}


class TorchvisionPeer(ssd.TorchvisionPeer):
    """torchvision's ``fasterrcnn_resnet50_fpn`` as ``bench_model.py``'s peer; its training
    step is the SSD adapter's (:class:`peers.ssd.TorchTrainer`: forward with targets, the
    model's losses, backward, SGD)."""

    def build(self):
        from torchvision.models import detection

        size = self.args.image_size
        settings = dict(weights=None, weights_backbone=None, num_classes=self.args.num_classes + 1,
                        min_size=size, max_size=size, box_score_thresh=SCORE_THRESHOLD, box_nms_thresh=NMS_IOU,
                        box_detections_per_img=MAX_DETECTIONS)
        if self.args.tiny:
            return detection.fasterrcnn_mobilenet_v3_large_fpn(**settings)
        return detection.fasterrcnn_resnet50_fpn(**settings)

    def _stages(self, model, x):
        """The eval forward pass split where tfzoo's is: ``(box_features, network, decode)``.
        ``box_features()`` runs the transform, backbone, RPN, RoI pooling and box head:
        ``(features [R, 1024], proposals, image_sizes)``; ``network()`` adds the predictors:
        ``(class_logits, box_regression, proposals, image_sizes)``, what ``decode`` takes."""
        torch = self.torch
        heads = model.roi_heads

        def box_features():
            with torch.inference_mode():
                batch, _ = model.transform([x])
                features = model.backbone(batch.tensors)
                proposals, _ = model.rpn(batch, features)
                pooled = heads.box_roi_pool(features, proposals, batch.image_sizes)
                return heads.box_head(pooled), proposals, batch.image_sizes

        def network():
            with torch.inference_mode():
                features, proposals, image_sizes = box_features()
                return (*heads.box_predictor(features), proposals, image_sizes)

        def decode(raw):
            with torch.inference_mode():
                return heads.postprocess_detections(*raw)

        return box_features, network, decode

    def latency(self, image, spec):
        """``(functions to time, info)`` of a calibrated model in eval mode."""
        torch = self.torch
        model = self.build().eval()
        self.model = model
        x = self._tensor(image)
        self.x = x
        box_features_of, network, decode = self._stages(model, x)
        predictor = model.roi_heads.box_predictor.cls_score
        box_features, proposals, _ = box_features_of()

        def logits():
            with torch.inference_mode():
                return predictor(box_features).numpy()

        def scale_kernels(factor):
            with torch.no_grad():
                predictor.weight.mul_(float(factor))
                predictor.bias.mul_(float(factor))

        def shift_background(shift):
            with torch.no_grad():
                predictor.bias[0] += float(shift)  # torchvision: background at 0

        calibration = calibrate(scale_kernels, shift_background, logits, 0, self.args.candidates)

        def predict():
            with torch.inference_mode():
                return model([x])

        raw = network()
        peer = "torchvision model([image]) (eval, inference_mode)"
        fns = {peer: predict, "torchvision forward only": network,
               "torchvision decode + NMS only": lambda: decode(raw)}
        pairs, boxes = ssd.softmax_candidates(logits(), 0, SCORE_THRESHOLD)
        info = {
            "version": self.version,
            "model": "fasterrcnn_mobilenet_v3_large_fpn" if self.args.tiny else "fasterrcnn_resnet50_fpn",
            "params": int(sum(p.numel() for p in model.parameters())), "calibration": calibration,
            "candidates": {"pairs": pairs, "anchors": boxes}, "proposals": int(proposals[0].shape[0]),
            "num_detections": int(predict()[0]["boxes"].shape[0]),
            "threads": torch.get_num_threads(), "peer": peer,
            "forward": "torchvision forward only", "decode": "torchvision decode + NMS only",
        }
        return fns, info

    def forward_flops(self, input_shape):
        """Float operations of the network (backbone, FPN, RPN head, RoI head on the
        proposals; no NMS) counted by ``torch.utils.flop_counter`` (convolutions and
        matmuls; a multiply-add counts 2)."""
        from torch.utils.flop_counter import FlopCounterMode

        _, network, _ = self._stages(self.model, self.x)
        with FlopCounterMode(display=False) as counter:
            network()
        return int(counter.get_total_flops())


def peer(args):
    """The peer of this family that runs here (:class:`TorchvisionPeer`), or None."""
    return TorchvisionPeer(args) if ssd.torch_modules() is not None else None
