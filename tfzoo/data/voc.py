"""Pascal VOC reader (and writer) for datasets in the VOCdevkit layout.

Layout, under ``root``::

    VOC2007/                       # root may be this folder, or a folder (e.g. VOCdevkit,
      Annotations/<stem>.xml       #   or the folder holding VOCdevkit) containing exactly
      JPEGImages/<stem>.jpg        #   one VOC20xx folder
      ImageSets/Main/<split>.txt   # one stem per line: train, val, trainval, test, ...
      labels.txt                   # optional: class names, one per line, in class-id order

**Class list** (:func:`class_names`), in this order of preference:

1. ``labels.txt`` in the VOC20xx folder or in the folder passed as ``root``;
2. otherwise the names found across *all* ``Annotations/*.xml`` (every split, so train and
   val agree): if they are all standard VOC names, the 20 :data:`VOC_CLASSES` in the
   standard order (ids match every VOC model); else the sorted set of names found;
3. no names at all: :data:`VOC_CLASSES`.

A typo in one XML (``dgo``) turns case 2 into a sorted list including it; ship a
``labels.txt`` to pin the classes (then unknown names are ``unknown class`` problems).

**Coordinates**: VOC boxes are 1-based, inclusive pixel indices. Pixel ``i`` (1-based)
covers ``[i - 1, i]`` in continuous coordinates, so ``x1 = (xmin - 1) / W``,
``x2 = xmax / W`` (same for y), and a box with ``xmin == xmax`` is one pixel wide; a box is
zero-area when ``xmax == xmin - 1`` and inverted below that. :func:`write` inverts it
exactly for integer boxes (``xmin = round(x1 * W) + 1``, ``xmax = round(x2 * W)``).
``W``/``H`` are the image's size after EXIF orientation (the boxes refer to the oriented
image); the ``<size>`` in the XML is only checked against it (``image size mismatch``).

**Image file**: ``JPEGImages/<filename>`` from the XML, or ``JPEGImages/<stem>.jpg`` when
the XML has none or names a file that does not exist but ``<stem>.jpg`` does. Either must
stay inside ``JPEGImages`` or the dataset root (no ``..``, absolute paths, or symlinks
resolving outside); a folder-level symlink (``JPEGImages -> /mnt/...``) is fine.

``image_id`` is the stem. ``difficult`` is kept as a flag (``<difficult>1``); ``is_crowd``
is always False. XML is parsed with ``defusedxml`` (entity expansion, "billion laughs",
external entities are refused as ``malformed annotation``).
"""
from __future__ import annotations

import functools
import math
import os
import pathlib
import re
import xml.etree.ElementTree as ElementTree

import defusedxml
import defusedxml.ElementTree as SafeElementTree
import numpy as np

from tfzoo.data import images, validate

#: The 20 Pascal VOC classes in the standard (devkit) order.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

LABELS_FILE = "labels.txt"
_VOC_DIR = re.compile(r"^VOC\d{4}$")


# --- layout -------------------------------------------------------------------------


def _is_voc_dir(path):
    return (path / "Annotations").is_dir() and (path / "ImageSets").is_dir()


