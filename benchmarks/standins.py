"""Stand-in datasets whose classes differ by shape alone, written as VOC folders.

Issue 17: the default recipe scored AP50 0.24 on a held-out VOC folder of 10 classes that
differ by shape alone (colour carries no class information), 600 train / 150 val
photographs of 240-420 px with objects of 18-210 px, 0-8 per image, where the issue-3
stand-in (the ``shapes`` generator, whose classes are easy to tell apart) gave 0.89. This
module makes stand-ins that are hard in the same way, without trying to rebuild that set:

``glyphs``
    ten characters (``2 3 5 7 F G K R b d``) rendered from 21 typefaces (DejaVu Sans, Sans
    Mono and Serif, STIX and Computer Modern in their regular, bold and italic cuts, the TTF
    files matplotlib ships), with a random aspect stretch of 0.8-1.25 and a rotation of up
    to 10 degrees. ``b`` and ``d`` are each other's mirror image and every other glyph
    mirrored is no glyph of the set: a horizontal flip changes what the class looks like.
``symbols``
    ten outline symbols (ring, square, triangle, star, heart, arrow, crescent, cross,
    hexagon, bolt) drawn as strokes of 6-18 % of the object's side, rotated by up to 20
    degrees; mirror images stay in their class.

Both share everything else. Images are 240-420 px on each side, drawn independently, so
aspect ratios vary. Backgrounds are real photographs when any are found (random crops,
flips and colour shifts of the sample photographs that matplotlib and, if installed,
scikit-image ship, and of ``--photos DIR``), else and otherwise (half of the images)
procedural natural textures: coloured 1/f noise with clutter strokes that belong to no
class. Each image holds 0-8 objects (one in ten is empty) of 5-50 % of the shorter image
side, placed so that two boxes share at most 30 % of the smaller one; each object's colour is drawn
independently of its class, with a minimum luminance contrast against the background under
it, and textured with noise so that no flat colour gives it away. Boxes are the tight
bounds of each rendered object. Everything is drawn from ``numpy.random.default_rng([seed,
split, index])``: the same arguments write the same files.

    python benchmarks/standins.py glyphs /tmp/standin_glyphs
    python benchmarks/standins.py symbols /tmp/standin_symbols --train-images 600 --val-images 150

The folders have no ``labels.txt``, like a user's VOC folder: the reader finds the class
names in the XML (sorted).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tfzoo.data.fractals import noise_1f

STANDINS = ("glyphs", "symbols")
GLYPHS = ("2", "3", "5", "7", "F", "G", "K", "R", "b", "d")
SYMBOLS = ("ring", "square", "triangle", "star", "heart", "arrow", "crescent", "cross", "hexagon", "bolt")
#: Typefaces of ``glyphs``: matplotlib's TTF files with these stems.
FONT_STEMS = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
    "cmr10", "cmss10", "cmtt10", "cmb10", "cmti10",
)
MIN_SIDE, MAX_SIDE = 240, 420
MIN_OBJECT, MAX_OBJECT = 0.05, 0.50  # of the shorter image side
MAX_OBJECTS = 8
MAX_OVERLAP = 0.3  # of the smaller of two boxes: no object hidden under another
MIN_CONTRAST = 45.0  # luminance (0-255) between an object and the background under it
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def class_names(standin):
    return GLYPHS if standin == "glyphs" else SYMBOLS


# --- backgrounds ---------------------------------------------------------------------

def find_photos(extra_dir=None):
    """Paths of the sample photographs available here (sorted, so the order is stable)."""
    paths = []
    try:
        import matplotlib  # noqa: PLC0415

        paths.append(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    except ImportError:
        pass
    try:
        import skimage  # noqa: PLC0415

        data = os.path.join(os.path.dirname(skimage.__file__), "data")
        for name in ("astronaut.png", "brick.png", "chelsea.png", "coffee.png", "grass.png", "gravel.png",
                     "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "coins.png", "camera.png",
                     "moon.png", "retina.jpg", "ihc.png"):
            paths.append(os.path.join(data, name))
    except ImportError:
        pass
    if extra_dir:
        for ext in ("jpg", "jpeg", "png"):
            paths.extend(glob.glob(os.path.join(extra_dir, f"*.{ext}")))
    return sorted(p for p in set(paths) if os.path.isfile(p))


class Photos:
    """Loads each photograph once (as RGB uint8)."""

    def __init__(self, paths):
        self.paths = list(paths)
        self._cache = {}

    def __len__(self):
        return len(self.paths)

    def get(self, i):
        if i not in self._cache:
            with Image.open(self.paths[i]) as im:
                self._cache[i] = np.asarray(im.convert("RGB"))
        return self._cache[i]


def photo_background(rng, photos, height, width):
    """A random crop of a photograph, resized to ``height x width``, flipped and recoloured."""
    photo = photos.get(int(rng.integers(len(photos))))
    ph, pw = photo.shape[:2]
    # Crop 35-100 % of the photo's side, with the target aspect ratio.
    frac = rng.uniform(0.35, 1.0)
    ch = min(ph, int(frac * min(ph, pw * height / width)))
    cw = min(pw, int(ch * width / height))
    y0 = int(rng.integers(0, ph - ch + 1))
    x0 = int(rng.integers(0, pw - cw + 1))
    crop = Image.fromarray(photo[y0:y0 + ch, x0:x0 + cw]).resize((width, height), Image.BILINEAR)
    image = np.asarray(crop, np.float32)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    # Channel gains and a brightness shift: the same photo in other lights and colours.
    image = image * rng.uniform(0.6, 1.3, size=3) + rng.uniform(-30, 30)
    return np.clip(image, 0, 255)


def texture_background(rng, height, width):
    """Coloured 1/f noise (a natural-image spectrum) with clutter strokes of no class."""
    beta = rng.uniform(0.9, 1.6)
    base = rng.uniform(40, 215, size=3)
    image = np.stack([noise_1f(rng, height, width, beta) for _ in range(3)], axis=-1)
    mix = rng.uniform(0.2, 1.0)  # how correlated the channels are
    image = mix * image[..., :1] + (1 - mix) * image
    image = base + image * rng.uniform(15, 55)
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    side = min(height, width)
    for _ in range(int(rng.integers(0, 12))):
        colour = tuple(int(c) for c in rng.uniform(0, 255, size=3))
        points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height)))]
        for _ in range(int(rng.integers(1, 5))):
            step = rng.uniform(0.03, 0.3) * side
            angle = rng.uniform(0, 2 * math.pi)
            x, y = points[-1]
            points.append((x + step * math.cos(angle), y + step * math.sin(angle)))
        draw.line(points, fill=colour, width=int(rng.integers(1, max(2, side // 40))))
        if rng.random() < 0.3:  # a blob
            cx, cy = points[-1]
            r = rng.uniform(0.01, 0.06) * side
            draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r], fill=colour)
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    return np.asarray(canvas, np.float32)


# --- object masks --------------------------------------------------------------------

class Fonts:
    """The typefaces of ``glyphs``, loaded once per size."""

    def __init__(self):
        import matplotlib  # noqa: PLC0415

        ttf = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
        self.paths = [os.path.join(ttf, f"{stem}.ttf") for stem in FONT_STEMS]
        missing = [p for p in self.paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"glyphs needs matplotlib's fonts; missing: {', '.join(missing)}")
        self._cache = {}

    def get(self, index, size):
        key = (index, size)
        if key not in self._cache:
            self._cache[key] = ImageFont.truetype(self.paths[index], size)
        return self._cache[key]


def _crop_to_content(mask):
    arr = np.asarray(mask)
    ys, xs = np.nonzero(arr > 127)
    if ys.size == 0:
        return None
    return Image.fromarray(arr[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def glyph_mask(rng, fonts, class_id):
    """An 'L' mask of glyph ``class_id`` from a random typeface, stretched and rotated."""
    size = 160
    font = fonts.get(int(rng.integers(len(fonts.paths))), size)
    canvas = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 4), GLYPHS[class_id], fill=255, font=font)
    return canvas


def _polygon(n, radius, phase=0.0, inner=None):
    points = []
    for k in range(n * (2 if inner else 1)):
        r = inner if inner and k % 2 else radius
        a = phase + k * math.pi / (n if inner else n / 2)
        points.append((r * math.cos(a), r * math.sin(a)))
    return points


def _heart(radius, steps=64):
    pts = []
    for k in range(steps):
        t = 2 * math.pi * k / steps
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x * radius / 17, y * radius / 17))
    return pts


SYMBOL_OUTLINES = {
    "square": lambda r: [(-r, -r), (r, -r), (r, r), (-r, r)],
    "triangle": lambda r: _polygon(3, r, phase=-math.pi / 2),
    "star": lambda r: _polygon(5, r, phase=-math.pi / 2, inner=0.42 * r),
    "heart": _heart,
    "arrow": lambda r: [(-r, -0.3 * r), (0.15 * r, -0.3 * r), (0.15 * r, -0.75 * r), (r, 0),
                        (0.15 * r, 0.75 * r), (0.15 * r, 0.3 * r), (-r, 0.3 * r)],
    "cross": lambda r: [(-0.3 * r, -r), (0.3 * r, -r), (0.3 * r, -0.3 * r), (r, -0.3 * r), (r, 0.3 * r),
                        (0.3 * r, 0.3 * r), (0.3 * r, r), (-0.3 * r, r), (-0.3 * r, 0.3 * r), (-r, 0.3 * r),
                        (-r, -0.3 * r), (-0.3 * r, -0.3 * r)],
    "hexagon": lambda r: _polygon(6, r),
    "bolt": lambda r: [(-0.15 * r, -r), (0.55 * r, -r), (0.15 * r, -0.15 * r), (0.6 * r, -0.15 * r),
                       (-0.35 * r, r), (-0.05 * r, 0.1 * r), (-0.5 * r, 0.1 * r)],
}


def symbol_mask(rng, class_id):
    """An 'L' mask of outline symbol ``class_id`` (stroke of 6-18 % of its side)."""
    size = 200
    r = 80.0
    c = size / 2
    width = max(2, int(rng.uniform(0.06, 0.18) * 2 * r))
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    name = SYMBOLS[class_id]
    if name == "ring":
        draw.ellipse([c - r, c - r, c + r, c + r], outline=255, width=width)
    elif name == "crescent":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
        off = rng.uniform(0.35, 0.6) * r
        draw.ellipse([c - r + off, c - r - 0.1 * r, c + r + off, c + r - 0.1 * r], fill=0)
        # Outline only: the crescent minus itself shrunk by the stroke width.
        shrunk = canvas.filter(ImageFilter.MinFilter(2 * (width // 2) + 1))
        canvas = Image.fromarray(np.where(np.asarray(shrunk) > 127, 0, np.asarray(canvas)).astype(np.uint8))
    else:
        points = [(c + x, c + y) for x, y in SYMBOL_OUTLINES[name](r)]
        draw.line(points + [points[0], points[1]], fill=255, width=width, joint="curve")
    return canvas


# --- images ---------------------------------------------------------------------------

def _overlap(box, boxes):
    """The largest share of ``box`` or of one of ``boxes`` that their intersection covers."""
    if not boxes:
        return 0.0
    from tfzoo.ops import boxes as box_ops  # noqa: PLC0415

    one = np.asarray([box], np.float32)
    others = np.asarray(boxes, np.float32)
    inter = box_ops.intersection(one, others).numpy()[0]
    smaller = np.minimum(box_ops.area(one).numpy()[0], box_ops.area(others).numpy())
    return float((inter / smaller).max())


def _luminance(rgb):
    return float(np.dot(rgb, (0.299, 0.587, 0.114)))


def _object_colour(rng, background_patch):
    """A random colour whose luminance differs from the patch's mean by MIN_CONTRAST or more."""
    bg = _luminance(background_patch.reshape(-1, 3).mean(axis=0))
    for _ in range(50):
        colour = rng.uniform(0, 255, size=3)
        if abs(_luminance(colour) - bg) >= MIN_CONTRAST:
            return colour
    return np.full(3, 255.0 if bg < 128 else 0.0)


