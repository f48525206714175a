"""Image files -> RGB uint8 arrays, with PIL, safely.

Every reader decodes through :func:`decode_image` and sizes through :func:`image_size`, so
all datasets get the same treatment:

- **EXIF orientation is applied** (``ImageOps.exif_transpose``), and :func:`image_size`
  reports the size *after* orientation (height and width swapped for orientations 5-8).
  Boxes in annotation files are taken to refer to the oriented image, as COCO tools and
  every viewer do.
- **Pixel modes are converted to RGB**: alpha is dropped (``RGBA``, ``LA``, ``PA``; like
  ``tf.io.decode_png(channels=3)``, so training and serving see the same pixels), palettes
  (``P``) are expanded, grayscale (``1``, ``L``) replicated, ``CMYK``/``YCbCr`` converted.
- **16-bit images are scaled, not clipped**: ``I;16*`` and ``I`` samples become
  ``value >> 8`` (what PIL does for 16-bit RGB PNGs and ``tf.image.convert_image_dtype``
  does for uint16 -> uint8). Float images (``F``) are refused.
- **Decompression bombs are refused from the header**: :func:`open_checked` reads the size
  with ``Image.open`` (no pixel data) and raises before decoding anything above
  ``max_pixels`` (default :data:`MAX_PIXELS`, PIL's own default).
- Missing, empty (0 bytes), non-image, truncated and corrupt files raise
  :class:`ImageError`, whose ``problem`` is one of the ``validate`` problem names.

PIL releases the GIL while decoding, so :func:`decode_image` parallelizes well inside
``tf.numpy_function`` under ``Dataset.map(num_parallel_calls=AUTOTUNE)``.
"""
from __future__ import annotations

import concurrent.futures
import os
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tfzoo.data import validate

#: Default pixel limit, PIL's own ``Image.MAX_IMAGE_PIXELS`` (about 9459 x 9459).
#: PIL refuses anything above twice its own limit at ``Image.open`` already, so a
#: ``max_pixels`` above that also needs ``PIL.Image.MAX_IMAGE_PIXELS`` raised.
MAX_PIXELS = 89_478_485
#: File name extensions :func:`image_files` takes for images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: EXIF orientations that swap height and width (transpose, rotate 90/270, transverse).
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
_ORIENTATION_TAG = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageError(ValueError):
    """An image file that cannot be used; ``problem`` names why, ``detail`` explains."""

    def __init__(self, path, problem, detail=""):
        self.path = str(path)
        self.problem = problem
        self.detail = detail
        super().__init__(f"{self.path}: {problem}" + (f" ({detail})" if detail else ""))


