"""Scoring a loaded model artifact (:func:`tfzoo.export.load_model`: a training directory,
``.keras``, SavedModel or ``.tflite``) on a dataset split: what ``tfzoo evaluate`` and
``tfzoo compare`` run, so that every format is scored by the same code."""
from __future__ import annotations

import sys

from tfzoo.eval.detector_eval import evaluate_detector


class ModelDataMismatch(ValueError):
    """A model whose classes are not the dataset's."""


def evaluate_loaded(model, spec, split, *, batch_size=8, strict=False, progress=True, return_evaluator=False):
    """COCO and VOC metrics of loaded ``model`` on ``spec``/``split`` (see
    :func:`tfzoo.eval.evaluate_detector`): the model's own resize, and for a proposal-based
    model the examples' proposals by the model's own source. Raises
    :class:`ModelDataMismatch` when the model's classes are not the dataset's."""
    import tfzoo.data
    from tfzoo.data.validate import Report, problems_warning

    names = list(tfzoo.data.class_names(spec, split))
    if len(names) != model.num_classes:
        raise ModelDataMismatch(f"{model.path} has {model.num_classes} classes, {spec} has {len(names)}")
    if model.has_class_names and tuple(model.class_names) != tuple(names):
        raise ModelDataMismatch(f"{model.path} classes ({', '.join(model.class_names)}) differ from the classes of "
                                f"{spec} ({', '.join(names)})")
    report = Report(strict=strict)
    examples = tfzoo.data.load(spec, split, strict=strict, report=report)
    extra = {}
    if model.max_proposals:  # a proposal-based model: the examples' proposals by its own source
        from tfzoo import proposals as proposal_source

        if not model.proposal_source:
            raise ModelDataMismatch(f"{model.path} takes proposals and names no source for them")
        examples, _ = proposal_source.for_config(examples, model.config, desc=f"proposals {spec} [{split}]",
                                                 progress=progress)
        extra = {"input_names": model.input_names, "max_proposals": model.max_proposals}
    result = evaluate_detector(model.detect, examples, model.image_size, names, tfzoo.data.category_ids(spec, split),
                               batch_size=batch_size, keep_aspect_ratio=model.keep_aspect_ratio, progress=progress,
                               return_evaluator=return_evaluator, **extra)
    warning = problems_warning(report, spec, split, "scored without them")
    if warning:
        print(f"tfzoo: warning: {warning}", file=sys.stderr)
    return result
