"""Fixtures that build tiny datasets on disk (a few 32-64 px images) in ``tmp_path``."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

ORIENTATION = 0x0112


def save_image(path, size=(48, 64), mode="RGB", fmt=None, orientation=None, seed=0):
    """Writes a random image of ``size = (height, width)`` (as stored, before EXIF)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    rgb = Image.fromarray(rng.integers(0, 256, [h, w, 3], dtype=np.uint8), "RGB")
    image = rgb if mode == "RGB" else rgb.convert(mode)
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        kwargs["exif"] = exif.tobytes()
    image.save(path, format=fmt or ("PNG" if path.suffix == ".png" else "JPEG"), **kwargs)
    return path


def tree_hash(root):
    """SHA-256 over every file name and content under ``root`` (symlinks by target)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            path = pathlib.Path(dirpath) / name
            digest.update(str(path.relative_to(root)).encode())
            if path.is_symlink():
                digest.update(os.readlink(path).encode())
            else:
                digest.update(path.read_bytes())
    return digest.hexdigest()


class VocBuilder:
    """Builds ``root`` in the VOC layout one image at a time.

    ``objects`` rows are ``(name, xmin, ymin, xmax, ymax)`` or with a 6th ``difficult``;
    values are written verbatim, so strings like ``"abc"`` or ``"nan"`` test the parser.
    """

    def __init__(self, root):
        self.root = pathlib.Path(root)
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.stems = []

    def add(self, stem, objects=(), size=(48, 64), image=True, filename=None, xml=None, xml_size="image",
            orientation=None, mode="RGB"):  # fmt: skip
        self.stems.append(stem)
        filename = f"{stem}.jpg" if filename is None else filename
        if image is True:
            save_image(self.root / "JPEGImages" / f"{stem}.jpg", size, mode=mode, orientation=orientation,
                       seed=len(self.stems))  # fmt: skip
        elif isinstance(image, bytes):
            (self.root / "JPEGImages" / f"{stem}.jpg").write_bytes(image)
        if xml is None:
            h, w = size if xml_size == "image" else (xml_size or (None, None))
            size_xml = "" if h is None else f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            rows = []
            for obj in objects:
                name, x1, y1, x2, y2 = obj[:5]
                difficult = obj[5] if len(obj) > 5 else 0
                rows.append(
                    f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
                    f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                )
            xml = f"<annotation><filename>{filename}</filename>{size_xml}{''.join(rows)}</annotation>"
        if xml is not False:
            (self.root / "Annotations" / f"{stem}.xml").write_text(xml, encoding="utf-8")
        return self

    def split(self, name="train", stems=None):
        stems = self.stems if stems is None else stems
        (self.root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))
        return self.root

    def labels(self, names):
        (self.root / "labels.txt").write_text("".join(f"{n}\n" for n in names))
        return self


class CocoBuilder:
    """Builds ``root`` in the COCO layout: ``annotations/instances_<split>.json``, ``<split>/``."""

    def __init__(self, root, categories=((1, "cat"), (3, "dog"), (90, "toothbrush"))):
        self.root = pathlib.Path(root)
        self.categories = [{"id": i, "name": n, "supercategory": "x"} for i, n in categories]
        self.images = []
        self.annotations = []

    def image(self, image_id, size=(48, 64), file_name=None, write=True, split="val2017", json_size="image",
              orientation=None, mode="RGB", data=None):  # fmt: skip
        file_name = f"{image_id:012d}.jpg" if file_name is None else file_name
        if data is not None:
            (self.root / split).mkdir(parents=True, exist_ok=True)
            (self.root / split / file_name).write_bytes(data)
        elif write:
            save_image(self.root / split / file_name, size, mode=mode, orientation=orientation, seed=image_id)
        entry = {"id": image_id, "file_name": file_name}
        h, w = size if json_size == "image" else json_size
        entry.update(height=h, width=w)
        self.images.append(entry)
        return self

    def ann(self, image_id, category_id, bbox, iscrowd=0, ann_id=None):
        ann_id = len(self.annotations) + 1 if ann_id is None else ann_id
        self.annotations.append(
            {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": iscrowd}
        )
        return self

    def write(self, split="val2017", text=None, **overrides):
        (self.root / "annotations").mkdir(parents=True, exist_ok=True)
        if text is None:
            doc = {"images": self.images, "annotations": self.annotations, "categories": self.categories}
            doc.update(overrides)
            text = json.dumps(doc)
        (self.root / "annotations" / f"instances_{split}.json").write_text(text)
        return self.root


@pytest.fixture
def voc_data(tmp_path):
    """A :class:`VocBuilder` on ``tmp_path/VOCdevkit/VOC2007``."""
    return VocBuilder(tmp_path / "VOCdevkit" / "VOC2007")


@pytest.fixture
def coco_data(tmp_path):
    """A :class:`CocoBuilder` on ``tmp_path/coco`` with categories 1 cat, 3 dog, 90 toothbrush."""
    return CocoBuilder(tmp_path / "coco")


@pytest.fixture
def make_image():
    """:func:`save_image`."""
    return save_image


@pytest.fixture
def hash_tree():
    """:func:`tree_hash`."""
    return tree_hash


@pytest.fixture
def tfds_temp_dirs(tmp_path, monkeypatch):
    """``tfds.testing.mock_data`` makes a temporary data folder per use and leaves it behind:
    here, inside ``tmp_path``, not in the system's temporary folder."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