def open_checked(path, *, max_pixels=MAX_PIXELS):
    """Opens ``path`` with PIL reading the header only; refuses bombs before any decoding.

    Returns the lazy ``PIL.Image.Image`` (the caller closes it). Raises :class:`ImageError`
    for a missing, empty, unidentifiable or too-large file.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise ImageError(path, validate.MISSING_IMAGE) from None
    except OSError as e:
        raise ImageError(path, validate.CORRUPT_IMAGE, str(e)) from None
    if size == 0:
        raise ImageError(path, validate.EMPTY_FILE, "0 bytes")
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageError(path, validate.IMAGE_TOO_LARGE, str(e)) from None
    except UnidentifiedImageError:
        raise ImageError(path, validate.NOT_AN_IMAGE, "PIL cannot identify the file") from None
    except (OSError, ValueError, SyntaxError) as e:  # broken headers raise any of these
        raise ImageError(path, validate.CORRUPT_IMAGE, str(e)) from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(path, validate.IMAGE_TOO_LARGE, f"{width} x {height} pixels > max_pixels={max_pixels}")
    if width <= 0 or height <= 0:
        image.close()
        raise ImageError(path, validate.CORRUPT_IMAGE, f"header says {width} x {height} pixels")
    return image


def header_orientation(image):
    """EXIF orientation (1-8) of an opened, not yet loaded image, without decoding pixels.

    PNG's own ``getexif`` decodes the whole image to look for an ``eXIf`` chunk after the
    pixel data; the base implementation used here only reads what the header holds (EXIF
    before the pixels, text-chunk EXIF, XMP). A PNG with ``eXIf`` after its pixels gets
    orientation 1 here and is rotated by :func:`decode_image`; readers catch that case by
    checking the decoded size.
    """
    try:
        value = Image.Image.getexif(image).get(_ORIENTATION_TAG, 1)
        value = int(value)
    except Exception:  # noqa: BLE001 - a broken EXIF block means "no orientation"
        return 1
    return value if 1 <= value <= 8 else 1


def image_info(path, *, max_pixels=MAX_PIXELS):
    """Header facts of one image: ``dict(height, width, mode, orientation, format)``.

    ``height``/``width`` are after EXIF orientation. Reads no pixel data. Raises
    :class:`ImageError` like :func:`open_checked`.
    """
    with open_checked(path, max_pixels=max_pixels) as image:
        width, height = image.size
        orientation = header_orientation(image)
        if orientation in _SWAPPING_ORIENTATIONS:
            width, height = height, width
        return {
            "height": height,
            "width": width,
            "mode": image.mode,
            "orientation": orientation,
            "format": image.format,
        }


def image_size(path, *, max_pixels=MAX_PIXELS):
    """``(height, width)`` of the image at ``path`` after EXIF orientation, from the header."""
    info = image_info(path, max_pixels=max_pixels)
    return info["height"], info["width"]


def conversion_notes(mode, orientation=1):
    """Names of the normal conversions :func:`decode_image` applies to such an image.

    Readers count these in ``Report.notes``; they are not problems.
    """
    notes = []
    if orientation != 1:
        notes.append("applied EXIF orientation")
    if mode in _SIXTEEN_BIT_MODES:
        notes.append("scaled 16-bit to 8-bit")
    elif mode != "RGB":
        notes.append(f"converted {mode} to RGB")
    return notes


def to_rgb_array(image):
    """A loaded ``PIL.Image`` of any supported mode -> ``np.uint8 [H, W, 3]`` RGB."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        samples = np.asarray(image).astype(np.int64)
        gray = (np.clip(samples, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        raise ValueError("float (F) images have no defined 8-bit range")
    if mode in ("LA", "PA", "RGBA", "RGBa", "La"):
        image = image.convert("RGBA")  # un-premultiplies RGBa/La; RGB values kept
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def decode_image(path, *, max_pixels=MAX_PIXELS):
    """Decodes the image at ``path`` to ``np.uint8 [H, W, 3]`` RGB, EXIF orientation applied.

    Raises :class:`ImageError` (never a PIL exception) for missing, empty, non-image,
    too-large (checked from the header, before decoding), truncated or corrupt files and
    unsupported modes. Multi-frame files give their first frame.
    """
    with open_checked(path, max_pixels=max_pixels) as image:
        try:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
        except Image.DecompressionBombError as e:
            raise ImageError(path, validate.IMAGE_TOO_LARGE, str(e)) from None
        except Exception as e:  # noqa: BLE001 - PIL decoders raise many types on bad data
            raise ImageError(path, validate.CORRUPT_IMAGE, f"{type(e).__name__}: {e}") from None
        try:
            return to_rgb_array(image)
        except ValueError as e:
            raise ImageError(path, validate.UNSUPPORTED_IMAGE, f"mode {image.mode}: {e}") from None


# --- many images --------------------------------------------------------------------


def read_headers(paths, *, max_pixels=MAX_PIXELS, workers=None):
    """:func:`image_info` of many files, in order; an :class:`ImageError` in place of failures.

    Runs on a thread pool (header reads are I/O bound); results keep the order of ``paths``.
    """
    paths = [os.fspath(p) for p in paths]

    def one(path):
        try:
            return image_info(path, max_pixels=max_pixels)
        except ImageError as e:
            return e

    if len(paths) < 64:
        return [one(p) for p in paths]
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths, chunksize=64))


