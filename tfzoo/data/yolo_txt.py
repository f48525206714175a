"""YOLO txt reader (and writer): the layout Ultralytics, Roboflow, CVAT and Label Studio export.

Layout, under ``root`` (the folder holding ``data.yaml``, or the ``.yaml`` file itself)::

    data.yaml                      # names (and nc), train/val/test image folders
    images/<split>/<name>.jpg      # any of images.IMAGE_EXTENSIONS, subfolders included
    labels/<split>/<name>.txt      # one line per object: class cx cy w h, normalized to [0, 1]

**data.yaml** (read by a small parser of the flat subset these files use: ``key: value``
scalars, a block list ``- cat``, a flow list ``[cat, dog]``, a block mapping ``0: cat``, a
flow mapping ``{0: cat}``; anything else, e.g. anchors, tags or deeper nesting, is refused
with the line named when it is under a key the reader uses and ignored under other keys,
such as Roboflow's ``roboflow:`` block):

- ``names``: a list, or an ``{id: name}`` mapping with the ids ``0..K-1``; ``nc``, when
  given, must equal the number of names (without ``names``: ``class_0 .. class_{nc-1}``,
  as Ultralytics does). Class ``i`` is ``names[i]``.
- ``train``, ``val``, ``test``: image folders (or a list of them), relative to ``path``
  when given, else to the yaml's folder (Ultralytics' rule). A folder given as ``../x``
  that is not found is looked for as ``x`` (Roboflow's ``train: ../train/images``, as
  Ultralytics does). A split without a key reads ``images/<split>`` when that exists.
  Image-list ``.txt`` files are not supported.
- ``path`` must stay inside the dataset folder; one that leaves it (``../datasets/coco8``,
  an absolute path elsewhere) or does not exist is a problem (``path escapes dataset
  root``), and the yaml's folder is used instead. A split folder that leaves the dataset
  is fatal (no other folder to read).

**Labels** of an image: its path with the last ``images`` folder replaced by ``labels``
and the extension by ``.txt`` (Ultralytics' ``img2label_paths``; with no ``images``
folder in the path, the ``.txt`` beside the image). No label file, or an empty one: the
image has no objects (a negative). ``image_id`` is the image's path relative to its split
folder, without extension (``"000001"``, ``"sub/000002"``).

**Coordinates**: ``cx cy w h`` are fractions of the image's width and height after EXIF
orientation; ``[y1, x1, y2, x2] = [cy - h/2, cx - w/2, cy + h/2, cx + w/2]``. Boxes go
through the same checks as every reader (:func:`tfzoo.data.validate.clean_boxes`): an
overhang up to ``CLIP_TOLERANCE_PX`` is clipped silently, more is clipped and reported,
no overlap, zero or negative size and NaN are dropped and reported.

**Problems**, each naming the label file and ``line N`` (lenient: reported and the line
or image skipped; ``strict=True``: ``DataError`` on the first): a line without exactly 5
fields (``malformed annotation``; segmentation polygons are not read), a non-numeric
field or a class id that is not an integer, a class id outside ``names``, the box checks
above, unreadable label files (the image is skipped: its objects are unknown), broken
images, files or symlinks leaving the dataset, two images with one ``image_id``, and
label files without an image (:data:`ORPHAN_LABEL`). ``data.yaml`` itself, a missing
split or names that do not parse are fatal in both modes. Nothing is ever written to the
dataset.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re

import numpy as np

from tfzoo.data import images, validate

YAML_NAMES = ("data.yaml", "data.yml")
SPLIT_KEYS = ("train", "val", "test")

#: Problem name of a label file that no image of the split has.
ORPHAN_LABEL = "label file without image"
#: Action taken on it: nothing read.
IGNORED = "ignored"
#: Action when a split has no labels folder: its images are read without objects.
NO_OBJECTS = "images read without objects"
#: Problem of two images of a split with one ``image_id`` (``a.jpg`` and ``a.png``).
DUPLICATE_IMAGE = "duplicate image id"
#: Problem of a ``path`` key that does not exist; action of both ``path`` problems.
MISSING_FOLDER = "missing folder"
USED_YAML_FOLDER = "used the data.yaml folder"
#: Note: images without a label file (negatives, normal in this layout).
NOTE_NO_LABEL_FILE = "image without a label file"
#: Note: a split folder written ``../x`` read as ``x`` (Roboflow's data.yaml).
NOTE_DOTDOT = "data.yaml folder '../x' read as 'x'"
#: Label files that are never an image's labels (LabelImg writes the class list here).
_NOT_LABELS = ("classes.txt",)

_YAML_HELP = ("this reader takes 'key: value' scalars, a block list ('- cat'), a flow list ('[cat, dog]'), "
              "a block mapping ('0: cat') or a flow mapping ('{0: cat}')")


# --- data.yaml ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Unsupported:
    """A value the flat parser does not read: ``line`` (1-based) and ``why``."""

    line: int
    why: str


def _strip_comment(text):
    """``text`` without a trailing ``# comment`` (a ``#`` at the start or after a space,
    outside quotes)."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'" and (i == 0 or text[i - 1] in " \t[{,:"):
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _scalar(text, line):
    """A YAML scalar -> str, or None for an empty/``null``/``~`` value, or :class:`Unsupported`."""
    text = text.strip()
    if not text or text in ("~", "null", "Null", "NULL"):
        return None
    if text[0] == '"':
        if len(text) < 2 or text[-1] != '"':
            return Unsupported(line, f"unterminated double-quoted string {text!r}")
        try:
            return json.loads(text)
        except ValueError:
            return Unsupported(line, f"a double-quoted string with escapes JSON does not know: {text!r}")
    if text[0] == "'":
        if len(text) < 2 or text[-1] != "'":
            return Unsupported(line, f"unterminated single-quoted string {text!r}")
        return text[1:-1].replace("''", "'")
    if text[0] in "&*!|>%@`[]{}":
        return Unsupported(line, f"{text[0]!r} (anchors, aliases, tags, block scalars or nesting) in {text!r}")
    return text


