"""tfzoo.eval: COCO (pycocotools) and Pascal VOC07/VOC12 box metrics, from any model format.

- :class:`Evaluator` accumulates ground truth (canonical examples) and detections (model
  outputs or COCO results files) and returns one metrics dict;
- :func:`evaluate_detector` scores any detector callable on a dataset split;
- :func:`evaluate_results_file` scores a COCO results JSON against a dataset split;
- :func:`coco_results` turns one image's detections into results-file entries;
- :mod:`tfzoo.eval.voc_metrics` and :mod:`tfzoo.eval.coco_metrics` hold the metrics alone.
"""
from tfzoo.eval.coco_metrics import COCO_KEYS, coco_results, evaluate_coco, results_image_id
from tfzoo.eval.detector_eval import evaluate_detector
from tfzoo.eval.evaluator import RESULT_KEYS, Evaluator, evaluate_results_file, image_key
from tfzoo.eval.voc_metrics import voc_ap

__all__ = [
    "COCO_KEYS",
    "RESULT_KEYS",
    "Evaluator",
    "coco_results",
    "evaluate_coco",
    "evaluate_detector",
    "evaluate_results_file",
    "image_key",
    "results_image_id",
    "voc_ap",
]
