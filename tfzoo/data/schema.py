"""The canonical detection example every reader yields and every later stage consumes.

One example (unbatched) is a dict:

=============  =================  ===========================================================
key            dtype, shape       meaning
=============  =================  ===========================================================
``image``      uint8 [H, W, 3]    RGB pixels
``boxes``      float32 [G, 4]     ``[y1, x1, y2, x2]`` normalized to [0, 1] of ``image``
``classes``    int32 [G]          contiguous class ids ``0..C-1`` (background excluded)
``is_crowd``   bool [G]           COCO ``iscrowd``; ignored by matchers, not a positive
``difficult``  bool [G]           VOC ``difficult``; excluded from VOC AP, like the devkit
``image_id``   string []          the dataset's own id (COCO: the integer as text; VOC: stem)
``area``       float32 [G]        optional: the annotation's object area in pixels of the
                                  original image (COCO ``area``, the segment's area), ``-1``
                                  where the annotation gives none
``proposals``  float32 [R, 4]      optional: region proposals of the image (selective search,
                                  a user's file), normalized ``[y1, x1, y2, x2]``, best first;
                                  validation, augmentation and resizing move them with the
                                  image (they are not ground truth: never filtered with it)
=============  =================  ===========================================================

``area`` is what COCO's APs/APm/APl bucket objects by (as pycocotools does); evaluation
falls back to the box area where it is ``-1`` or the key is absent. The file readers (COCO,
VOC, image folders) and TFDS datasets with ``objects/area`` carry it; the training pipeline
drops it (:func:`tfzoo.data.pipeline.validate`).

Batched examples are padded: ``boxes [B, G, 4]`` with zeros, ``classes [B, G]`` with
:data:`PAD_CLASS` (-1), ``is_crowd``/``difficult`` with False.
"""
from __future__ import annotations

import tensorflow as tf

from tfzoo.data import validate
from tfzoo.ops.matcher import BACKGROUND, IGNORE

#: Class id of padding rows in batched ground truth (and of background in targets).
PAD_CLASS = BACKGROUND
#: Class id meaning "ignore this target" in encoded targets.
IGNORE_CLASS = IGNORE

IMAGE = "image"
BOXES = "boxes"
CLASSES = "classes"
IS_CROWD = "is_crowd"
DIFFICULT = "difficult"
IMAGE_ID = "image_id"
AREA = "area"
PROPOSALS = "proposals"
#: ``area`` value meaning "the annotation gives no area".
NO_AREA = validate.NO_AREA

KEYS = (IMAGE, BOXES, CLASSES, IS_CROWD, DIFFICULT, IMAGE_ID)
#: Keys holding one row per box: filtered together by augmentation, read by target
#: encoders and dense ground truth.
BOX_KEYS = (BOXES, CLASSES, IS_CROWD, DIFFICULT)
#: Per-box keys an example may carry or lack; filtered with the box keys when present.
OPTIONAL_BOX_KEYS = (AREA,)


def output_signature(area=False):
    """``tf.TensorSpec`` dict of one unbatched canonical example (for ``from_generator``);
    with the optional ``area`` key when ``area``."""
    spec = {
        IMAGE: tf.TensorSpec([None, None, 3], tf.uint8),
        BOXES: tf.TensorSpec([None, 4], tf.float32),
        CLASSES: tf.TensorSpec([None], tf.int32),
        IS_CROWD: tf.TensorSpec([None], tf.bool),
        DIFFICULT: tf.TensorSpec([None], tf.bool),
        IMAGE_ID: tf.TensorSpec([], tf.string),
    }
    if area:
        spec[AREA] = tf.TensorSpec([None], tf.float32)
    return spec


def padding_values():
    """Values ``Dataset.padded_batch`` pads each key with."""
    return {
        IMAGE: tf.constant(0, tf.uint8),
        BOXES: tf.constant(0.0, tf.float32),
        CLASSES: tf.constant(PAD_CLASS, tf.int32),
        IS_CROWD: tf.constant(False),
        DIFFICULT: tf.constant(False),
        IMAGE_ID: tf.constant("", tf.string),
    }


def make_example(image, boxes, classes, is_crowd=None, difficult=None, image_id=""):
    """Builds a canonical example dict from array-likes, filling optional flags with False."""
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    n = tf.shape(classes)[0]
    is_crowd = tf.zeros([n], tf.bool) if is_crowd is None else tf.reshape(tf.cast(is_crowd, tf.bool), [-1])
    difficult = tf.zeros([n], tf.bool) if difficult is None else tf.reshape(tf.cast(difficult, tf.bool), [-1])
    return {
        IMAGE: tf.convert_to_tensor(image, tf.uint8),
        BOXES: boxes,
        CLASSES: classes,
        IS_CROWD: is_crowd,
        DIFFICULT: difficult,
        IMAGE_ID: tf.convert_to_tensor(image_id, tf.string),
    }