def _split_flow(body, line):
    """Items of a flow collection's body (``a, 'b, c', d``), split at commas outside quotes."""
    items, current, quote = [], "", None
    for ch in body:
        if quote:
            current += ch
            if ch == quote:
                quote = None
        elif ch in "\"'" and (not current.strip() or current.rstrip().endswith(":")):
            quote = ch
            current += ch
        elif ch in "[]{}":
            return Unsupported(line, "a nested flow collection")
        elif ch == ",":
            items.append(current)
            current = ""
        else:
            current += ch
    if quote:
        return Unsupported(line, "an unterminated quoted string")
    if current.strip() or items:
        items.append(current)
    if items and not items[-1].strip():
        items.pop()  # a trailing comma: [a, b,]
    return [item.strip() for item in items]


def _key_value(text):
    """``key: value`` -> ``(key, value text)``; None when ``text`` is not a mapping entry."""
    match = re.match(r"""^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"\[\]{},:-][^#:]*?|-?\d+)\s*:(?:\s+(.*))?$""",
                     text)
    if not match:
        return None
    key = match.group(1)
    if key[0] in "\"'":
        key = _scalar(key, 0)
    return key, match.group(2) or ""


def _flow(rest, more, line):
    """A flow list or mapping starting in ``rest`` and continuing over the lines of ``more``
    (an iterator of ``(line number, text)``) until its bracket closes."""
    opening = rest[0]
    closing = "]" if opening == "[" else "}"
    text = rest
    while True:
        stripped = _strip_comment(text)
        if stripped.endswith(closing):
            break
        try:
            _, next_text = next(more)
        except StopIteration:
            return Unsupported(line, f"{opening} without its {closing}")
        text = stripped + " " + next_text.strip()
    items = _split_flow(stripped[1:-1], line)
    if isinstance(items, Unsupported):
        return items
    if opening == "[":
        return [_scalar(item, line) for item in items]
    out = {}
    for item in items:
        pair = _key_value(item)
        if pair is None:
            return Unsupported(line, f"flow mapping entry {item!r} is not 'key: value'")
        out[pair[0]] = _scalar(pair[1], line)
    return out


