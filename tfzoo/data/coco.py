"""COCO reader (and writer) for datasets in the COCO 2017 layout.

Layout, under ``root``::

    annotations/instances_<split>.json
    <split>/<file_name>            # or images/<split>/<file_name>

**Split names**: ``split`` is used as given when ``instances_<split>.json`` exists;
otherwise ``<split>2017`` is tried, so ``"val"`` reads ``instances_val2017.json``.
Images are looked up in ``root/<split>/``, else ``root/images/<split>/`` (the first that
exists). ``info`` and ``licenses`` are not needed. An image entry without ``file_name``
falls back to the last part of its ``coco_url``.

**Classes**: categories sorted by their own id map to contiguous ids ``0..C-1``:
class ``i`` <-> ``category_ids(root)[i]``, names ``class_names(root)[i]``; lossless both
ways. :func:`class_names`/:func:`category_ids` read ``split``'s file when given, else the
smallest ``instances_*.json`` that reads (all COCO splits share categories, and a broken
train file must not stop the evaluation of a good val file); :func:`scan` refuses a split
file whose categories differ from those.

**Boxes**: ``bbox`` is ``[x, y, w, h]`` in pixels of the image after EXIF orientation
(what COCO tools and viewers show), so ``[y, x, y + h, x + w] / [H, W, H, W]``.
``iscrowd`` is kept as ``is_crowd``; ``difficult`` is always False. ``area`` (the
segment's area, what pycocotools buckets APs/APm/APl by) is kept as ``area``; where it is
absent the evaluator uses the box area, and where it is not a number >= 0 that is a named
problem (the box is kept, its box area used). ``image_id`` is the COCO integer id as
decimal text (``int(image_id)`` gives it back for pycocotools).

**Structural errors are fatal** in both modes (``DataError``): unparsable JSON, missing or
empty ``categories``/``images``, duplicate image, annotation or category ids, duplicate
category names, non-integer ids, annotations pointing at an unknown image, a split none
of whose images are found (the error says where they were looked for, and where they are
when another folder of the dataset holds them).
Everything else (bad boxes, an annotation of a category not in ``categories``, missing or
bad image files, paths escaping the dataset root) is a per-record problem: skipped and
reported, or raised with ``strict=True``.
"""
from __future__ import annotations

import functools
import json
import os
import pathlib

import numpy as np

from tfzoo.data import images, validate
from tfzoo.ops import boxes as box_ops


# --- layout -------------------------------------------------------------------------


def splits(root):
    """Split names with an ``annotations/instances_<split>.json`` file."""
    folder = pathlib.Path(root) / "annotations"
    return sorted(p.stem[len("instances_") :] for p in folder.glob("instances_*.json")) if folder.is_dir() else []


def resolve_split(root, split):
    """``(annotation file, image folder, split name used)``; ``DataError`` when missing."""
    root = pathlib.Path(root)
    candidates = [split] if split.endswith("2017") else [split, f"{split}2017"]
    for name in candidates:
        path = root / "annotations" / f"instances_{name}.json"
        if path.is_file():
            folders = [root / name, root / "images" / name]
            folder = next((f for f in folders if f.is_dir()), folders[0])
            return path, folder, name
    tried = ", ".join(f"annotations/instances_{n}.json" for n in candidates)
    raise validate.DataError(f"{root}: no {tried}; available splits: {splits(root) or 'none'}")


