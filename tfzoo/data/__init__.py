"""tfzoo.data: readers of canonical examples, augmentation and the tf.data input pipeline.

A dataset is named by a *spec* string:

==================  =====================================================================
spec                source
==================  =====================================================================
``shapes``          the builtin synthetic dataset (:mod:`tfzoo.data.shapes`)
``shapes:N``        the same with ``N`` images in the requested split (a prefix of it)
``voc:PATH``        a VOCdevkit-layout directory (:mod:`tfzoo.data.voc`)
``coco:PATH``       a COCO-layout directory (:mod:`tfzoo.data.coco`)
``yolo:PATH``       a YOLO txt directory: ``data.yaml``, ``images/``, ``labels/`` (Ultralytics,
                    Roboflow, CVAT, Label Studio exports), or its ``.yaml`` file
                    (:mod:`tfzoo.data.yolo_txt`)
``tfds:NAME``       a TensorFlow Datasets detection dataset, e.g. ``tfds:voc/2007``,
                    ``tfds:coco/2017`` (:mod:`tfzoo.data.tfds_reader`)
==================  =====================================================================

:func:`load` returns a ``tf.data.Dataset`` of canonical examples (:mod:`tfzoo.data.schema`);
:func:`pipeline` (from :mod:`tfzoo.data.pipeline`) turns one into batches for a detector.
Note that ``tfzoo.data.pipeline`` is the function; import the module's other names with
``from tfzoo.data.pipeline import Encoder, PaddedBoxesEncoder``.
"""
from __future__ import annotations

from tfzoo.data import _shutdown  # noqa: F401  (registers the exit-time iterator release)
from tfzoo.data.pipeline import Encoder, PaddedBoxesEncoder, pipeline  # noqa: F401  (re-export)

SPEC_FORMS = ("shapes", "shapes:N", "voc:PATH", "coco:PATH", "yolo:PATH", "tfds:NAME")
#: Spec kinds read from a folder by a module of this package with ``splits``, ``scan``,
#: ``load``, ``class_names`` and ``write``: kind -> module name.
FOLDER_READERS = {"voc": "voc", "coco": "coco", "yolo": "yolo_txt"}


def _parse(spec):
    """``spec`` -> ``(kind, argument)``; raises ``ValueError`` naming the accepted forms."""
    if not isinstance(spec, str):
        raise ValueError(
            f"dataset spec must be a string, got {type(spec).__name__}; accepted forms: {', '.join(SPEC_FORMS)}"
        )
    kind, sep, arg = spec.partition(":")
    if kind == "shapes":
        if not sep:
            return kind, None
        if arg.isdigit():
            return kind, int(arg)
    elif kind in ("voc", "coco", "yolo", "tfds") and sep and arg:
        return kind, arg
    raise ValueError(f"unknown dataset spec {spec!r}; accepted forms: {', '.join(SPEC_FORMS)}")


def load(spec, split, *, strict=False, report=None):
    """``tf.data.Dataset`` of canonical examples of ``split`` of the dataset ``spec``.

    ``strict`` and ``report`` (a :class:`~tfzoo.data.validate.Report`) are passed to the
    reader: lenient readers skip or repair bad records and list them in ``report``; strict
    readers raise :class:`~tfzoo.data.validate.DataError` on the first one.
    """
    kind, arg = _parse(spec)
    if kind == "shapes":
        from tfzoo.data import shapes

        return shapes.load(split, num_images=arg, strict=strict, report=report)
    if kind == "voc":
        from tfzoo.data import voc

        return voc.load(arg, split, strict=strict, report=report)
    if kind == "coco":
        from tfzoo.data import coco

        return coco.load(arg, split, strict=strict, report=report)
    if kind == "yolo":
        from tfzoo.data import yolo_txt

        return yolo_txt.load(arg, split, strict=strict, report=report)
    from tfzoo.data import tfds_reader

    return tfds_reader.load(arg, split, strict=strict, report=report)


def class_names(spec, split=None):
    """Class names of dataset ``spec``, indexed by the contiguous class id ``0..C-1``.

    ``split`` matters for ``coco:PATH`` only: the names are read from that split's file
    (else from the smallest annotation file that reads)."""
    kind, arg = _parse(spec)
    if kind == "shapes":
        from tfzoo.data import shapes

        return shapes.class_names()
    if kind == "voc":
        from tfzoo.data import voc

        return list(voc.class_names(arg))
    if kind == "coco":
        from tfzoo.data import coco

        return list(coco.class_names(arg, split))
    if kind == "yolo":
        from tfzoo.data import yolo_txt

        return yolo_txt.class_names(arg)
    from tfzoo.data import tfds_reader

    return tfds_reader.class_names(arg)


def category_ids(spec, split=None):
    """The dataset's own id of each class, indexed by the contiguous class id ``0..C-1``.

    For ``coco:PATH`` these are the annotation file's category ids (what COCO evaluation
    and result files use); for ``tfds:coco/*`` the 80 official COCO ids in TFDS label order.
    Every other dataset has no ids of its own and gets ``1..C`` (``list(range(1, C + 1))``:
    class id + 1, so 0 stays free for background as in COCO).
    """
    kind, arg = _parse(spec)
    if kind == "coco":
        from tfzoo.data import coco

        return list(coco.category_ids(arg, split))
    if kind == "tfds":
        from tfzoo.data import tfds_reader

        return tfds_reader.category_ids(arg)
    return list(range(1, len(class_names(spec, split)) + 1))