def _block(lines, line):
    """A block list or mapping of scalars from its indented ``(line number, text)`` lines."""
    indents = {len(text) - len(text.lstrip(" ")) for _, text in lines}
    if len(indents) != 1:
        return Unsupported(lines[0][0], "nested blocks (lines at several indentations)")
    if all(text.lstrip().startswith("- ") or text.strip() == "-" for _, text in lines):
        out = []
        for number, text in lines:
            item = text.strip()[1:].strip()
            if _key_value(item) is not None and not item.startswith(("'", '"')):
                return Unsupported(number, f"a list of mappings ({item!r})")
            out.append(_scalar(item, number))
        return out
    out = {}
    for number, text in lines:
        pair = _key_value(text.strip())
        if pair is None:
            return Unsupported(number, f"{text.strip()!r} is neither '- item' nor 'key: value'")
        if not pair[1].strip():
            return Unsupported(number, f"nested blocks under {pair[0]!r}")
        out[pair[0]] = _scalar(pair[1], number)
    return out


def parse_yaml(text, path="data.yaml"):
    """The top-level mapping of a flat YAML document (see the module docstring).

    Returns ``{key: value}``: a ``str`` or ``None`` for scalars (no type conversion: ``nc``
    stays ``"3"``), a list or dict of those for collections, or :class:`Unsupported` for a
    value the parser does not read (the caller refuses it where it needs the value).
    Raises ``DataError`` naming ``path`` and the line when the document is not a mapping
    or a key repeats.
    """
    numbered = [(n, line.rstrip("\r")) for n, line in enumerate(text.lstrip("\ufeff").splitlines(), 1)]
    numbered = [(n, line.replace("\t", "    ")) for n, line in numbered]
    items = [(n, line) for n, line in numbered
             if _strip_comment(line).strip() and line.strip() not in ("---", "...")]
    out, lines_of = {}, {}
    iterator = iter(items)
    pending = None
    while True:
        if pending is not None:
            number, line = pending
            pending = None
        else:
            try:
                number, line = next(iterator)
            except StopIteration:
                break
        line = _strip_comment(line)
        if line[0] in " ":
            raise validate.DataError(f"{path} [line {number}]: unexpected indentation ({_YAML_HELP})")
        pair = _key_value(line)
        if pair is None:
            what = "a list" if line.startswith("-") else repr(line)
            raise validate.DataError(f"{path} [line {number}]: expected 'key: value' at the top level, got {what} "
                                     f"({_YAML_HELP})")
        key, rest = pair
        if key in out:
            raise validate.DataError(f"{path} [line {number}]: key {key!r} repeats (also on line {lines_of[key]})")
        lines_of[key] = number
        rest = rest.strip()
        if rest[:1] in ("[", "{"):
            out[key] = _flow(rest, iterator, number)
            continue
        if rest[:1] in ("|", ">"):
            value = Unsupported(number, "a block scalar ('|' or '>')")
        elif rest:
            out[key] = _scalar(rest, number)
            continue
        else:
            value = None
        # A block: the following lines indented, or '- item' lines at the key's own indentation.
        block = []
        for next_number, next_line in iterator:
            dash = value is None and (next_line.startswith("- ") or next_line.strip() == "-")
            if next_line[0] == " " or dash:
                block.append((next_number, _strip_comment(next_line)))
            else:
                pending = (next_number, next_line)
                break
        if value is None and block:
            value = _block(block, number)
        out[key] = value
    return out


# --- layout -------------------------------------------------------------------------


@dataclasses.dataclass
class Layout:
    """What ``data.yaml`` says: ``yaml`` (its path), ``root`` (its folder), ``base`` (the
    folder split paths are relative to), ``config`` (:func:`parse_yaml`'s dict) and
    ``problems``: ``(file, record, problem, action, detail)`` of a bad ``path`` key, added
    to every scan's report."""

    yaml: pathlib.Path
    root: pathlib.Path
    base: pathlib.Path
    config: dict
    problems: list


def find_yaml(root):
    """The ``data.yaml`` of ``root``: ``root`` itself when it is a ``.yaml``/``.yml`` file,
    else ``data.yaml`` (or ``data.yml``) in it, else its only ``*.yaml`` file."""
    root = pathlib.Path(root)
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        return root
    if not root.is_dir():
        raise validate.DataError(f"{root}: not a folder or a .yaml file")
    for name in YAML_NAMES:
        if (root / name).is_file():
            return root / name
    found = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if len(found) == 1:
        return found[0]
    if found:
        raise validate.DataError(f"{root}: several .yaml files ({', '.join(p.name for p in found)}) and no data.yaml; "
                                 "pass yolo:PATH/TO/ONE.yaml")
    raise validate.DataError(f"{root}: no data.yaml (a YOLO dataset folder holds data.yaml, images/ and labels/)")