def _load_json(path, report):
    """Parsed JSON object of an annotation file; unparsable or non-object JSON is fatal."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        report.fatal(path, "", "broken JSON", f"line {e.lineno} column {e.colno}: {e.msg}")
    except (UnicodeDecodeError, RecursionError) as e:
        report.fatal(path, "", "broken JSON", str(e))
    if not isinstance(data, dict):
        report.fatal(path, "", "broken JSON", f"top level is {type(data).__name__}, expected an object")
    return data


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _categories(path, data, report):
    """Categories sorted by id: ``[(id, name), ...]``; structural problems are fatal."""
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        report.fatal(path, "categories", "missing categories", "expected a non-empty list")
    ids, names = {}, {}
    for k, cat in enumerate(cats):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            report.fatal(path, f"categories[{k}]", "category without an integer id", repr(cat)[:80])
        cid, name = cat["id"], cat.get("name")
        if not isinstance(name, str) or not name:
            report.fatal(path, f"category {cid}", "category without a name", repr(cat)[:80])
        if cid in ids:
            report.fatal(path, f"category {cid}", "duplicate category id", f"{ids[cid]!r} and {name!r}")
        if name in names:
            report.fatal(path, f"category {cid}", "duplicate category name", f"{name!r} also has id {names[name]}")
        ids[cid], names[name] = name, cid
    return sorted(ids.items())


def _category_files(root, split):
    """The file that holds ``split``'s categories; without ``split``, every
    ``instances_*.json``, smallest first (any of them will do: COCO splits share categories)."""
    if split is not None:
        return [resolve_split(root, split)[0]]
    files = (pathlib.Path(root) / "annotations").glob("instances_*.json")
    files = sorted(files, key=lambda p: (p.stat().st_size, p.name))
    if not files:
        raise validate.DataError(f"{root}: no annotations/instances_*.json")
    return files


@functools.lru_cache(maxsize=8)
def _file_categories(path, _stamp):
    """Categories of one file, cached while it is unchanged (the parsed file is not kept)."""
    return tuple(_categories(path, _load_json(path, validate.Report()), validate.Report()))


def _root_categories(root, split=None):
    """``(path, [(category id, name)])`` of the first category file that reads; a broken
    file is passed over while another one reads (its error is raised when none does)."""
    first_error = None
    for path in _category_files(root, split):
        stat = path.stat()
        try:
            return path, list(_file_categories(path, (stat.st_mtime_ns, stat.st_size)))
        except validate.DataError as e:
            first_error = first_error or e
    raise first_error


def class_names(root, split=None):
    """Category names in contiguous-id order (categories sorted by their COCO id), from
    ``split``'s file, or without ``split`` from the smallest file that reads."""
    return [name for _, name in _root_categories(root, split)[1]]


def category_ids(root, split=None):
    """The dataset's own category ids in contiguous-id order: class ``i`` is ``category_ids[i]``."""
    return [cid for cid, _ in _root_categories(root, split)[1]]


# --- reading ------------------------------------------------------------------------


def _list(path, data, key, required, report):
    value = data.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        report.fatal(path, key, f"missing {key}", "expected a list")
    return value


