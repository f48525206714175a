"""Validation records shared by every reader: one :class:`Problem` per bad record.

Readers are lenient by default: they skip (or repair) the bad record, keep going and add a
:class:`Problem` to the :class:`Report`. With ``strict=True`` the first problem raises
:class:`DataError` before any work is done. Structural problems (broken JSON, duplicate
ids, missing categories) raise :class:`DataError` in both modes (:meth:`Report.fatal`).

Normal conversions (palette or grayscale to RGB, 16-bit scaled, EXIF orientation applied,
images without objects kept as negatives) are not problems: they are counted in
:attr:`Report.notes` and never raise, not even in strict mode.

Every reader checks the same things, with the problem names below, so a report reads the
same whatever the format:

==========================  ==================  =============================================
problem                     action              when
==========================  ==================  =============================================
``missing image file``      ``skipped image``   the annotated image does not exist
``empty file``              ``skipped image``   0 bytes
``not an image``            ``skipped image``   PIL cannot identify it
``corrupt image``           ``skipped image``   broken header, truncated or undecodable data
``image too large``         ``skipped image``   above ``max_pixels``, refused from the header
``unsupported image mode``  ``skipped image``   e.g. float (``F``) images
``path escapes dataset      ``skipped image``   ``..``, absolute path, or a symlink to
root``                                          outside the dataset
``malformed annotation``    ``skipped image``   unparsable XML, forbidden XML entities, ...
``missing annotation        ``skipped image``   listed in the split but no annotation file
file``
``image size mismatch``     ``used image        annotated size differs from the image's
                            size``              (after EXIF orientation)
``non-numeric field``       ``dropped box``     a coordinate that is not a number
``non-finite coordinate``   ``dropped box``     NaN or Inf
``non-numeric field``       ``used box area``   COCO ``area`` that is not a number >= 0
``unknown class``           ``dropped box``     class name/id outside the label map
``zero-area box``           ``dropped box``     ``x2 == x1`` or ``y2 == y1``
``inverted box``            ``dropped box``     ``x2 < x1`` or ``y2 < y1``
``box outside image``       ``dropped box``     no overlap with the image
``box partly outside        ``clipped box``     overhangs the image by more than
image``                                         :data:`CLIP_TOLERANCE_PX`
``duplicate box``           ``dropped box``     same image, class, crowd flag and coordinates
==========================  ==================  =============================================
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import pathlib

import numpy as np

# --- problem and action names (stable: tests and users match on them) ----------------

MISSING_IMAGE = "missing image file"
EMPTY_FILE = "empty file"
NOT_AN_IMAGE = "not an image"
CORRUPT_IMAGE = "corrupt image"
IMAGE_TOO_LARGE = "image too large"
UNSUPPORTED_IMAGE = "unsupported image mode"
PATH_ESCAPES = "path escapes dataset root"
MALFORMED_ANNOTATION = "malformed annotation"
MISSING_ANNOTATION = "missing annotation file"
SIZE_MISMATCH = "image size mismatch"
NON_NUMERIC = "non-numeric field"
NON_FINITE = "non-finite coordinate"
UNKNOWN_CLASS = "unknown class"
ZERO_AREA = "zero-area box"
INVERTED = "inverted box"
OUTSIDE = "box outside image"
PARTLY_OUTSIDE = "box partly outside image"
DUPLICATE = "duplicate box"
#: ``area`` of a box whose annotation gives no area (:data:`tfzoo.data.schema.AREA`);
#: evaluation uses the box area instead.
NO_AREA = -1.0

SKIPPED_IMAGE = "skipped image"
DROPPED_BOX = "dropped box"
CLIPPED_BOX = "clipped box"
USED_IMAGE_SIZE = "used image size"
USED_BOX_AREA = "used box area"
FATAL = "stopped"

#: Boxes overhanging the image by at most this many pixels (rounding in the annotation
#: tool, VOC's 1-based ``xmin = 0``) are clipped silently and only counted in the notes.
CLIP_TOLERANCE_PX = 1.0

#: Note name for images kept with no objects (negatives).
NOTE_NEGATIVE = "image without objects (kept as negative)"
NOTE_SUBPIXEL_CLIP = "clipped sub-pixel overhang"


class DataError(ValueError):
    """A dataset problem that stops loading; its message names the file and the record.

    ``problem`` is the :class:`Problem` that caused it (``None`` when raised directly).
    """

    def __init__(self, message, problem=None):
        super().__init__(message)
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class Problem:
    """One validation finding.

    ``file``: the file concerned (annotation or image); ``record``: the annotation id,
    object index or field inside it (``""`` when the whole file is concerned);
    ``problem``: what is wrong, one of the names above; ``action``: what was done
    (``skipped image``, ``dropped box``, ``clipped box`` ...); ``detail``: specifics
    (values, parser message), kept out of ``problem`` so that summaries group.
    """

    file: str
    record: str
    problem: str
    action: str
    detail: str = ""

    def __str__(self):
        where = f"{self.file}" + (f" [{self.record}]" if self.record else "")
        detail = f": {self.detail}" if self.detail else ""
        return f"{where}: {self.problem}{detail} ({self.action})"


class Report:
    """Collects :class:`Problem` records; raises on the first one when ``strict``.

    ``notes`` counts normal conversions (``Counter`` of names); they never raise.
    """

    def __init__(self, strict=False):
        self.strict = strict
        self.problems: list[Problem] = []
        self.notes: collections.Counter = collections.Counter()

    def add(self, file, record, problem, action, detail=""):
        item = Problem(str(file), str(record), problem, action, str(detail))
        if self.strict:
            raise DataError(_message(item), item)
        self.problems.append(item)
        return item

    def fatal(self, file, record, problem, detail=""):
        """Records a structural problem and raises :class:`DataError`, strict or not."""
        item = Problem(str(file), str(record), problem, FATAL, str(detail))
        self.problems.append(item)
        raise DataError(_message(item), item)

    def note(self, name, count=1):
        """Counts a normal conversion (not a problem)."""
        if count:
            self.notes[name] += count

    def select(self, problem=None, action=None):
        """The problems with this ``problem`` and/or ``action`` name, in order."""
        return [
            p
            for p in self.problems
            if (problem is None or p.problem == problem) and (action is None or p.action == action)
        ]

    def __len__(self):
        return len(self.problems)

    def __iter__(self):
        return iter(self.problems)

    def to_json(self):
        return [dataclasses.asdict(p) for p in self.problems]

    def summary(self):
        """One line per distinct (problem, action), with counts."""
        counts = {}
        for p in self.problems:
            counts[(p.problem, p.action)] = counts.get((p.problem, p.action), 0) + 1
        return [f"{n} x {problem} ({action})" for (problem, action), n in sorted(counts.items())]

    def notes_summary(self):
        """One line per note name, with counts."""
        return [f"{n} x {name}" for name, n in sorted(self.notes.items())]

    def __repr__(self):
        return f"Report(strict={self.strict}, problems={json.dumps(self.to_json())[:200]})"


def problems_warning(report, spec, split, doing="", shown=3):
    """The warning of a command that went on without the bad records of ``spec [split]``:
    how many problems, by kind, the first ``shown`` in full (file, record, problem, what
    was done) and the ``tfzoo inspect`` command that lists them all; ``None`` when
    ``report`` holds none. ``doing``: what went on (``"training went on without them"``)."""
    if not len(report):
        return None
    problems = list(report)
    first = "; ".join(str(p) for p in problems[:shown])
    if len(problems) > shown:
        first += f"; and {len(problems) - shown} more"
    return (f"{spec} [{split}]: {len(problems)} data problems were repaired or skipped"
            f"{' (' + doing + ')' if doing else ''}: {', '.join(report.summary())}. {first}. "
            f"'tfzoo inspect --data {spec} --split {split}' lists them all; --strict stops at the first")


def _message(item):
    where = f"{item.file}" + (f" [{item.record}]" if item.record else "")
    return f"{where}: {item.problem}" + (f" ({item.detail})" if item.detail else "")


def ensure_report(report=None, strict=False):
    """The report a reader writes to: a new one, or ``report`` made strict if ``strict``."""
    if report is None:
        return Report(strict=strict)
    if strict:
        report.strict = True
    return report


# --- paths --------------------------------------------------------------------------


def resolve_inside(name, base, roots):
    """Joins annotation path ``name`` to directory ``base`` and checks it stays inside.

    ``roots``: directories the resolved file may live in (typically the image folder and
    the dataset root, both resolved, so a folder-level symlink such as
    ``train2017 -> /mnt/coco/train2017`` is allowed). Backslashes count as separators.
    Returns ``(path, "")`` or ``(None, reason)`` for an absolute path, a ``..`` that leaves
    ``base`` (even into another root), or a file or symlink resolving outside the roots.
    The file need not exist.
    """
    text = str(name).replace("\\", "/")
    if not text:
        return None, "empty path"
    if text.startswith("/") or pathlib.PurePosixPath(text).is_absolute() or pathlib.PureWindowsPath(text).drive:
        return None, f"absolute path {name!r}"
    joined = pathlib.Path(base) / text
    allowed = [_real(os.fspath(r)) for r in roots]

    def inside(p):
        return any(p == r or r in p.parents for r in allowed)

    if ".." in pathlib.PurePosixPath(text).parts:
        lexical = pathlib.Path(os.path.normpath(os.path.abspath(joined)))
        if pathlib.Path(os.path.normpath(os.path.abspath(base))) not in lexical.parents:
            return None, f"{name!r} leaves its folder with '..'"
    resolved = pathlib.Path(os.path.realpath(joined))
    if not inside(resolved):
        return None, f"{name!r} resolves to {resolved}, outside the dataset"
    return joined, ""


@functools.lru_cache(maxsize=64)
def _real(path):
    """``realpath`` of a dataset folder, cached (called once per annotated file)."""
    return pathlib.Path(os.path.realpath(path))


# --- fields -------------------------------------------------------------------------


def to_float(value):
    """A JSON number or numeric text -> float (NaN/Inf kept); ``None`` when not numeric.

    Booleans are not numbers here; strings are accepted only from XML text (pass ``str``).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def writable_rows(classes, num_classes, where):
    """Which ground-truth rows a writer writes: ``classes [G]`` -> ``keep [G]`` bool.

    Rows with a negative class are padding (``schema.PAD_CLASS``, e.g. after
    ``padded_batch`` + ``unbatch``) and are left out; any other id outside ``0..C-1``
    raises ``ValueError`` naming ``where``, rather than being written as a wrong class.
    """
    classes = np.asarray(classes).reshape(-1)
    if classes.size and (classes.max() >= num_classes or not np.all(classes == np.round(classes))):
        raise ValueError(f"{where}: class ids must be integers in 0..{num_classes - 1}, got {classes.tolist()}")
    return classes >= 0