def make_example(standin, split, index, seed=0, photos=None, fonts=None):
    """One canonical example (``image`` uint8, ``boxes`` normalized, ``classes``, ``image_id``)."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index, STANDINS.index(standin)])
    height, width = (int(s) for s in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    if photos is not None and len(photos) and rng.random() < 0.5:
        image = photo_background(rng, photos, height, width)
    else:
        image = texture_background(rng, height, width)
    count = 0 if rng.random() < 0.1 else int(rng.integers(1, MAX_OBJECTS + 1))
    short = min(height, width)
    boxes, classes = [], []
    for _ in range(count):
        class_id = int(rng.integers(10))
        if standin == "glyphs":
            mask = glyph_mask(rng, fonts, class_id)
            angle = rng.uniform(-10, 10)
        else:
            mask = symbol_mask(rng, class_id)
            angle = rng.uniform(-20, 20)
        mask = mask.rotate(float(angle), resample=Image.BILINEAR, expand=True)
        mask = _crop_to_content(mask)
        if mask is None:
            continue
        stretch = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
        mw, mh = mask.size[0] * stretch, mask.size[1] / stretch
        side = rng.uniform(MIN_OBJECT, MAX_OBJECT) * short  # the longer side of the object
        scale = side / max(mw, mh)
        ow, oh = max(3, int(round(mw * scale))), max(3, int(round(mh * scale)))
        if ow >= width or oh >= height:
            continue
        for _ in range(20):
            y0 = int(rng.integers(0, height - oh + 1))
            x0 = int(rng.integers(0, width - ow + 1))
            box = (y0, x0, y0 + oh, x0 + ow)
            if _overlap(box, boxes) <= MAX_OVERLAP:
                break
        else:
            continue
        alpha = np.asarray(mask.resize((ow, oh), Image.BILINEAR), np.float32)[..., None] / 255.0
        patch = image[y0:y0 + oh, x0:x0 + ow]
        colour = _object_colour(rng, patch)
        # Noise on the object's colour: no flat fill, and the same noise kind as everywhere.
        shade = colour + rng.uniform(5, 25) * rng.normal(size=(oh, ow, 1)) * rng.uniform(0.5, 1.0, size=3)
        image[y0:y0 + oh, x0:x0 + ow] = patch * (1 - alpha) + np.clip(shade, 0, 255) * alpha
        ys, xs = np.nonzero(alpha[..., 0] > 0.5)
        if ys.size == 0:
            continue
        boxes.append((y0 + ys.min(), x0 + xs.min(), y0 + ys.max() + 1, x0 + xs.max() + 1))
        classes.append(class_id)
    image += rng.normal(0, rng.uniform(1, 6), size=image.shape)  # sensor noise
    boxes_px = np.asarray(boxes, np.float32).reshape(-1, 4)
    norm = np.asarray([height, width, height, width], np.float32)
    return {
        "image": np.clip(image, 0, 255).astype(np.uint8),
        "boxes": boxes_px / norm,
        "classes": np.asarray(classes, np.int32),
        "is_crowd": np.zeros(len(classes), bool),
        "difficult": np.zeros(len(classes), bool),
        "image_id": f"{split}_{index:06d}",
    }


def write(standin, root, train_images=600, val_images=150, seed=0, photos_dir=None, progress=True):
    """Writes stand-in ``standin`` as a VOC folder at ``root`` (replaced); returns its stats."""
    from tfzoo.data import voc  # noqa: PLC0415

    if standin not in STANDINS:
        raise ValueError(f"unknown stand-in {standin!r}; known: {', '.join(STANDINS)}")
    if os.path.exists(root):
        shutil.rmtree(root)
    photo_paths = find_photos(photos_dir)
    photos = Photos(photo_paths)
    fonts = Fonts() if standin == "glyphs" else None
    sides, counts = [], []

    def examples(split, count):
        iterator = range(count)
        if progress:
            from tqdm import tqdm  # noqa: PLC0415

            iterator = tqdm(iterator, desc=f"{standin}/{split}", file=sys.stderr)
        for i in iterator:
            ex = make_example(standin, split, i, seed, photos, fonts)
            h, w = ex["image"].shape[:2]
            b = ex["boxes"]
            sides.extend(np.maximum((b[:, 2] - b[:, 0]) * h, (b[:, 3] - b[:, 1]) * w))
            counts.append(len(b))
            yield ex

    names = class_names(standin)
    voc.write(examples("train", train_images), root, "train", names)
    voc.write(examples("val", val_images), root, "val", names)
    os.remove(os.path.join(root, voc.LABELS_FILE))  # a user's folder has none
    sides = np.asarray(sides)
    counts = np.asarray(counts)
    return {"standin": standin, "root": root, "seed": seed, "train_images": train_images,
            "val_images": val_images, "classes": list(names), "objects": int(counts.sum()),
            "objects_per_image": {"min": int(counts.min()), "mean": round(float(counts.mean()), 2),
                                  "max": int(counts.max())},
            "object_side_px": {"min": round(float(sides.min()), 1), "median": round(float(np.median(sides)), 1),
                                "max": round(float(sides.max()), 1)},
            "photos": [os.path.basename(p) for p in photo_paths]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("standin", choices=STANDINS)
    parser.add_argument("root", help="the VOC folder to write (replaced if it exists)")
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--val-images", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photos", help="a folder of extra background photographs (JPEG/PNG)")
    args = parser.parse_args(argv)
    stats = write(args.standin, args.root, args.train_images, args.val_images, args.seed, args.photos)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
