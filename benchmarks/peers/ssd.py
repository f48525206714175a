"""SSD in ``bench_model.py``: how a random tfzoo SSD is made comparable (its softmax class
heads given a trained head's score statistics) and its peer, torchvision's ``ssd300_vgg16``
(``--tiny``: ``ssdlite320_mobilenet_v3_large``), built with random weights (none can be
downloaded here), in eval mode with its own pre- and postprocessing, on
``torch.set_num_threads(--threads)``.

Both sides decode as the paper: softmax over K + 1, score threshold 0.01, at most 400
candidates per class (torchvision) / 400 boxes before NMS (tfzoo), per-class NMS at 0.45,
200 detections; these are tfzoo's and torchvision's defaults alike.

Random weights give every class the same probability, 1 / (K + 1) = 0.012 for 80 classes,
just above the 0.01 threshold: every (box, class) pair would be a candidate, which no trained
detector produces. Both sides get the same preparation (it changes no compute): every class
head's output kernel is scaled so that the logits on the benchmark image have standard
deviation :data:`LOGIT_SPREAD`, then the background logit's bias is raised until exactly
``--candidates`` (box, class) pairs score above :data:`SCORE_THRESHOLD`.
"""
from __future__ import annotations

import time

import numpy as np

FAMILY = "SSD"

#: Decoder settings both sides use (the paper's, tfzoo's and torchvision's defaults).
SCORE_THRESHOLD = 0.01

NMS_IOU = 0.45

MAX_DETECTIONS = 200

#: Standard deviation given to the random class logits.
LOGIT_SPREAD = 1.0

#: Training speed target against the peer (issue 19: at least as fast as torchvision).
TRAIN_TARGET = 1.0


def softmax_candidates(logits, background, threshold=SCORE_THRESHOLD):
    """``(pairs, boxes)``: (box, class) pairs and boxes whose softmax score of a foreground
    class is above ``threshold``; ``logits [..., K + 1]``, ``background`` its column."""
    logits = np.asarray(logits, "float64")
    logits = logits.reshape(-1, logits.shape[-1])
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    above = np.delete(probs, background, axis=-1) > threshold
    return int(above.sum()), int(above.any(axis=-1).sum())


def background_shift(logits, background, candidates, threshold=SCORE_THRESHOLD):
    """The amount to add to the background logit so that ``candidates`` (box, class) pairs
    of ``logits`` score above ``threshold``: the middle of the shifts at which the
    ``candidates``-th and the next pair cross the threshold (found by bisection; the count
    falls as the shift grows), so float32 rounding in the model cannot move a pair across."""
    logits = np.asarray(logits, "float64")
    logits = logits.reshape(-1, logits.shape[-1])
    total = logits.shape[0] * (logits.shape[1] - 1)
    candidates = int(min(max(candidates, 1), total - 1))

    def count(shift):
        moved = logits.copy()
        moved[:, background] += shift
        return softmax_candidates(moved, background, threshold)[0]

    def boundary(at_most):
        """The smallest shift (to 1e-9) leaving at most ``at_most`` pairs above the threshold."""
        low, high = -60.0, 60.0  # count(low) = every pair, count(high) = none
        while high - low > 1e-9:
            middle = 0.5 * (low + high)
            if count(middle) > at_most:
                low = middle
            else:
                high = middle
        return high

    return 0.5 * (boundary(candidates) + boundary(candidates - 1))


def calibrate_softmax_head(scale_kernels, shift_background, class_logits, background, candidates,
                           threshold=SCORE_THRESHOLD, spread=LOGIT_SPREAD):
    """Gives random softmax class heads a trained head's score statistics (see the module doc).

    ``scale_kernels(factor)`` multiplies every class head's output kernel (their biases are
    0), ``shift_background(shift)`` adds ``shift`` to every background bias,
    ``class_logits()`` returns the ``[..., K + 1]`` logits of the benchmark image.
    Returns ``{"kernel_scale", "background_shift"}``.
    """
    logits = np.asarray(class_logits(), "float64")
    scale = spread / max(float(logits.std()), 1e-12)
    scale_kernels(scale)
    shift = background_shift(np.asarray(class_logits(), "float64"), background, candidates, threshold)
    shift_background(shift)
    return {"kernel_scale": scale, "background_shift": shift}