def scan(root, split, *, strict=False, report=None, check_images=True, max_pixels=images.MAX_PIXELS):
    """Validated index of one split: a list of records, one per usable image, in JSON order.

    Each record: ``image_id`` (COCO id as text), ``path``, ``annotation`` (the JSON file),
    ``height``, ``width`` (after EXIF orientation), ``boxes`` float32 ``[G, 4]`` normalized
    ``[y1, x1, y2, x2]``, ``classes`` int32 ``[G]`` contiguous, ``is_crowd`` and
    ``difficult`` bool ``[G]``; boxes in annotation order.

    ``check_images``: True reads every image header (missing, empty, non-image, too-large
    files found here; sizes from the image, checked against the JSON); ``"decode"`` also
    decodes every image (finds truncated data, slow); False trusts the JSON sizes and only
    checks that files exist. Problems go to ``report`` (created if None); ``strict``
    raises ``DataError`` on the first one. Structural errors are always fatal.
    """
    report = validate.ensure_report(report, strict)
    root = pathlib.Path(root)
    path, images_dir, _ = resolve_split(root, split)
    data = _load_json(path, report)
    categories = _categories(path, data, report)
    default_path, default_categories = _root_categories(root)
    if default_path.resolve() != path.resolve() and categories != default_categories:
        report.fatal(path, "categories", "categories differ between splits", f"compared with {default_path.name}")
    class_of = {cid: i for i, (cid, _) in enumerate(categories)}

    # Images: ids must be unique integers; bad file names are per-image problems.
    image_entries = _list(path, data, "images", True, report)
    order, by_id = [], {}
    for k, img in enumerate(image_entries):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            report.fatal(path, f"images[{k}]", "image without an integer id", repr(img)[:80])
        if img["id"] in by_id:
            report.fatal(path, f"image {img['id']}", "duplicate image id", f"images[{k}]")
        by_id[img["id"]] = img
        order.append(img["id"])

    # Annotations: unique ids, known image and category; bad boxes are per-box problems.
    objects = {image_id: [] for image_id in order}
    seen_ann = set()
    for k, ann in enumerate(_list(path, data, "annotations", False, report)):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            report.fatal(path, f"annotations[{k}]", "annotation without an integer id", repr(ann)[:80])
        aid = ann["id"]
        record = f"annotation {aid}"
        if aid in seen_ann:
            report.fatal(path, record, "duplicate annotation id", f"annotations[{k}]")
        seen_ann.add(aid)
        image_id, category = ann.get("image_id"), ann.get("category_id")
        if not _is_int(image_id) or image_id not in by_id:
            report.fatal(path, record, "annotation of an unknown image", f"image_id={image_id!r}")
        if not _is_int(category) or category not in class_of:
            # A bad record, not a broken file: named and skipped (strict mode stops on it).
            report.add(path, record, validate.UNKNOWN_CLASS, validate.DROPPED_BOX,
                       f"category_id={category!r} is not in categories")
            continue
        bbox = ann.get("bbox")
        # JSON strings are not numbers here, even "12" (to_float accepts text for XML).
        values = [None if isinstance(v, str) else validate.to_float(v) for v in bbox] if isinstance(bbox, list) else []
        if len(values) != 4 or any(v is None for v in values):
            report.add(path, record, validate.NON_NUMERIC, validate.DROPPED_BOX, f"bbox={bbox!r}"[:120])
            continue
        x, y, w, h = values
        crowd = validate.to_float(ann.get("iscrowd", 0)) not in (None, 0.0)
        objects[image_id].append((record, [y, x, y + h, x + w], class_of[category], crowd, False, _area(ann, path, record, report)))

    # Image files: inside the dataset, present, readable; sizes from the header.
    allowed = (images_dir, root)
    candidates = []  # of images.build_records
    for image_id in order:
        img = by_id[image_id]
        name = img.get("file_name")
        if not isinstance(name, str) or not name:
            url = img.get("coco_url")
            name = url.rsplit("/", 1)[-1] if isinstance(url, str) and url else None
        if name is None:
            report.add(path, f"image {image_id}", validate.MALFORMED_ANNOTATION, validate.SKIPPED_IMAGE, "no file_name")
            continue
        image_path, why = validate.resolve_inside(name, images_dir, allowed)
        if image_path is None:
            report.add(path, f"image {image_id}", validate.PATH_ESCAPES, validate.SKIPPED_IMAGE, why)
            continue
        height, width = validate.to_float(img.get("height")), validate.to_float(img.get("width"))
        size = None
        if height is not None and width is not None and height > 0 and width > 0 and np.isfinite([height, width]).all():
            size = (int(height), int(width))
        candidates.append(
            {
                "image_id": str(image_id),
                "path": image_path,
                "annotation": path,
                "size": size,
                "size_record": f"image {image_id}",
                "objects": objects[image_id],
            }
        )

    if candidates and not any(os.path.exists(c["path"]) for c in candidates):
        # Not one bad record: the images are somewhere else. Say where they were looked for.
        name = pathlib.Path(candidates[0]["path"]).name
        found = sorted(str(p.parent.relative_to(root)) for p in root.glob(f"*/{name}")) + sorted(
            str(p.parent.relative_to(root)) for p in root.glob(f"images/*/{name}"))
        hint = f"; {name} is in {found[0]}/: rename that folder to {images_dir.name}/" if found else ""
        report.fatal(path, "images", "none of the images were found",
                     f"{len(candidates)} images listed, looked for in {images_dir} (e.g. {name}){hint}; images are "
                     f"read from <root>/<split>/ or <root>/images/<split>/")
    return images.build_records(candidates, report, check_images=check_images, max_pixels=max_pixels)