def verify_decodes(paths, *, max_pixels=MAX_PIXELS, workers=None):
    """Fully decodes many files (slow; finds truncated data); ``None`` or an :class:`ImageError` each."""

    def one(path):
        try:
            decode_image(path, max_pixels=max_pixels)
        except ImageError as e:
            return e
        return None

    workers = workers or min(16, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, [os.fspath(p) for p in paths]))


def load_scanned(scan, root, split, *, strict=False, report=None, check_images=True, max_pixels=MAX_PIXELS):
    """A reader's ``load``: ``scan(root, split, ...)`` the annotations, then :func:`dataset`.

    All annotation and header problems are found by ``scan`` before the Dataset is
    returned (strict mode raises then). Images whose pixel data turn out corrupt while
    decoding are dropped and reported (strict: the iteration raises);
    ``check_images="decode"`` finds those up front too.
    """
    report = validate.ensure_report(report, strict)
    records = scan(root, split, report=report, check_images=check_images, max_pixels=max_pixels)
    return dataset(records, report, max_pixels=max_pixels)


def dataset(records, report, *, max_pixels=MAX_PIXELS):
    """``tf.data.Dataset`` of canonical examples from scanned records, decoding inside tf.data.

    ``records``: dicts with ``path``, ``height``, ``width`` (oriented), ``boxes`` float32
    ``[G, 4]`` normalized, ``classes`` int32 ``[G]``, ``is_crowd`` and ``difficult`` bool
    ``[G]``, ``image_id`` str, optionally ``area`` float32 ``[G]`` (what
    ``voc.scan``/``coco.scan`` return; ``area`` is passed on when every record has it).

    Images are decoded with :func:`decode_image` through ``tf.numpy_function`` in
    ``Dataset.map(num_parallel_calls=AUTOTUNE, deterministic=True)``, so the order is the
    records' order. An image that fails to decode, or decodes to another size than the
    record says, is added to ``report`` (``skipped image``) and dropped; with a strict
    report the pipeline raises instead.
    """
    import tensorflow as tf  # noqa: PLC0415 - keep `images` importable without TF for tools

    from tfzoo.data import schema  # noqa: PLC0415

    lengths = np.array([len(r["boxes"]) for r in records], np.int64)

    def column(key, dtype, width=None):
        parts = [np.asarray(r[key], dtype).reshape([-1] + ([width] if width else [])) for r in records]
        empty = np.zeros([0] + ([width] if width else []), dtype)
        values = np.concatenate(parts) if parts else empty
        return tf.RaggedTensor.from_row_lengths(values, lengths)

    table = {
        "path": tf.constant([str(r["path"]) for r in records], tf.string, shape=[len(records)]),
        "height": tf.constant([int(r["height"]) for r in records], tf.int64, shape=[len(records)]),
        "width": tf.constant([int(r["width"]) for r in records], tf.int64, shape=[len(records)]),
        schema.IMAGE_ID: tf.constant([str(r["image_id"]) for r in records], tf.string, shape=[len(records)]),
        schema.BOXES: column("boxes", np.float32, 4),
        schema.CLASSES: column("classes", np.int32),
        schema.IS_CROWD: column("is_crowd", bool),
        schema.DIFFICULT: column("difficult", bool),
    }
    box_keys = [schema.BOXES, schema.CLASSES, schema.IS_CROWD, schema.DIFFICULT]
    if records and all("area" in r for r in records):
        table[schema.AREA] = column("area", np.float32)
        box_keys.append(schema.AREA)
    empty_image = np.zeros([0, 0, 3], np.uint8)

    def decode(path, height, width):
        path = path.decode("utf-8")
        try:
            image = decode_image(path, max_pixels=max_pixels)
        except ImageError as e:
            report.add(path, "", e.problem, validate.SKIPPED_IMAGE, e.detail)
            return empty_image, False
        if image.shape[:2] != (height, width):
            report.add(
                path,
                "",
                validate.SIZE_MISMATCH,
                validate.SKIPPED_IMAGE,
                f"decoded {image.shape[0]} x {image.shape[1]}, scanned {height} x {width}",
            )
            return empty_image, False
        return image, True

    def load(row):
        image, ok = tf.numpy_function(decode, [row["path"], row["height"], row["width"]], [tf.uint8, tf.bool])
        image.set_shape([None, None, 3])
        ok.set_shape([])
        example = {schema.IMAGE: image}
        for key in box_keys:
            value = row[key]
            example[key] = value.to_tensor() if isinstance(value, tf.RaggedTensor) else value
        example[schema.BOXES] = tf.ensure_shape(example[schema.BOXES], [None, 4])
        example[schema.IMAGE_ID] = row[schema.IMAGE_ID]
        return example, ok

    ds = tf.data.Dataset.from_tensor_slices(table)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(lambda example, ok: ok)
    return ds.map(lambda example, ok: example)