def _inside(path, root):
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def layout(root):
    """The :class:`Layout` of the YOLO dataset at ``root``; ``DataError`` without a
    readable ``data.yaml``."""
    yaml = find_yaml(root)
    try:
        text = yaml.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise validate.DataError(f"{yaml}: unreadable ({e})") from None
    config = parse_yaml(text, yaml)
    folder = yaml.parent
    base, problems = folder, []
    given = config.get("path")
    if isinstance(given, Unsupported):
        raise validate.DataError(f"{yaml} [line {given.line}]: unsupported YAML for 'path': {given.why}")
    if given is not None and not isinstance(given, str):
        problems.append((yaml, "path", validate.MALFORMED_ANNOTATION, USED_YAML_FOLDER, f"not a folder: {given!r}"))
    elif given:
        if os.path.isabs(given) and _inside(given, folder):
            candidate, why = pathlib.Path(given), ""
        else:
            candidate, why = validate.resolve_inside(given, folder, (folder,))
        if candidate is None:
            problems.append((yaml, "path", validate.PATH_ESCAPES, USED_YAML_FOLDER, why))
        elif not candidate.is_dir():
            problems.append((yaml, "path", MISSING_FOLDER, USED_YAML_FOLDER, f"{given!r} is not a folder"))
        else:
            base = candidate
    return Layout(yaml, folder, base, config, problems)


def _needed(lay, key):
    """``config[key]``, refusing a value the flat parser could not read."""
    value = lay.config.get(key)
    if isinstance(value, Unsupported):
        raise validate.DataError(f"{lay.yaml} [line {value.line}]: unsupported YAML for {key!r}: {value.why} "
                                 f"({_YAML_HELP})")
    if isinstance(value, (list, dict)):
        inner = list(value.values()) if isinstance(value, dict) else value
        for item in inner:
            if isinstance(item, Unsupported):
                raise validate.DataError(f"{lay.yaml} [line {item.line}]: unsupported YAML for {key!r}: {item.why}")
    return value


def _int(text):
    """An integer id from YAML text (``"3"``), else None."""
    return int(text) if isinstance(text, str) and re.fullmatch(r"[+]?\d+", text.strip()) else None


def class_names(root):
    """Class names in class-id order, from ``data.yaml``'s ``names`` (and ``nc``)."""
    lay = layout(root)
    names = _needed(lay, "names")
    nc_text = _needed(lay, "nc")
    nc = None
    if nc_text is not None:
        nc = _int(nc_text)
        if nc is None or nc < 1:
            raise validate.DataError(f"{lay.yaml} [nc]: not a positive integer: {nc_text!r}")
    if names is None:
        if nc is None:
            raise validate.DataError(f"{lay.yaml}: no 'names' (a list, or a mapping 0: name) and no 'nc'")
        return [f"class_{i}" for i in range(nc)]
    if isinstance(names, dict):
        ids = {}
        for key, name in names.items():
            k = _int(key)
            if k is None:
                raise validate.DataError(f"{lay.yaml} [names]: id {key!r} is not an integer")
            ids[k] = name
        if sorted(ids) != list(range(len(ids))):
            raise validate.DataError(f"{lay.yaml} [names]: ids must be 0..{len(ids) - 1}, got {sorted(ids)}")
        names = [ids[k] for k in range(len(ids))]
    if not isinstance(names, list) or not names:
        raise validate.DataError(f"{lay.yaml} [names]: expected a non-empty list or mapping, got {names!r}")
    seen = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise validate.DataError(f"{lay.yaml} [names]: class {i} has no name")
        if name in seen:
            raise validate.DataError(f"{lay.yaml} [names]: class {name!r} listed twice (ids {seen[name]} and {i})")
        seen[name] = i
    if nc is not None and nc != len(names):
        raise validate.DataError(f"{lay.yaml} [nc]: nc is {nc} but names lists {len(names)} classes")
    return list(names)


_read_class_names = class_names  # write() takes a parameter of that name


def splits(root):
    """Split names: the ``train``/``val``/``test`` keys of ``data.yaml`` with a value, and
    the folders of ``images/`` (under ``path`` or the yaml's folder)."""
    lay = layout(root)
    names = {k for k in SPLIT_KEYS if lay.config.get(k) is not None}
    images_dir = lay.base / "images"
    if images_dir.is_dir():
        names |= {p.name for p in images_dir.iterdir() if p.is_dir()}
    return sorted(names)