def load(root, split, *, strict=False, report=None, check_images=True, max_pixels=images.MAX_PIXELS):
    """``tf.data.Dataset`` of canonical examples of one split: :func:`scan`, then decoding
    in tf.data (:func:`tfzoo.data.images.load_scanned` says what is checked when)."""
    return images.load_scanned(scan, root, split, strict=strict, report=report, check_images=check_images,
                               max_pixels=max_pixels)


# --- writing ------------------------------------------------------------------------


def _area(ann, path, record, report):
    """The annotation's ``area`` (pixels) when it is a finite number >= 0, else None (the
    box area is used); a present but unusable ``area`` is a named problem, the box is kept."""
    if "area" not in ann:
        return None
    value = ann["area"]
    area = None if isinstance(value, (str, bool)) else validate.to_float(value)
    if area is None or not np.isfinite(area) or area < 0:
        report.add(path, record, validate.NON_NUMERIC, validate.USED_BOX_AREA, f"area={value!r}"[:120])
        return None
    return area


def write(examples, root, split, class_names, *, category_ids=None):
    """Writes canonical examples in the COCO layout at ``root``; returns the image ids.

    Creates ``<split>/<id:012d>.jpg`` (quality 95) and ``annotations/instances_<split>.json``
    (``images``, ``annotations``, ``categories``; no ``info``/``licenses``). Class ``i`` is
    written as category ``category_ids[i]`` (default ``i + 1``). Image ids are the examples'
    ``image_id`` when all are distinct decimal integers, else ``1, 2, ...``. ``bbox`` is
    ``[x, y, w, h]`` in pixels (2 decimals); ``area`` is the example's own ``area`` where it
    has one (>= 0), else ``w * h``; ``difficult`` is not written.
    Padding rows (negative class) are left out; a class id ``>= len(class_names)`` raises
    ``ValueError``.
    """
    root = pathlib.Path(root)
    class_names = list(class_names)
    category_ids = list(range(1, len(class_names) + 1)) if category_ids is None else [int(c) for c in category_ids]
    if len(category_ids) != len(class_names) or len(set(category_ids)) != len(category_ids):
        raise ValueError("category_ids must be distinct, one per class name")
    examples = [images.numpy_example(e) for e in examples]
    given = [str(e.get("image_id") or "") for e in examples]
    use_given = all(g.isascii() and g.isdigit() for g in given) and len(set(int(g) for g in given)) == len(given)
    ids = [int(g) for g in given] if use_given else list(range(1, len(examples) + 1))

    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    out_images, out_annotations = [], []
    for image_id, ex in zip(ids, examples):
        image = np.asarray(ex["image"], np.uint8)
        height, width = image.shape[:2]
        file_name = f"{image_id:012d}.jpg"
        images.write_jpeg(image, root / split / file_name)
        out_images.append({"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)})
        boxes = np.asarray(ex["boxes"], np.float64).reshape(-1, 4)
        classes = np.asarray(ex["classes"]).reshape(-1)
        crowd = np.asarray(ex.get("is_crowd", np.zeros(len(classes), bool)), bool).reshape(-1)
        area = np.asarray(ex.get("area", np.full(len(classes), validate.NO_AREA)), np.float64).reshape(-1)
        keep = validate.writable_rows(classes, len(class_names), f"image {image_id}")
        boxes_xywh_px = box_ops.yxyx_to_xywh(box_ops.denormalize(boxes[keep], height, width)).numpy()
        for box_xywh, cls, is_crowd, given_area in zip(boxes_xywh_px, classes[keep], crowd[keep], area[keep]):
            bbox = [round(float(v), 2) for v in box_xywh]
            out_annotations.append(
                {
                    "id": len(out_annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[int(cls)],
                    "bbox": bbox,
                    "area": round(float(given_area) if given_area >= 0 else bbox[2] * bbox[3], 2),
                    "iscrowd": int(is_crowd),
                }
            )
    document = {
        "images": out_images,
        "annotations": out_annotations,
        "categories": [{"id": c, "name": n, "supercategory": ""} for c, n in zip(category_ids, class_names)],
    }
    target = root / "annotations" / f"instances_{split}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document), encoding="utf-8")
    os.replace(tmp, target)
    return [str(i) for i in ids]

