"""The training data: dataset specs (one or several, concatenated), their classes,
splits and example counts."""
from __future__ import annotations

import importlib
import re
import warnings

import tensorflow as tf

import tfzoo.data
from tfzoo.data import validate


def _specs(data):
    """One spec string, or several (concatenated, e.g. VOC 2007 + 2012) -> list."""
    if isinstance(data, str):
        return [data]
    specs = list(data)
    if not specs or not all(isinstance(s, str) for s in specs):
        raise ValueError(f"data must be a dataset spec string or a list of them, got {data!r}")
    return specs


def _class_names(specs):
    names = tfzoo.data.class_names(specs[0])
    for spec in specs[1:]:
        other = tfzoo.data.class_names(spec)
        if list(other) != list(names):
            raise ValueError(f"{spec} has other classes than {specs[0]}: {other} vs {names}")
    return list(names)


def _load(specs, split, strict=False, warn=False, reports=None):
    """The examples of ``split`` of every spec, concatenated. The readers skip or repair bad
    records (``strict``: raise :class:`~tfzoo.data.validate.DataError` at the first);
    ``warn`` names what they found when the split was opened
    (:func:`~tfzoo.data.validate.problems_warning`: the folder readers' annotation and image
    header problems); ``reports`` (a list) collects ``(spec, split, report, problems
    named)`` for :func:`late_problems`."""
    dataset = None
    for spec in specs:
        report = validate.Report(strict=strict)
        part = tfzoo.data.load(spec, split, strict=strict, report=report)
        message = validate.problems_warning(report, spec, split, "training goes on without them") if warn else None
        if message:
            warnings.warn(message)
        if reports is not None:
            reports.append((spec, split, report, _distinct(report)))
        dataset = part if dataset is None else dataset.concatenate(part)
    return dataset


def _distinct(report):
    return {(p.file, p.record, p.problem) for p in report}


def late_problems(reports):
    """Warnings for the problems the readers found while reading, after the split was
    opened (an image whose header reads but whose pixels do not decode, a TFDS record):
    each is found again every epoch, so they are counted once."""
    messages = []
    for spec, split, report, named in reports:
        late = [p for p in report if (p.file, p.record, p.problem) not in named]
        distinct = {}
        for problem in late:
            distinct.setdefault((problem.file, problem.record, problem.problem), problem)
        if distinct:
            shown = "; ".join(str(p) for p in list(distinct.values())[:3])
            messages.append(f"{spec} [{split}]: {len(distinct)} more data problems found while reading, skipped "
                            f"every time: {shown}{'; ...' if len(distinct) > 3 else ''}")
    return messages


def split_exists(spec, split):
    """Whether dataset ``spec`` has a split ``split`` (how each reader names its splits:
    shapes' ``SPLITS``, VOC's ``ImageSets/Main/*.txt``, YOLO's ``data.yaml`` keys and
    ``images/*`` folders, COCO's ``instances_*.json`` with
    the ``2017`` fallback, TFDS' builder info, when it is known before download)."""
    kind, arg = tfzoo.data._parse(spec)
    if kind == "shapes":
        from tfzoo.data import shapes

        return split in shapes.SPLITS
    if kind == "voc":
        from tfzoo.data import voc

        return split in voc.splits(arg)
    if kind == "yolo":
        from tfzoo.data import yolo_txt

        return split in yolo_txt.splits(arg)
    if kind == "coco":
        from tfzoo.data import coco

        try:
            coco.resolve_split(arg, split)
        except validate.DataError:
            return False
        return True
    from tfzoo.data import tfds_reader

    known = list(tfds_reader._tfds(arg).builder(arg).info.splits.keys())
    if not known:  # not prepared yet and no metadata: let the reader decide
        return True
    wanted = [re.sub(r"\[.*\]$", "", part.strip()) for part in split.split("+")]
    return all(name in known for name in wanted)


def count_examples(specs, split, dataset):
    """Examples in ``dataset`` (split ``split`` of ``specs``): its cardinality when known;
    for VOC/COCO/YOLO folders (whose decoding filter hides the count from tf.data) the records
    of the annotation index without reading image headers again (YOLO reads them: its labels
    are fractions of the image size; an image that turns out
    missing or corrupt is only dropped from the stream: epochs count steps, so the schedule
    stays right); else one pass over the data."""
    count = int(dataset.cardinality())
    if count >= 0:
        return count
    if count == tf.data.INFINITE_CARDINALITY:
        raise ValueError(f"{'+'.join(specs)} [{split}] is infinite; training needs a finite dataset")
    total = 0
    for spec in specs:
        kind, arg = tfzoo.data._parse(spec)
        if kind in tfzoo.data.FOLDER_READERS:
            reader = importlib.import_module(f"tfzoo.data.{tfzoo.data.FOLDER_READERS[kind]}")
            total += len(reader.scan(arg, split, check_images=False))
            continue
        part = tfzoo.data.load(spec, split)
        known = int(part.cardinality())
        if known < 0:
            warnings.warn(f"{spec} [{split}]: counting the examples with one pass over the data")
            known = int(part.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
        total += known
    return total