def class_head_layers(detector):
    """tfzoo SSD's class head output convs, one per feature map."""
    return [layer for layer in detector.layers if layer.name.startswith("class_head_")
            and not layer.name.startswith(("class_head_reshape", "class_head_concat"))]


def prepare_tfzoo(detector, image, candidates):
    """Calibrates a random tfzoo SSD's class heads on ``image``; returns ``{"calibration",
    "candidates": {"pairs", "anchors"}}``."""
    from tfzoo.layers import output_kernel

    heads = class_head_layers(detector)
    width = detector.config.num_classes + 1
    background = width - 1  # tfzoo: background last

    def scale_kernels(factor):
        for layer in heads:
            kernel = output_kernel(layer)
            kernel.assign(kernel.numpy() * np.float32(factor))

    def shift_background(shift):
        for layer in heads:
            bias = layer.bias.numpy()
            bias[background::width] += np.float32(shift)  # channel = box * (K + 1) + class
            layer.bias.assign(bias)

    def logits():
        return detector(image, training=False)["class_logits"].numpy()

    calibration = calibrate_softmax_head(scale_kernels, shift_background, logits, background, candidates)
    pairs, boxes = softmax_candidates(logits(), background)
    return {"calibration": calibration, "candidates": {"pairs": pairs, "anchors": boxes}}


def torch_modules():
    """``(torch, torchvision)``, or None where they do not import (``pip install -e .[bench]``)."""
    try:
        import torch
        import torchvision
    except ImportError:
        return None
    return torch, torchvision


class TorchvisionPeer:
    """torchvision's ``ssd300_vgg16`` as ``bench_model.py``'s peer (``None`` of :func:`peer`
    where torch is missing)."""

    name = "torchvision"

    def __init__(self, args):
        torch, torchvision = torch_modules()
        self.args = args
        self.torch = torch
        self.version = f"{torchvision.__version__} (torch {torch.__version__})"
        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)

    def build(self):
        from torchvision.models import detection

        settings = dict(weights=None, weights_backbone=None, num_classes=self.args.num_classes + 1,
                        score_thresh=SCORE_THRESHOLD, nms_thresh=NMS_IOU, detections_per_img=MAX_DETECTIONS)
        if self.args.tiny:
            return detection.ssdlite320_mobilenet_v3_large(**settings)
        if self.args.image_size != 300:
            raise ValueError(f"torchvision's ssd300_vgg16 runs at 300 px; --image-size is {self.args.image_size}")
        return detection.ssd300_vgg16(**settings)

    def _tensor(self, image):
        """``[1, S, S, 3]`` 0-255 float -> ``[3, S, S]`` 0-1 tensor (torchvision's input)."""
        return self.torch.from_numpy(np.ascontiguousarray(np.asarray(image)[0].transpose(2, 0, 1) / 255.0)).float()

    @staticmethod
    def _output_convs(model):
        """The last Conv2d of each class head module (a Conv2d, or SSDLite's Sequential)."""
        from torch import nn

        convs = []
        for module in model.head.classification_head.module_list:
            last = [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1]
            convs.append(last)
        return convs

    def latency(self, image, spec):
        """``(functions to time, info)`` of a calibrated model in eval mode."""
        torch = self.torch
        model = self.build().eval()
        self.model = model
        x = self._tensor(image)
        width = self.args.num_classes + 1
        convs = self._output_convs(model)
        with torch.inference_mode():
            batch, _ = model.transform([x])
            features = list(model.backbone(batch.tensors).values())
            anchors = model.anchor_generator(batch, features)

        def logits():
            with torch.inference_mode():
                return model.head(features)["cls_logits"].numpy()

        def scale_kernels(factor):
            with torch.no_grad():
                for conv in convs:
                    conv.weight.mul_(float(factor))

        def shift_background(shift):
            with torch.no_grad():
                for conv in convs:
                    conv.bias[0::width] += float(shift)  # channel = box * (K + 1) + class, background 0

        calibration = calibrate_softmax_head(scale_kernels, shift_background, logits, 0, self.args.candidates)
        self.normalized = batch.tensors

        def predict():
            with torch.inference_mode():
                return model([x])

        def forward():
            with torch.inference_mode():
                return model.head(list(model.backbone(batch.tensors).values()))

        with torch.inference_mode():
            raw = forward()

        def decode():
            with torch.inference_mode():
                return model.postprocess_detections(raw, anchors, batch.image_sizes)

        peer = "torchvision model([image]) (eval, inference_mode)"
        fns = {peer: predict, "torchvision forward only": forward, "torchvision decode + NMS only": decode}
        pairs, boxes = softmax_candidates(logits(), 0)
        info = {
            "version": self.version, "model": "ssdlite320_mobilenet_v3_large" if self.args.tiny else "ssd300_vgg16",
            "params": int(sum(p.numel() for p in model.parameters())), "calibration": calibration,
            "candidates": {"pairs": pairs, "anchors": boxes}, "num_detections": int(predict()[0]["boxes"].shape[0]),
            "threads": torch.get_num_threads(), "peer": peer,
            "forward": "torchvision forward only", "decode": "torchvision decode + NMS only",
        }
        return fns, info

    def forward_flops(self, input_shape):
        """Float operations of the forward pass (backbone + heads) counted by
        ``torch.utils.flop_counter`` (convolutions and matmuls; a multiply-add counts 2)."""
        from torch.utils.flop_counter import FlopCounterMode

        torch = self.torch
        model = self.model
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model.head(list(model.backbone(self.normalized).values()))
        return int(counter.get_total_flops())

    def train_contender(self, images, batch_size, learning_rate, in_memory):
        """A callable ``run(steps) -> [step seconds]``: torchvision's training step (forward
        with targets, its loss, backward, ``torch.optim.SGD`` momentum 0.9) on the same
        ``shapes`` images, held in memory."""
        return TorchTrainer(self, images, batch_size, learning_rate)


