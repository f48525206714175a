"""Detections of one image in its own pixels, drawn with PIL (``tfzoo predict``, the demo).

- :func:`image_detections`: a loaded model's detections of one image as JSON-ready rows
  in pixels of that image (what ``tfzoo predict`` writes to ``detections.json``);
- :func:`draw_detections`: boxes, class names and scores drawn on the image;
- :func:`save_png_atomic`: writes the drawing (temporary name, then ``os.replace``).

Boxes here are pixels of the image drawn on, ``[y1, x1, y2, x2]`` (``boxes_px``).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: One colour per class id (cycled): Tableau 10.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def class_color(class_id):
    """The RGB colour of class ``class_id``."""
    return PALETTE[int(class_id) % len(PALETTE)]


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def draw_detections(image, boxes_px, classes, scores, class_names):
    """A ``PIL.Image`` of ``image`` with each detection's box, class name and score drawn.

    Args:
      image: uint8 ``[H, W, 3]`` RGB array (or a PIL image).
      boxes_px: ``[N, 4]`` pixel ``[y1, x1, y2, x2]`` of ``image``.
      classes: ``[N]`` class ids (index into ``class_names``).
      scores: ``[N]`` scores in [0, 1].
      class_names: names by class id.

    Line width and label size follow the image size; labels sit above their box (inside
    it when the box touches the top edge).
    """
    canvas = image.copy() if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    canvas = canvas.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    side = max(canvas.size)
    width = max(1, round(side / 300))
    font = _font(max(10, round(side / 40)))
    for box, cls, score in zip(np.asarray(boxes_px, np.float32).reshape(-1, 4), classes, scores):
        y1, x1, y2, x2 = (float(v) for v in box)
        color = class_color(cls)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        name = class_names[int(cls)] if 0 <= int(cls) < len(class_names) else str(int(cls))
        label = f"{name} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        text_w, text_h = right - left, bottom - top
        label_y = y1 - text_h - 2 * width if y1 - text_h - 2 * width >= 0 else y1
        draw.rectangle([x1, label_y, x1 + text_w + 2 * width, label_y + text_h + 2 * width], fill=color)
        draw.text((x1 + width - left, label_y + width - top), label, fill=(255, 255, 255), font=font)
    return canvas


def image_detections(model, image, score_threshold):
    """Detections of one uint8 image ``[H, W, 3]`` in its own pixels, best first.

    ``model``: a loaded model (:func:`tfzoo.export.load_model`). Keeps scores
    ``>= score_threshold`` and boxes with a positive extent on the image (a box wholly in
    the letterbox padding is clipped to nothing). Each row: ``class`` (name), ``class_id``,
    ``score``, ``box_yxyx_px`` ``[y1, x1, y2, x2]`` and ``bbox_xywh_px`` ``[x, y, w, h]``.
    """
    from tfzoo.ops import boxes as box_ops

    height, width = np.asarray(image).shape[:2]
    out = model.detect_original(image)
    count = out["num_detections"]
    keep = (out["detection_scores"][:count] >= score_threshold) & np.asarray(
        box_ops.valid_mask(out["detection_boxes"][:count]))
    boxes_px = np.asarray(box_ops.denormalize(out["detection_boxes"][:count][keep], height, width))
    boxes_xywh_px = np.asarray(box_ops.yxyx_to_xywh(boxes_px))
    rows = []
    for box, box_xywh, cls, score in zip(boxes_px, boxes_xywh_px, out["detection_classes"][:count][keep],
                                         out["detection_scores"][:count][keep]):
        rows.append({
            "class": model.class_names[int(cls)],
            "class_id": int(cls),
            "score": round(float(score), 6),
            "box_yxyx_px": [round(float(v), 2) for v in box],
            "bbox_xywh_px": [round(float(v), 2) for v in box_xywh],
        })
    return rows


def save_png_atomic(image, path):
    """Saves the PIL ``image`` as a PNG at ``path`` (temporary name, then ``os.replace``)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