def resolve_root(root):
    """The VOC20xx folder for ``root`` (itself, or its only VOC20xx folder, or VOCdevkit's).

    Raises ``DataError`` when there is none or more than one.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise validate.DataError(f"{root}: not a folder")
    if _is_voc_dir(root):
        return root
    for parent in (root, root / "VOCdevkit"):
        if not parent.is_dir():
            continue
        found = sorted(p for p in parent.iterdir() if p.is_dir() and _VOC_DIR.match(p.name) and _is_voc_dir(p))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(str(p) for p in found)
            raise validate.DataError(f"{root}: several VOC folders ({names}); pass one of them")
    raise validate.DataError(
        f"{root}: no VOC layout (Annotations/, ImageSets/Main/ and JPEGImages/) here or in one VOC20xx folder"
    )


def splits(root):
    """Split names available under ``ImageSets/Main`` (files without an underscore)."""
    main = resolve_root(root) / "ImageSets" / "Main"
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []


# --- class list ---------------------------------------------------------------------


def _read_labels(path):
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    seen = set()
    for n in names:
        if n in seen:
            raise validate.DataError(f"{path}: class {n!r} listed twice")
        seen.add(n)
    if not names:
        raise validate.DataError(f"{path}: no class names")
    return names


@functools.lru_cache(maxsize=16)
def _names_in_annotations(annotations_dir, _stamp):
    """Set of object names across every XML of a folder (malformed files skipped)."""
    names = set()
    for path in sorted(pathlib.Path(annotations_dir).glob("*.xml")):
        try:
            tree = SafeElementTree.parse(path)
        except (ElementTree.ParseError, defusedxml.DefusedXmlException, OSError, ValueError):
            continue  # scan() reports it
        for obj in tree.getroot().findall("object"):
            name = (obj.findtext("name") or "").strip()
            if name:
                names.add(name)
    return frozenset(names)


def _stamp(folder):
    """Changes whenever a file of ``folder`` is added, removed or rewritten (cache key)."""
    with os.scandir(folder) as entries:
        stats = [e.stat() for e in entries if e.name.endswith(".xml")]
    return (folder.stat().st_mtime_ns, len(stats), max((s.st_mtime_ns for s in stats), default=0),
            sum(s.st_size for s in stats))


def class_names(root):
    """Class names in class-id order (see the module docstring for where they come from)."""
    given = pathlib.Path(root)
    voc_root = resolve_root(given)
    for candidate in (voc_root / LABELS_FILE, given / LABELS_FILE):
        if candidate.is_file():
            return _read_labels(candidate)
    annotations = voc_root / "Annotations"
    names = _names_in_annotations(str(annotations.resolve()), _stamp(annotations))
    if not names or names <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(names)


# --- reading ------------------------------------------------------------------------


def _parse_annotation(path, class_ids, report):
    """One XML -> dict(filename, size, objects) or None (problem reported)."""
    try:
        tree = SafeElementTree.parse(path)
    except defusedxml.DefusedXmlException as e:
        report.add(path, "", validate.MALFORMED_ANNOTATION, validate.SKIPPED_IMAGE, f"forbidden XML: {e!r}")
        return None
    except ElementTree.ParseError as e:
        report.add(path, "", validate.MALFORMED_ANNOTATION, validate.SKIPPED_IMAGE, f"XML parse error: {e}")
        return None
    except (OSError, ValueError) as e:
        report.add(path, "", validate.MALFORMED_ANNOTATION, validate.SKIPPED_IMAGE, str(e))
        return None
    node = tree.getroot()
    if node.tag != "annotation":
        report.add(path, "", validate.MALFORMED_ANNOTATION, validate.SKIPPED_IMAGE, f"root element <{node.tag}>")
        return None
    filename = (node.findtext("filename") or "").strip()
    size = None
    width = validate.to_float(node.findtext("size/width"))
    height = validate.to_float(node.findtext("size/height"))
    if width is not None and height is not None and 0 < width < math.inf and 0 < height < math.inf:
        size = (int(height), int(width))

    objects = []
    for k, obj in enumerate(node.findall("object")):
        record = f"object {k}"
        name = (obj.findtext("name") or "").strip()
        if name not in class_ids:
            report.add(path, record, validate.UNKNOWN_CLASS, validate.DROPPED_BOX, f"name {name!r}")
            continue
        values = {}
        for field in ("xmin", "ymin", "xmax", "ymax"):
            text = obj.findtext(f"bndbox/{field}")
            values[field] = validate.to_float(text)
        bad = [f"{f}={obj.findtext(f'bndbox/{f}')!r}" for f, v in values.items() if v is None]
        if bad:
            report.add(path, record, validate.NON_NUMERIC, validate.DROPPED_BOX, ", ".join(bad))
            continue
        difficult_text = obj.findtext("difficult")
        difficult = False
        if difficult_text is not None and difficult_text.strip():
            value = validate.to_float(difficult_text)
            if value is None:
                detail = f"difficult={difficult_text!r}"
                report.add(path, record, validate.NON_NUMERIC, "kept box, not difficult", detail)
            else:
                difficult = value != 0
        box_px = [values["ymin"] - 1.0, values["xmin"] - 1.0, values["ymax"], values["xmax"]]
        objects.append((record, box_px, class_ids[name], False, difficult))
    return {"filename": filename, "size": size, "objects": objects}


def scan(root, split, *, strict=False, report=None, check_images=True, max_pixels=images.MAX_PIXELS):
    """Validated index of one split: a list of records, one per usable image, in split order.

    Each record: ``image_id`` (stem), ``path`` (image file), ``annotation`` (XML file),
    ``height``, ``width`` (after EXIF orientation), ``boxes`` float32 ``[G, 4]`` normalized
    ``[y1, x1, y2, x2]``, ``classes`` int32 ``[G]``, ``difficult`` and ``is_crowd`` bool ``[G]``.

    ``check_images``: True reads every image header (missing, empty, non-image, too-large
    files found here; sizes from the image); ``"decode"`` also decodes every image (finds
    truncated data, slow); False trusts the XML ``<size>`` and only checks that files exist.
    Every problem goes to ``report`` (created if None); ``strict`` raises ``DataError`` on
    the first one, before anything is returned. A missing split file or a stem listed twice
    is always fatal.
    """
    report = validate.ensure_report(report, strict)
    voc_root = resolve_root(root)
    names = class_names(root)
    class_ids = {n: i for i, n in enumerate(names)}
    split_file = voc_root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        report.fatal(split_file, "", "missing split file", f"available splits: {splits(root) or 'none'}")
    stems, seen = [], {}
    for line_no, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        stem = parts[0]
        if stem in seen:
            report.fatal(split_file, f"line {line_no}", "duplicate image id", f"{stem!r} also on line {seen[stem]}")
        seen[stem] = line_no
        stems.append(stem)

    annotations_dir = voc_root / "Annotations"
    images_dir = voc_root / "JPEGImages"
    allowed_ann = (annotations_dir, voc_root)
    allowed_img = (images_dir, voc_root)

    parsed = []  # candidates of images.build_records
    for stem in stems:
        xml_path, why = validate.resolve_inside(f"{stem}.xml", annotations_dir, allowed_ann)
        if xml_path is None:
            report.add(split_file, stem, validate.PATH_ESCAPES, validate.SKIPPED_IMAGE, why)
            continue
        if not xml_path.is_file():
            detail = f"listed in {split_file.name}"
            report.add(xml_path, "", validate.MISSING_ANNOTATION, validate.SKIPPED_IMAGE, detail)
            continue
        ann = _parse_annotation(xml_path, class_ids, report)
        if ann is None:
            continue
        image_path, why = validate.resolve_inside(ann["filename"] or f"{stem}.jpg", images_dir, allowed_img)
        if image_path is None:
            report.add(xml_path, "filename", validate.PATH_ESCAPES, validate.SKIPPED_IMAGE, why)
            continue
        if ann["filename"] and not image_path.exists() and (images_dir / f"{stem}.jpg").exists():
            image_path, _ = validate.resolve_inside(f"{stem}.jpg", images_dir, allowed_img)
            report.note("used <stem>.jpg for a missing <filename>")
        parsed.append(
            {
                "image_id": stem,
                "path": image_path,
                "annotation": xml_path,
                "size": ann["size"],
                "size_record": "size",
                "objects": ann["objects"],
            }
        )

    return images.build_records(parsed, report, check_images=check_images, max_pixels=max_pixels)


def load(root, split, *, strict=False, report=None, check_images=True, max_pixels=images.MAX_PIXELS):
    """``tf.data.Dataset`` of canonical examples of one split: :func:`scan`, then decoding
    in tf.data (:func:`tfzoo.data.images.load_scanned` says what is checked when)."""
    return images.load_scanned(scan, root, split, strict=strict, report=report, check_images=check_images,
                               max_pixels=max_pixels)


# --- writing ------------------------------------------------------------------------




def write(examples, root, split, class_names):
    """Writes canonical examples as a VOC20xx-layout folder at ``root``; returns the stems.

    Creates ``JPEGImages/<stem>.jpg`` (quality 95), ``Annotations/<stem>.xml``,
    ``ImageSets/Main/<split>.txt`` and ``labels.txt`` (the class list, so ids round-trip).
    The stem is the example's ``image_id`` when it is a safe file name, else a 6-digit
    index. Crowd boxes and padding rows (negative class) are left out (VOC has no crowd
    flag); ``difficult`` is kept. A class id ``>= len(class_names)`` raises ``ValueError``.
    Boxes are written as integer 1-based inclusive pixels (see the module docstring).
    """
    from xml.sax.saxutils import escape  # noqa: PLC0415

    root = pathlib.Path(root)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    labels = root / LABELS_FILE
    text = "".join(f"{n}\n" for n in class_names)
    if labels.is_file() and labels.read_text(encoding="utf-8") != text:
        raise ValueError(f"{labels} exists with other class names")
    labels.write_text(text, encoding="utf-8")

    stems, taken = [], set()
    for index, example in enumerate(examples):
        ex = images.numpy_example(example)
        image = np.asarray(ex["image"], np.uint8)
        height, width = image.shape[:2]
        image_id = str(ex.get("image_id") or "")
        stem = images.file_stem(image_id, index)
        if stem in taken:
            raise ValueError(f"image_id {stem!r} appears twice")
        taken.add(stem)
        stems.append(stem)
        images.write_jpeg(image, root / "JPEGImages" / f"{stem}.jpg")
        boxes = np.asarray(ex["boxes"], np.float64).reshape(-1, 4)
        classes = np.asarray(ex["classes"]).reshape(-1)
        crowd = np.asarray(ex.get("is_crowd", np.zeros(len(classes), bool)), bool).reshape(-1)
        difficult = np.asarray(ex.get("difficult", np.zeros(len(classes), bool)), bool).reshape(-1)
        keep = validate.writable_rows(classes, len(class_names), f"image_id {image_id!r}")
        objects = []
        for box, cls, is_crowd, is_difficult, is_object in zip(boxes, classes, crowd, difficult, keep):
            if is_crowd or not is_object:
                continue
            y1, x1, y2, x2 = box * [height, width, height, width]
            xmin, ymin = int(round(x1)) + 1, int(round(y1)) + 1
            xmax, ymax = max(int(round(x2)), xmin), max(int(round(y2)), ymin)
            objects.append(
                "  <object>\n"
                f"    <name>{escape(class_names[int(cls)])}</name>\n"
                "    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
                f"    <difficult>{int(is_difficult)}</difficult>\n"
                f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>\n"
                "  </object>\n"
            )
        xml = (
            "<annotation>\n"
            f"  <folder>{escape(root.name)}</folder>\n"
            f"  <filename>{stem}.jpg</filename>\n"
            f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>\n"
            "  <segmented>0</segmented>\n" + "".join(objects) + "</annotation>\n"
        )
        (root / "Annotations" / f"{stem}.xml").write_text(xml, encoding="utf-8")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems), encoding="utf-8")
    return stems