def write_jpeg(image, path, quality=95):
    """Saves ``np.uint8 [H, W, 3]`` RGB as a JPEG, no chroma subsampling (readers' ``write``)."""
    array = np.asarray(image, np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got shape {array.shape}")
    Image.fromarray(array, "RGB").save(os.fspath(path), format="JPEG", quality=quality, subsampling=0)


def check_files(items, report, *, check_images=True, max_pixels=MAX_PIXELS):
    """Image sizes for a reader's ``scan``: one ``(height, width)`` or None (reported) per item.

    ``items``: dicts with ``path`` (image file), ``size`` (``(h, w)`` from the annotation,
    or None), ``file`` and ``record`` (where a size mismatch is reported).
    ``check_images``: True reads every header (sizes from the image; an annotated size that
    differs is an ``image size mismatch``, image size used); ``"decode"`` also decodes every
    image; False uses annotated sizes and only checks that files exist (headers are read
    only where no size is annotated). Conversions are counted in ``report.notes``.
    """
    sizes = [None] * len(items)
    need = []
    for i, item in enumerate(items):
        if check_images or item["size"] is None:
            need.append(i)
        elif os.path.isfile(item["path"]):
            sizes[i] = item["size"]
        else:
            report.add(item["path"], "", validate.MISSING_IMAGE, validate.SKIPPED_IMAGE, f"named by {item['file']}")
    paths = [items[i]["path"] for i in need]
    headers = read_headers(paths, max_pixels=max_pixels)
    if check_images == "decode":
        decoded = verify_decodes(paths, max_pixels=max_pixels)
        headers = [h if isinstance(h, ImageError) or d is None else d for h, d in zip(headers, decoded)]
    for i, header in zip(need, headers):
        item = items[i]
        if isinstance(header, ImageError):
            detail = header.detail or f"named by {item['file']}"
            report.add(item["path"], "", header.problem, validate.SKIPPED_IMAGE, detail)
            continue
        for note in conversion_notes(header["mode"], header["orientation"]):
            report.note(note)
        size = (header["height"], header["width"])
        if check_images and item["size"] != size:
            given = "none" if item["size"] is None else f"{item['size'][0]} x {item['size'][1]}"
            report.add(
                item["file"],
                item["record"],
                validate.SIZE_MISMATCH,
                validate.USED_IMAGE_SIZE,
                f"annotation says {given}, image is {size[0]} x {size[1]} (h x w)",
            )
        sizes[i] = size
    return sizes


def build_records(candidates, report, *, check_images=True, max_pixels=MAX_PIXELS):
    """The end of every reader's ``scan``: image checks, box cleaning, one record per image.

    ``candidates``: one dict per annotated image, in output order, with ``image_id`` (str),
    ``path`` (image file), ``annotation`` (the file named in box problems), ``size``
    (annotated ``(h, w)`` or None), ``size_record`` (the record named on a size mismatch)
    and ``objects``: a list of ``(record, box_px [y1, x1, y2, x2], class, is_crowd,
    difficult)``, optionally with a sixth item, the annotation's area in pixels (None:
    none given). Images are checked by :func:`check_files` (failures reported and
    dropped), boxes by :func:`validate.clean_boxes` against the image's (oriented) size;
    images left without boxes are kept as negatives (noted).

    Returns records: ``image_id``, ``path``, ``annotation``, ``height``, ``width``,
    ``boxes`` float32 ``[G, 4]`` normalized ``[y1, x1, y2, x2]``, ``classes`` int32 ``[G]``,
    ``is_crowd`` and ``difficult`` bool ``[G]``, ``area`` float32 ``[G]``
    (:data:`validate.NO_AREA` where none was given).
    """
    items = [
        {"path": c["path"], "size": c["size"], "file": c["annotation"], "record": c["size_record"]}
        for c in candidates
    ]
    sizes = check_files(items, report, check_images=check_images, max_pixels=max_pixels)
    kept = [(c, size) for c, size in zip(candidates, sizes) if size is not None]
    entries = [
        {
            "file": c["annotation"],
            "records": [o[0] for o in c["objects"]],
            "boxes_px": np.array([o[1] for o in c["objects"]], np.float64).reshape(-1, 4),
            "classes": np.array([o[2] for o in c["objects"]], np.int64),
            "is_crowd": np.array([o[3] for o in c["objects"]], bool),
            "difficult": np.array([o[4] for o in c["objects"]], bool),
            "area": np.array([_area(o) for o in c["objects"]], np.float32),
            "height": size[0],
            "width": size[1],
        }
        for c, size in kept
    ]
    records = []
    for (c, size), entry, (keep, boxes) in zip(kept, entries, validate.clean_boxes(entries, report)):
        if not keep.any():
            report.note(validate.NOTE_NEGATIVE)
        records.append(
            {
                "image_id": str(c["image_id"]),
                "path": str(c["path"]),
                "annotation": str(c["annotation"]),
                "height": int(size[0]),
                "width": int(size[1]),
                "boxes": boxes[keep].reshape(-1, 4),
                "classes": entry["classes"][keep].astype(np.int32),
                "is_crowd": entry["is_crowd"][keep],
                "difficult": entry["difficult"][keep],
                "area": entry["area"][keep],
            }
        )
    return records


def _area(obj):
    """The area of one ``objects`` item of :func:`build_records`, ``NO_AREA`` when absent."""
    area = obj[5] if len(obj) > 5 else None
    return validate.NO_AREA if area is None else float(area)


def numpy_example(example):
    """A canonical example (tensors or arrays) as NumPy values, ``image_id`` as ``str``."""
    out = {}
    for key, value in example.items():
        value = value.numpy() if hasattr(value, "numpy") else value
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        out[key] = value
    return out


def image_files(paths):
    """``paths`` with each folder replaced by its image files (:data:`IMAGE_EXTENSIONS`,
    not recursive, sorted by name); files are kept as given, whatever their extension.
    A folder without images raises ``FileNotFoundError`` naming it."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(entry.path for entry in os.scandir(path)
                           if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"{path}: a folder without images ({', '.join(IMAGE_EXTENSIONS)}; "
                                        f"subfolders are not searched)")
            out.extend(found)
        else:
            out.append(path)
    return out


_SAFE_STEM = re.compile(r"^[A-Za-z0-9_.-]+$")


def file_stem(image_id, index):
    """The file name (without extension) a writer gives an example: its ``image_id`` when
    that is a safe file name, else the 6-digit ``index``."""
    image_id = str(image_id or "")
    return image_id if _SAFE_STEM.match(image_id) and image_id not in (".", "..") else f"{index:06d}"