def _label_dir(image_dir):
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``."""
    parts = list(image_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return pathlib.Path(*parts)
    return image_dir


def split_folders(root, split, report=None):
    """``[(image folder, label folder)]`` of ``split``; ``DataError`` when the split is
    not in ``data.yaml`` (and has no ``images/<split>``), leaves the dataset or is missing."""
    report = validate.ensure_report(report)
    lay = layout(root)
    value = _needed(lay, split) if split in lay.config else None
    if value is None:
        default = lay.base / "images" / split
        if default.is_dir():
            return [(default, _label_dir(default))]
        report.fatal(lay.yaml, split, "missing split",
                     f"no {split!r} key and no images/{split}/; available splits: {splits(root) or 'none'}")
    folders = value if isinstance(value, list) else [value]
    out = []
    for given in folders:
        if not isinstance(given, str) or not given:
            report.fatal(lay.yaml, split, validate.MALFORMED_ANNOTATION, f"not a folder: {given!r}")
        if given.endswith(".txt"):
            report.fatal(lay.yaml, split, validate.MALFORMED_ANNOTATION,
                         f"{given!r}: image-list files are not supported; give the image folder")
        if os.path.isabs(given) and _inside(given, lay.root):
            folder, why = pathlib.Path(given), ""
        else:
            # Lexical check only: a folder-level symlink (images/train -> /mnt/...) is fine, as in VOC.
            folder, why = validate.resolve_inside(given, lay.base, (lay.base, lay.root, lay.base / given))
        if (folder is None or not folder.is_dir()) and given.replace("\\", "/").startswith("../"):
            stripped, _ = validate.resolve_inside(given[3:], lay.base, (lay.base, lay.root, lay.base / given[3:]))
            if stripped is not None and (stripped.is_dir() or folder is None):
                if stripped.is_dir():
                    report.note(NOTE_DOTDOT)
                folder, why = stripped, ""  # missing: named below as the folder looked for
        if folder is None:
            report.fatal(lay.yaml, split, validate.PATH_ESCAPES, why)
        if not folder.is_dir():
            report.fatal(lay.yaml, split, MISSING_FOLDER, f"{given!r} -> {folder}")
        out.append((folder, _label_dir(folder)))
    return out


# --- reading ------------------------------------------------------------------------


def _walk(folder, suffixes):
    """Files under ``folder`` (recursive, sorted) whose suffix is in ``suffixes``: relative paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in suffixes:
                found.append(os.path.relpath(os.path.join(dirpath, name), folder))
    return found


