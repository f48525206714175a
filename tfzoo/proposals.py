"""Region proposals for the proposal-based detectors (R-CNN, SPP-Net, Fast R-CNN).

Two sources, one result: float32 ``[R, 4]`` canonical boxes (normalized ``[y1, x1, y2, x2]``
of the image, best first) under the example key ``proposals`` (:mod:`tfzoo.data.schema`),
which augmentation and resizing then move with the image.

- **Selective search** (Uijlings et al. 2013, as R-CNN, SPP-Net and Fast R-CNN used it)
  through OpenCV's ``cv2.ximgproc.segmentation`` (``opencv-contrib-python-headless``, a
  dependency of tfzoo): ``"fast"`` mode by default (the papers' setting: HSV and Lab colour
  spaces, two segmentation scales, two merging strategies), ``"quality"`` on request; at most
  ``max_boxes`` (2,000) per image, in OpenCV's ranking, exact duplicates removed. An image
  whose longer side exceeds ``max_side`` (500 px, VOC's size) is searched at that size:
  the boxes are normalized, so only their pixel precision changes, and the time per image
  stays bounded on large photographs.
- **A user's file** (:func:`load_json`), as Fast R-CNN users brought theirs: a JSON object
  ``{image_id: [[x1, y1, x2, y2], ...]}`` in pixels of the original image, best first.
  Checked like any other input: unknown ids, malformed rows, non-finite values, empty or
  inverted boxes and boxes outside the image are named in the report and skipped; boxes
  partly outside are clipped.

**The cache.** Selective search takes about a second per image, so its boxes are computed
once and kept in ``cache_dir()`` (``$TFZOO_CACHE``, else ``$XDG_CACHE_HOME/tfzoo``, else
``~/.cache/tfzoo``; never inside a dataset's folder): one ``.npy`` file per image under
``proposals/<settings>/``, named by the SHA-256 of the decoded pixels and their shape, so an
edited image gets new proposals and a renamed one keeps its own. Files are written
atomically; an entry that does not load as float32 ``[R, 4]`` boxes in ``[0, 1]`` is
recomputed, not trusted. :func:`compute` fills the cache for a dataset split in parallel
processes with a progress bar; an interrupted run keeps what it wrote and the next one
computes only the rest (``tfzoo proposals``).

Shape legend: R proposals, G ground-truth boxes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import sys
import threading
import time

import numpy as np

from tfzoo import atomic

METHODS = ("fast", "quality")
#: Proposals kept per image by default (R-CNN's "about 2,000").
DEFAULT_MAX_BOXES = 2000
#: Longer image side (px) selective search runs at by default.
DEFAULT_MAX_SIDE = 500
#: Bumped when the cached boxes of the same settings would change (a new OpenCV call, a
#: new ranking rule): old entries are then never read.
CACHE_VERSION = 1
#: The top-N cut-offs and IoU thresholds :func:`recall` reports (the papers' figures).
RECALL_TOPS = (100, 300, 1000, 2000)
RECALL_IOUS = (0.5, 0.7)

#: Problem names of a user's proposal file (see :mod:`tfzoo.data.validate` for the others).
UNKNOWN_ID = "unknown image id"
SKIPPED_PROPOSALS = "skipped proposals"
NOTE_NO_PROPOSALS = "image without proposals"

_SEARCH_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Settings:
    """Selective search settings; :attr:`key` names their cache folder."""

    method: str = "fast"
    max_boxes: int = DEFAULT_MAX_BOXES
    max_side: int = DEFAULT_MAX_SIDE

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown selective search method {self.method!r}: one of {', '.join(METHODS)}")
        if int(self.max_boxes) < 1:
            raise ValueError(f"max_boxes must be >= 1, got {self.max_boxes}")
        if int(self.max_side) < 32:
            raise ValueError(f"max_side must be >= 32 px, got {self.max_side}")

    @classmethod
    def cached(cls, method="fast", max_boxes=DEFAULT_MAX_BOXES, max_side=DEFAULT_MAX_SIDE):
        """The settings whose cache a model taking ``max_boxes`` proposals reads: never fewer
        than :data:`DEFAULT_MAX_BOXES` boxes, so that every preset (and ``tfzoo proposals``)
        shares one cache per method and side; a model takes the first ones it needs."""
        return cls(method, max(int(max_boxes or 0), DEFAULT_MAX_BOXES), max_side)

    @property
    def key(self):
        return f"ss-{self.method}-max{int(self.max_boxes)}-side{int(self.max_side)}-v{CACHE_VERSION}"


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("selective search needs OpenCV's contrib modules: "
                          "pip install opencv-contrib-python-headless") from e
    if not hasattr(cv2, "ximgproc"):
        raise ImportError("the installed OpenCV lacks the contrib module ximgproc (another OpenCV package shadows "
                          "it): pip uninstall opencv-python opencv-python-headless, then pip install "
                          "--force-reinstall opencv-contrib-python-headless")
    return cv2


def selective_search(image, settings=Settings()):
    """Selective search proposals of one RGB ``image`` (uint8 ``[H, W, 3]``): float32
    ``[R, 4]`` normalized ``[y1, x1, y2, x2]``, ``R <= settings.max_boxes``, best first."""
    cv2 = _cv2()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise ValueError(f"selective search needs a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    scale = min(1.0, settings.max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    with _SEARCH_LOCK:  # one search at a time per process: rand()'s sequence is global
        _seed_ranking()
        search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(np.ascontiguousarray(image[..., ::-1]))  # OpenCV's BGR
        if settings.method == "fast":
            search.switchToSelectiveSearchFast()
        else:
            search.switchToSelectiveSearchQuality()
        rects = np.asarray(search.process(), np.float64).reshape(-1, 4)  # x, y, w, h in px, ranked
    return _ranked_boxes(rects, image.shape[0], image.shape[1], settings.max_boxes)


def _seed_ranking():
    """OpenCV ranks the regions of selective search by their hierarchy level times C's
    ``rand()`` (the paper's pseudo-random ranking), so the same image would get another
    order each time: seeding ``rand`` first makes it reproducible (where the C library
    can be reached; elsewhere the order varies, the set of boxes does not)."""
    import ctypes

    try:
        ctypes.CDLL(None).srand(0)
    except (OSError, AttributeError, TypeError):  # pragma: no cover - no C library to reach
        pass


def _ranked_boxes(rects, height, width, max_boxes):
    """OpenCV's ``(x, y, w, h)`` pixel rectangles -> normalized yxyx, first occurrences of
    exact duplicates only, empty ones dropped, the first ``max_boxes``."""
    x, y, w, h = rects.T
    boxes = np.stack([y / height, x / width, (y + h) / height, (x + w) / width], axis=-1)
    boxes = np.clip(boxes, 0.0, 1.0).astype(np.float32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes = boxes[keep]
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)][:max_boxes]


# --- the cache ------------------------------------------------------------------------


def cache_dir():
    """The root of tfzoo's caches (see the module docstring)."""
    if os.environ.get("TFZOO_CACHE"):
        return os.path.abspath(os.path.expanduser(os.environ["TFZOO_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "tfzoo")


def image_key(image):
    """SHA-256 (hex) of a decoded image's pixels and shape: its proposals' cache name."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(repr((image.shape, str(image.dtype))).encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def entry_path(key, settings, root=None):
    """Where the proposals of the image with :func:`image_key` ``key`` are cached."""
    return os.path.join(root or cache_dir(), "proposals", settings.key, key[:2], f"{key}.npy")


def read_entry(path, settings):
    """The cached boxes at ``path``, or None when missing or not trustworthy (unreadable,
    not float32 ``[R, 4]`` with ``R <= max_boxes``, values outside ``[0, 1]``)."""
    try:
        boxes = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    ok = (boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
          and boxes.shape[0] <= settings.max_boxes and bool(np.all(np.isfinite(boxes)))
          and bool(np.all((boxes >= 0.0) & (boxes <= 1.0))))
    return boxes if ok else None


def write_entry(path, boxes):
    """Writes ``boxes`` to ``path`` atomically (no partial file, ever)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic.atomic_file(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(boxes, np.float32), allow_pickle=False)


def cached_selective_search(image, settings=Settings(), root=None):
    """:func:`selective_search` of ``image`` through the cache: read when a good entry
    exists, else computed and written. Returns ``(boxes, computed)``."""
    path = entry_path(image_key(image), settings, root)
    boxes = read_entry(path, settings)
    if boxes is not None:
        return boxes, False
    boxes = selective_search(image, settings)
    write_entry(path, boxes)
    return boxes, True


def _worker_init():
    _cv2().setNumThreads(1)  # one core per process, as the papers' timing


def _worker(job):
    """Searches one image the parent found missing from the cache and writes its entry."""
    image, settings, path = job
    start = time.perf_counter()
    boxes = selective_search(image, settings)
    write_entry(path, boxes)
    return len(boxes), True, time.perf_counter() - start


@dataclasses.dataclass
class ComputeResult:
    """What :func:`compute` did: images seen, computed now, read from the cache, and the
    seconds per computed image (each on one core)."""

    images: int = 0
    computed: int = 0
    cached: int = 0
    seconds_per_image: float = float("nan")
    proposals_per_image: float = float("nan")


def compute(dataset, settings=Settings(), *, workers=None, root=None, progress=True, desc="proposals"):
    """Fills the cache with the selective search proposals of every image of ``dataset``
    (canonical examples, e.g. ``tfzoo.data.load(spec, split)``); images already cached are
    read, not recomputed. ``workers`` processes (default: the CPUs this process may use)
    each search one image on one core; none starts when every image is cached.
    Interrupting keeps every finished entry. Returns a :class:`ComputeResult`."""
    import multiprocessing

    _cv2()  # fail before any work when OpenCV is missing
    workers = max(1, int(workers or _available_cpus()))
    result, seconds, counts = ComputeResult(), [], []

    bar = _bar(progress, desc, _length(dataset))
    pool = None
    lock = threading.Lock()  # the pool's feeder thread records the cached images

    def record(count, computed, elapsed):
        with lock:
            _count(count, computed, elapsed)

    def _count(count, computed, elapsed):
        result.images += 1
        counts.append(count)
        if computed:
            result.computed += 1
            seconds.append(elapsed)
        else:
            result.cached += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(computed=result.computed, cached=result.cached)

    def misses():
        """The images without a good cache entry, to the workers; the others counted here
        (no process pool starts when every image is cached)."""
        for example in dataset.as_numpy_iterator():
            path = entry_path(image_key(example["image"]), settings, root)
            boxes = read_entry(path, settings)
            if boxes is None:
                yield example["image"], settings, path
            else:
                record(len(boxes), False, 0.0)

    try:
        pending = misses()
        first = next(pending, None)
        if first is not None:
            todo = itertools.chain([first], pending)
            if workers == 1:
                _worker_init()
                outcomes = map(_worker, todo)
            else:
                pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init)
                outcomes = pool.imap(_worker, todo, chunksize=1)
            for outcome in outcomes:
                record(*outcome)
            if pool is not None:
                pool.close()
                pool.join()
                pool = None
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.terminate()
    if seconds:
        result.seconds_per_image = float(np.median(seconds))
    if counts:
        result.proposals_per_image = float(np.mean(counts))
    return result


def _available_cpus():
    """The CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _length(dataset):
    import tensorflow as tf

    n = int(dataset.cardinality())
    return n if n >= 0 and n != tf.data.INFINITE_CARDINALITY else None


def _bar(enabled, desc, total):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, total=total, unit="img", file=sys.stderr, dynamic_ncols=True, disable=None)


# --- a user's file --------------------------------------------------------------------


def load_json(path, sizes, report=None, max_boxes=None, subset=False):
    """A user's proposals: ``{image_id: float32 [R, 4] normalized yxyx}`` for the images of
    ``sizes`` (``{image_id: (height, width)}`` in pixels, the dataset's), read from the JSON
    object at ``path`` (``{image_id: [[x1, y1, x2, y2], ...]}`` in pixels, best first).
    Every problem goes to ``report`` (:class:`tfzoo.data.validate.Report`) naming the file,
    the image id and the row; the rest is kept. Images of ``sizes`` the file does not list
    get no proposals (counted in the report's notes). ``subset=True``: ``sizes`` holds part
    of a split only (the first images), so ids outside it are not reported."""
    from tfzoo.data import validate

    report = validate.ensure_report(report)
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        report.fatal(path, "", validate.MALFORMED_ANNOTATION, str(e))
    if not isinstance(payload, dict):
        report.fatal(path, "", validate.MALFORMED_ANNOTATION,
                     f"expected an object {{image_id: [[x1, y1, x2, y2], ...]}}, got {type(payload).__name__}")
    out = {}
    for image_id, rows in payload.items():
        if image_id not in sizes:
            if not subset:
                report.add(path, image_id, UNKNOWN_ID, SKIPPED_PROPOSALS, "not an image of the dataset split")
            continue
        if not isinstance(rows, list):
            report.add(path, image_id, validate.MALFORMED_ANNOTATION, SKIPPED_PROPOSALS,
                       f"expected a list of [x1, y1, x2, y2], got {type(rows).__name__}")
            continue
        out[image_id] = _checked_rows(rows, sizes[image_id], path, image_id, report)[:max_boxes]
    missing = [i for i in sizes if i not in out]
    report.note(NOTE_NO_PROPOSALS, len(missing))
    for image_id in missing:
        out[image_id] = np.zeros([0, 4], np.float32)
    return out


def _checked_rows(rows, size, path, image_id, report):
    from tfzoo.data import validate

    height, width = size
    kept = []
    for index, row in enumerate(rows):
        where = f"{image_id} row {index}"
        if not (isinstance(row, list) and len(row) == 4 and all(_is_number(v) for v in row)):
            report.add(path, where, validate.MALFORMED_ANNOTATION, validate.DROPPED_BOX,
                       f"expected [x1, y1, x2, y2] numbers, got {str(row)[:60]}")
            continue
        x1, y1, x2, y2 = (float(v) for v in row)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            report.add(path, where, validate.NON_FINITE, validate.DROPPED_BOX, str(row))
            continue
        if x2 < x1 or y2 < y1:
            report.add(path, where, validate.INVERTED, validate.DROPPED_BOX, str(row))
            continue
        if x2 == x1 or y2 == y1:
            report.add(path, where, validate.ZERO_AREA, validate.DROPPED_BOX, str(row))
            continue
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            report.add(path, where, validate.OUTSIDE, validate.DROPPED_BOX, f"{row} in a {width}x{height} image")
            continue
        tolerance = validate.CLIP_TOLERANCE_PX
        if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
            report.add(path, where, validate.PARTLY_OUTSIDE, validate.CLIPPED_BOX, f"{row} in a {width}x{height} image")
        kept.append([max(y1, 0.0) / height, max(x1, 0.0) / width, min(y2, height) / height, min(x2, width) / width])
    return np.asarray(kept, np.float32).reshape(-1, 4)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- recall ---------------------------------------------------------------------------


def recall(proposals, ground_truth, tops=RECALL_TOPS, ious=RECALL_IOUS):
    """The papers' proposal recall: for each top-N cut-off and IoU threshold, the share of
    ground-truth boxes (all images together) that one of the image's first N proposals
    covers at that IoU or more. ``proposals``, ``ground_truth``: lists (one entry per image)
    of ``[R, 4]`` and ``[G, 4]`` boxes in the same coordinates. Returns
    ``{(top, iou): recall}``; NaN when there is no ground truth."""
    from tfzoo.ops import boxes as box_ops

    best = {top: [] for top in tops}
    for props, gt in zip(proposals, ground_truth):
        gt = np.asarray(gt, np.float32).reshape(-1, 4)
        if not len(gt):
            continue
        props = np.asarray(props, np.float32).reshape(-1, 4)
        overlaps = box_ops.iou(props, gt).numpy() if len(props) else np.zeros([0, len(gt)], np.float32)  # [R, G]
        for top in tops:
            cut = overlaps[:top]
            best[top].append(cut.max(axis=0) if len(cut) else np.zeros(len(gt), np.float32))
    out = {}
    for top in tops:
        values = np.concatenate(best[top]) if best[top] else np.zeros([0], np.float32)
        for threshold in ious:
            out[(top, threshold)] = float(np.mean(values >= threshold)) if len(values) else float("nan")
    return out


# --- proposals in tf.data -------------------------------------------------------------

#: The proposal sources a proposal-based preset accepts (its ``proposals`` setting).
SOURCE_FORMS = ("ss:fast", "ss:quality", "json:PATH")


def parse_source(text):
    """``"ss:fast"`` / ``"ss:quality"`` -> the selective search method; ``"json:PATH"`` ->
    the file path. Returns ``(kind, value)`` with kind ``"ss"`` or ``"json"``."""
    kind, sep, value = str(text).partition(":")
    if kind == "ss" and sep and value in METHODS:
        return kind, value
    if kind == "json" and sep and value:
        return kind, value
    raise ValueError(f"unknown proposal source {text!r}; accepted forms: {', '.join(SOURCE_FORMS)}")


def attach(dataset, source, *, root=None):
    """``dataset``'s canonical examples with their ``proposals`` float32 ``[R, 4]``.

    ``source``: :class:`Settings` (selective search through the cache; an image missing
    from it is searched on the spot, so run :func:`compute` first for speed) or the dict of
    :func:`load_json` (looked up by ``image_id``; an id it lacks gets no proposals).
    """
    import tensorflow as tf

    from tfzoo.data import schema

    if isinstance(source, Settings):
        def lookup(image):
            return cached_selective_search(image, source, root)[0]

        key = schema.IMAGE
    elif isinstance(source, dict):
        empty = np.zeros([0, 4], np.float32)

        def lookup(image_id):
            return source.get(image_id.decode("utf-8"), empty)

        key = schema.IMAGE_ID
    else:
        raise TypeError(f"source must be proposals.Settings or a dict from load_json, got {type(source).__name__}")

    def add(example):
        boxes = tf.numpy_function(lookup, [example[key]], tf.float32, stateful=False)
        return {**example, schema.PROPOSALS: tf.ensure_shape(boxes, [None, 4])}

    return dataset.map(add, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def for_image(image, source, max_proposals=DEFAULT_MAX_BOXES, *, root=None, cache=True):
    """The proposals of one uint8 ``[H, W, 3]`` image by a model's ``proposals`` setting:
    selective search through the cache (``cache=False``: searched again, as for an image
    never seen, which is what timing a detector must pay). A file source (``json:PATH``)
    names boxes per dataset image id, which a bare image lacks: pass its proposals
    explicitly then."""
    kind, value = parse_source(source)
    if kind != "ss":
        raise ValueError(f"this model's proposals come from a file ({value}), keyed by image id: pass the "
                         "image's proposals explicitly")
    settings = Settings.cached(value, max_proposals)
    if not cache:
        return selective_search(image, settings)
    return cached_selective_search(image, settings, root)[0]


def image_sizes(dataset):
    """``{image_id: (height, width)}`` of a dataset's examples (what :func:`load_json`
    checks a user's boxes against)."""
    return {example["image_id"].decode("utf-8"): tuple(int(d) for d in example["image"].shape[:2])
            for example in dataset.as_numpy_iterator()}


def dataset_recall(dataset, source, *, root=None, tops=RECALL_TOPS, ious=RECALL_IOUS, max_boxes=None):
    """:func:`recall` of ``source``'s proposals (see :func:`attach`) over a dataset's
    examples against their ground-truth boxes (crowd boxes excluded, as the evaluator
    does); also the mean and smallest number of proposals per image. Returns a dict
    ``{"recall": {"top@iou": value}, "proposals_per_image", "min_proposals", "images",
    "objects"}``. ``max_boxes``: only each image's first proposals count."""
    props, truth = [], []
    for example in attach(dataset, source, root=root).as_numpy_iterator():
        props.append(example["proposals"][:max_boxes])
        crowd = example.get("is_crowd", np.zeros(len(example["boxes"]), bool))
        truth.append(example["boxes"][~crowd.astype(bool)])
    values = recall(props, truth, tops, ious)
    counts = [len(p) for p in props]
    return {"recall": {f"{top}@{threshold}": value for (top, threshold), value in values.items()},
            "proposals_per_image": float(np.mean(counts)) if counts else float("nan"),
            "min_proposals": int(min(counts)) if counts else 0,
            "images": len(props), "objects": int(sum(len(t) for t in truth))}


def for_config(examples, config, *, progress=True, desc="proposals", report=None, root=None, workers=None,
               subset=False):
    """``examples`` with the proposals a proposal-based detector's ``config`` asks for
    (its ``proposals`` setting, :data:`SOURCE_FORMS`): selective search fills the cache
    first (:func:`compute`, a progress bar when ``progress``), a user's file is checked
    against these examples (:func:`load_json`; problems go to ``report``, else warned in
    one line each; ``subset``: the examples are part of a split, see :func:`load_json`). A
    config without a ``proposals`` setting returns ``examples`` as they are. Returns ``(examples, seconds)``: the seconds spent computing proposals."""
    def setting(name):  # a config dataclass, or an export's config dict
        return config.get(name) if isinstance(config, dict) else getattr(config, name, None)

    source_text = setting("proposals")
    if source_text is None:
        return examples, 0.0
    start = time.perf_counter()
    kind, value = parse_source(source_text)
    if kind == "ss":
        settings = Settings.cached(value, setting("max_proposals"))
        compute(examples, settings, workers=workers, root=root, progress=progress, desc=desc)
        return attach(examples, settings, root=root), time.perf_counter() - start
    from tfzoo.data import validate

    own = report is None
    report = validate.ensure_report(report)
    source = load_json(value, image_sizes(examples), report, subset=subset)
    if own and len(report):
        import warnings

        warnings.warn(f"{value}: {len(report)} problems in the proposals file: " + "; ".join(report.summary()))
    return attach(examples, source), time.perf_counter() - start