# --- boxes --------------------------------------------------------------------------


def clean_boxes(entries, report):
    """Validates the pixel boxes of many images at once; the one box check every reader uses.

    ``entries``: list of dicts, one per image, with ``boxes_px`` float ``[G, 4]`` pixel
    ``[y1, x1, y2, x2]`` (NaN allowed), ``classes`` int ``[G]``, ``is_crowd`` bool ``[G]``,
    ``height``, ``width`` (of the oriented image), ``file`` (named in problems) and
    ``records`` (``G`` strings naming each box). Boxes already reported as non-numeric or of
    an unknown class must have been removed by the reader.

    In order, per box: non-finite -> dropped; inverted or zero-area -> dropped; no overlap
    with the image -> dropped; overhang above :data:`CLIP_TOLERANCE_PX` -> clipped with a
    problem (below it, clipped and noted); same image, class, crowd flag and (clipped)
    coordinates as an earlier box -> dropped. Uses :mod:`tfzoo.ops.boxes` for validity and
    clipping over all boxes of all images in one call.

    Returns one ``(keep [G] bool, boxes [G, 4] float32 normalized and clipped)`` per entry;
    ``boxes[keep]`` are the boxes to use.
    """
    from tfzoo.ops import boxes as box_ops  # TensorFlow only when boxes are cleaned

    counts = [len(e["boxes_px"]) for e in entries]
    total = sum(counts)
    if total == 0:
        return [(np.zeros([0], bool), np.zeros([0, 4], np.float32)) for _ in entries]
    px = np.concatenate([np.asarray(e["boxes_px"], np.float64).reshape(-1, 4) for e in entries])
    heights = np.repeat([float(e["height"]) for e in entries], counts)
    widths = np.repeat([float(e["width"]) for e in entries], counts)
    classes = np.concatenate([np.asarray(e["classes"], np.int64).reshape(-1) for e in entries])
    crowd = np.concatenate([np.asarray(e["is_crowd"], bool).reshape(-1) for e in entries])
    image_index = np.repeat(np.arange(len(entries)), counts)

    valid = box_ops.valid_mask(px).numpy()
    finite = np.isfinite(px).all(axis=1)
    normalized = box_ops.normalize(px, heights, widths)
    clipped = box_ops.clip(normalized).numpy()
    overlaps = box_ops.valid_mask(clipped).numpy()
    scale = np.stack([heights, widths, heights, widths], axis=1)
    with np.errstate(invalid="ignore"):
        overhang = np.where(finite[:, None], np.abs(clipped - normalized.numpy()) * scale, 0.0).max(axis=1)

    keep = valid & overlaps
    reasons = {}
    with np.errstate(invalid="ignore"):
        inverted = (px[:, 2] < px[:, 0]) | (px[:, 3] < px[:, 1])
    for i in np.flatnonzero(~keep):
        if not finite[i]:
            reasons[i] = (NON_FINITE, DROPPED_BOX)
        elif not valid[i]:
            reasons[i] = (INVERTED if inverted[i] else ZERO_AREA, DROPPED_BOX)
        else:
            reasons[i] = (OUTSIDE, DROPPED_BOX)
    for i in np.flatnonzero(keep & (overhang > CLIP_TOLERANCE_PX)):
        reasons[i] = (PARTLY_OUTSIDE, CLIPPED_BOX)
    report.note(NOTE_SUBPIXEL_CLIP, int(np.sum(keep & (overhang > 0) & (overhang <= CLIP_TOLERANCE_PX))))

    # Exact duplicates among kept boxes: same image, class, crowd flag, clipped coordinates.
    kept_rows = np.flatnonzero(keep)
    if len(kept_rows):
        key = np.concatenate(
            [image_index[kept_rows, None], classes[kept_rows, None], crowd[kept_rows, None], clipped[kept_rows]],
            axis=1,
        )
        _, first = np.unique(key, axis=0, return_index=True)
        duplicate_rows = np.setdiff1d(np.arange(len(kept_rows)), first)
        for j in duplicate_rows:
            i = kept_rows[j]
            keep[i] = False
            reasons[i] = (DUPLICATE, DROPPED_BOX)

    offsets = np.concatenate([[0], np.cumsum(counts)])
    for i in sorted(reasons):
        e = entries[image_index[i]]
        problem, action = reasons[i]
        y1, x1, y2, x2 = px[i]
        detail = f"[y1, x1, y2, x2] = [{y1:g}, {x1:g}, {y2:g}, {x2:g}] px in {e['height']} x {e['width']}"
        report.add(e["file"], e["records"][i - offsets[image_index[i]]], problem, action, detail)

    return [
        (keep[offsets[k] : offsets[k + 1]], clipped[offsets[k] : offsets[k + 1]].astype(np.float32))
        for k in range(len(entries))
    ]

