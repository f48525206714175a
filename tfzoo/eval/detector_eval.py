"""Scores any detector (Keras, SavedModel, TFLite) on a dataset split.

The images go through the evaluation pipeline (:func:`tfzoo.data.pipeline` with
``training=False``: resized to the model input, letterboxed or warped), the detector's
boxes (normalized to that input) are mapped back to original-image pixels with each
image's ``image_info``, and :class:`~tfzoo.eval.Evaluator` scores them against the
original ground truth. Every model format is driven through one callable, so a Keras model
and its exports are scored by exactly the same code.
"""
from __future__ import annotations

import sys

import numpy as np
from tqdm.auto import tqdm

from tfzoo.data import augment as aug
from tfzoo.data.pipeline import PaddedBoxesEncoder, pipeline
from tfzoo.data import schema
from tfzoo.eval.evaluator import Evaluator


def evaluate_detector(
    detect_fn,
    dataset,
    image_size,
    class_names,
    category_ids=None,
    *,
    batch_size=8,
    keep_aspect_ratio=True,
    progress=True,
    return_evaluator=False,
    input_names=("images",),
    max_proposals=2000,
):
    """COCO and VOC metrics of ``detect_fn`` on ``dataset``.

    Args:
      detect_fn: ``images float32 [B, H, W, 3] (RGB, 0..255, at image_size) -> dict`` with
        ``detection_boxes [B, M, 4]`` normalized to the input, ``detection_scores``,
        ``detection_classes``, ``num_detections`` (tensors or arrays). ``B`` may be smaller
        than ``batch_size`` on the last batch.
      dataset: unbatched canonical examples (``tfzoo.data.load(spec, split)``).
      image_size: model input size (int or ``(h, w)``).
      class_names / category_ids: as :class:`~tfzoo.eval.Evaluator`.
      batch_size: images per ``detect_fn`` call.
      keep_aspect_ratio: letterbox (True) or warp (False), as the model was trained.
      input_names, max_proposals: a proposal-based model's inputs (``("images",
        "proposals")``): ``detect_fn`` then gets ``{"images", "proposals" [B, R, 4]}``, the
        examples' proposals moved to the model input (see :class:`tfzoo.data.Encoder`).
      progress: tqdm bars on stderr (shown on a terminal only).
      return_evaluator: also return the filled Evaluator.

    Returns:
      the metrics dict of :meth:`Evaluator.result` (``(metrics, evaluator)`` with
      ``return_evaluator``).
    """
    evaluator = Evaluator(class_names, category_ids)
    evaluator.add_ground_truth_examples(dataset, progress=progress)
    encoder = PaddedBoxesEncoder(image_size, keep_aspect_ratio=keep_aspect_ratio, input_names=input_names,
                                 max_proposals=max_proposals)
    batches = pipeline(dataset, encoder, batch_size, training=False)
    total = int(batches.cardinality())
    bar = tqdm(batches, total=total if total >= 0 else None, desc="detect", unit="batch",
               file=sys.stderr, disable=None if progress else True)
    for images, truth in bar:
        outputs = {k: np.asarray(v) for k, v in detect_fn(images).items()}
        boxes_px = aug.boxes_to_original(outputs["detection_boxes"], truth[aug.IMAGE_INFO]).numpy()
        in_size = truth[aug.IMAGE_INFO].numpy()[:, 0, :]  # [B, 2] original h, w
        boxes = boxes_px / np.tile(in_size, 2)[:, None, :]
        evaluator.add_inference_outputs(
            truth[schema.IMAGE_ID].numpy(),
            {**outputs, "detection_boxes": boxes},
        )
    metrics = evaluator.result()
    return (metrics, evaluator) if return_evaluator else metrics