class TorchTrainer:
    """torchvision's SSD training loop on in-memory batches; ``last_logs`` its last losses."""

    def __init__(self, peer, images, batch_size, learning_rate):
        import tfzoo.data as data
        from tfzoo.data.pipeline import PaddedBoxesEncoder, pipeline
        from tfzoo.ops import boxes as box_ops

        torch = peer.torch
        self.torch = torch
        self.model = peer.build().train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=learning_rate, momentum=0.9)
        size = peer.args.image_size
        encoder = PaddedBoxesEncoder(size, augment="none")
        ds = pipeline(data.load(f"shapes:{images}", "train"), encoder, batch_size, training=True, seed=0,
                      shuffle_buffer=0)
        self.batches = []
        for batch_images, truth in ds.take(images // batch_size):
            xs, targets = [], []
            for image, boxes, classes in zip(batch_images.numpy(), truth["boxes"].numpy(), truth["classes"].numpy()):
                keep = classes >= 0
                yxyx = box_ops.denormalize(boxes[keep], size, size).numpy()
                xs.append(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1) / 255.0)).float())
                targets.append({"boxes": torch.from_numpy(yxyx[:, [1, 0, 3, 2]]).float(),  # xyxy pixels
                                "labels": torch.from_numpy(classes[keep].astype("int64") + 1)})  # 0 = background
            self.batches.append((xs, targets))
        self.next = 0
        self.last_logs = {}

    def __call__(self, steps):
        times = []
        for _ in range(steps):
            xs, targets = self.batches[self.next % len(self.batches)]
            self.next += 1
            start = time.perf_counter()
            losses = self.model(xs, targets)
            loss = sum(losses.values())
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            times.append(time.perf_counter() - start)
            self.last_logs = {k: float(v.detach()) for k, v in losses.items()}
        return times


def peer(args):
    """The peer of this family that runs here (:class:`TorchvisionPeer`), or None."""
    return TorchvisionPeer(args) if torch_modules() is not None else None