def _class_id(text):
    """A class id field -> int (``"3"``, also ``"3.0"``), else None."""
    value = validate.to_float(text)
    if value is None or not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def _parse_labels(path, num_classes, height, width, report):
    """One label file -> list of ``(record, box_px, class, is_crowd, difficult)``, or None
    when the file cannot be read (reported; the image is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        report.add(path, "", validate.MALFORMED_ANNOTATION, validate.SKIPPED_IMAGE, f"not UTF-8 text: {e}")
        return None
    except OSError as e:
        report.add(path, "", validate.MALFORMED_ANNOTATION, validate.SKIPPED_IMAGE, str(e))
        return None
    objects = []
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        record = f"line {number}"
        if len(fields) != 5:
            hint = " (a segmentation polygon? only boxes are read)" if len(fields) > 6 and len(fields) % 2 else ""
            report.add(path, record, validate.MALFORMED_ANNOTATION, validate.DROPPED_BOX,
                       f"{len(fields)} fields, expected 5: class cx cy w h{hint}")
            continue
        cls = _class_id(fields[0])
        values = [validate.to_float(f) for f in fields[1:]]
        bad = [f"{name}={text!r}" for name, text, v in zip(("cx", "cy", "w", "h"), fields[1:], values) if v is None]
        if cls is None:
            bad.insert(0, f"class={fields[0]!r} (not an integer)")
        if bad:
            report.add(path, record, validate.NON_NUMERIC, validate.DROPPED_BOX, ", ".join(bad))
            continue
        if not 0 <= cls < num_classes:
            report.add(path, record, validate.UNKNOWN_CLASS, validate.DROPPED_BOX,
                       f"class id {cls}, data.yaml names 0..{num_classes - 1}")
            continue
        cx, cy, w, h = values
        box_px = [(cy - h / 2) * height, (cx - w / 2) * width, (cy + h / 2) * height, (cx + w / 2) * width]
        objects.append((record, box_px, cls, False, False))
    return objects


def scan(root, split, *, strict=False, report=None, check_images=True, max_pixels=images.MAX_PIXELS):
    """Validated index of one split: a list of records, one per usable image, sorted by path.

    Each record: ``image_id`` (path in the split folder without extension), ``path``,
    ``annotation`` (the label file, existing or not), ``height``, ``width`` (after EXIF
    orientation), ``boxes`` float32 ``[G, 4]`` normalized ``[y1, x1, y2, x2]``,
    ``classes`` int32 ``[G]``, ``is_crowd`` and ``difficult`` bool ``[G]`` (always False).

    Every image header is read (the labels are fractions of the image size);
    ``check_images="decode"`` also decodes every image (finds truncated data, slow);
    ``check_images=False`` reads headers all the same. Problems go to ``report`` (created
    if None); ``strict`` raises ``DataError`` on the first one, before anything is
    returned. A bad ``data.yaml`` or a missing split is always fatal.
    """
    report = validate.ensure_report(report, strict)
    lay = layout(root)
    names = class_names(root)
    for problem in lay.problems:
        report.add(*problem)
    folders = split_folders(root, split, report)

    items, seen = [], {}
    for image_dir, label_dir in folders:
        allowed_images, allowed_labels = (image_dir, lay.root), (label_dir, lay.root)
        if not label_dir.is_dir():  # every image would read as having no objects: say so
            report.add(label_dir, "", MISSING_FOLDER, NO_OBJECTS,
                       f"no labels folder for {image_dir} (labels/<split>/ beside images/<split>/ expected)")
        stems = set()
        for rel in _walk(image_dir, images.IMAGE_EXTENSIONS):
            stem = pathlib.PurePath(rel).with_suffix("").as_posix()
            stems.add(stem)  # its label file is not an orphan, whatever becomes of the image
            path, why = validate.resolve_inside(rel, image_dir, allowed_images)
            if path is None:
                report.add(image_dir / rel, "", validate.PATH_ESCAPES, validate.SKIPPED_IMAGE, why)
                continue
            if stem in seen:
                report.add(path, "", DUPLICATE_IMAGE, validate.SKIPPED_IMAGE, f"{stem!r} is also {seen[stem]}")
                continue
            seen[stem] = path
            items.append({"image_id": stem, "path": path, "label_dir": label_dir, "allowed": allowed_labels,
                          "size": None, "file": path, "record": ""})
        for rel in _walk(label_dir, (".txt",)):
            stem = pathlib.PurePath(rel).with_suffix("").as_posix()
            if stem not in stems and pathlib.PurePath(rel).name not in _NOT_LABELS:
                report.add(label_dir / rel, "", ORPHAN_LABEL, IGNORED, f"no image {stem}.* in {image_dir}")

    # Sizes first: the labels are fractions of them. (check_images=False: headers are read
    # where no size is given, which is every image here, and no size is "annotated".)
    sizes = images.check_files(items, report, check_images=False, max_pixels=max_pixels)
    if check_images == "decode":
        readable = [i for i, size in enumerate(sizes) if size is not None]
        for i, error in zip(readable, images.verify_decodes([items[i]["path"] for i in readable],
                                                            max_pixels=max_pixels)):
            if error is not None:
                report.add(items[i]["path"], "", error.problem, validate.SKIPPED_IMAGE, error.detail)
                sizes[i] = None

    candidates = []
    for item, size in zip(items, sizes):
        if size is None:
            continue
        rel = pathlib.PurePath(item["image_id"]).as_posix() + ".txt"
        label, why = validate.resolve_inside(rel, item["label_dir"], item["allowed"])
        if label is None:
            report.add(item["label_dir"] / rel, "", validate.PATH_ESCAPES, validate.SKIPPED_IMAGE, why)
            continue
        if label.is_file():
            objects = _parse_labels(label, len(names), size[0], size[1], report)
            if objects is None:
                continue
        else:
            objects = []
            report.note(NOTE_NO_LABEL_FILE)
        candidates.append({"image_id": item["image_id"], "path": item["path"], "annotation": label, "size": size,
                           "size_record": "", "objects": objects})
    # Sizes are known: build_records only checks the files still exist, then cleans the boxes.
    return images.build_records(candidates, report, check_images=False, max_pixels=max_pixels)


def load(root, split, *, strict=False, report=None, check_images=True, max_pixels=images.MAX_PIXELS):
    """``tf.data.Dataset`` of canonical examples of one split: :func:`scan`, then decoding
    in tf.data (:func:`tfzoo.data.images.load_scanned` says what is checked when)."""
    return images.load_scanned(scan, root, split, strict=strict, report=report, check_images=check_images,
                               max_pixels=max_pixels)


# --- writing ------------------------------------------------------------------------


#: Decimals of the normalized ``cx cy w h`` written (1e-6 of the side: exact for any image
#: below a million pixels a side).
DECIMALS = 6


def _yaml_text(names, split_names):
    lines = ["# YOLO dataset written by tfzoo (tfzoo.data.yolo_txt.write): image folders relative to this file"]
    lines += [f"{s}: images/{s}" for s in split_names]
    lines += [f"nc: {len(names)}", "names:"]
    lines += [f"  {i}: {json.dumps(n, ensure_ascii=False)}" for i, n in enumerate(names)]
    return "\n".join(lines) + "\n"


def write(examples, root, split, class_names):
    """Writes canonical examples in the YOLO layout at ``root``; returns the stems.

    Creates ``images/<split>/<stem>.jpg`` (quality 95), ``labels/<split>/<stem>.txt`` (one
    ``class cx cy w h`` line per object, :data:`DECIMALS` decimals; an empty file for an
    image without objects) and ``data.yaml`` (``names`` as a mapping, ``nc`` and one key
    per split written so far; no ``path`` key, so Ultralytics reads the folders relative
    to the file). A second split must have the same class names. The stem is the example's
    ``image_id`` when it is a safe file name, else a 6-digit index. Crowd and difficult
    boxes and padding rows (negative class) are left out: YOLO has no flag for them (as
    Ultralytics' own VOC conversion leaves out difficult objects). A class id
    ``>= len(class_names)`` raises ``ValueError``.
    """
    from tfzoo.ops import boxes as box_ops  # noqa: PLC0415  (TensorFlow only when writing)

    root = pathlib.Path(root)
    names = [str(n) for n in class_names]
    yaml = root / YAML_NAMES[0]
    if yaml.is_file():
        if _read_class_names(root) != names:
            raise ValueError(f"{yaml} exists with other class names")
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    written = sorted({p.name for p in (root / "images").iterdir() if p.is_dir()} | {split})
    order = [s for s in SPLIT_KEYS if s in written] + [s for s in written if s not in SPLIT_KEYS]
    tmp = yaml.with_suffix(".yaml.tmp")
    tmp.write_text(_yaml_text(names, order), encoding="utf-8")
    os.replace(tmp, yaml)

    stems, taken = [], set()
    for index, example in enumerate(examples):
        ex = images.numpy_example(example)
        image = np.asarray(ex["image"], np.uint8)
        image_id = str(ex.get("image_id") or "")
        stem = images.file_stem(image_id, index)
        if stem in taken:
            raise ValueError(f"image_id {stem!r} appears twice")
        taken.add(stem)
        stems.append(stem)
        images.write_jpeg(image, image_dir / f"{stem}.jpg")
        boxes = np.asarray(ex["boxes"], np.float32).reshape(-1, 4)
        classes = np.asarray(ex["classes"]).reshape(-1)
        count = len(classes)
        crowd = np.asarray(ex.get("is_crowd", np.zeros(count, bool)), bool).reshape(-1)
        difficult = np.asarray(ex.get("difficult", np.zeros(count, bool)), bool).reshape(-1)
        keep = validate.writable_rows(classes, len(names), f"image_id {image_id!r}") & ~crowd & ~difficult
        cyxhw = box_ops.yxyx_to_cyxhw(boxes[keep]).numpy().astype(np.float64)
        lines = [f"{int(c)} {cx:.{DECIMALS}f} {cy:.{DECIMALS}f} {w:.{DECIMALS}f} {h:.{DECIMALS}f}\n"
                 for c, (cy, cx, h, w) in zip(classes[keep], cyxhw)]
        (label_dir / f"{stem}.txt").write_text("".join(lines), encoding="utf-8")
    return stems
