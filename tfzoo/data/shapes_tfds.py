"""The builtin ``shapes`` dataset (:mod:`tfzoo.data.shapes`) as a TFDS builder, ``tfzoo_shapes``.

Usage: importing this module registers the builder with TFDS, after which it loads like
any TFDS dataset (preparing it the first time: it is generated locally, nothing is
downloaded; the 2000 + 200 + 200 images take a few tens of seconds)::

    import tensorflow_datasets as tfds
    import tfzoo.data.shapes_tfds  # noqa: F401  (registers "tfzoo_shapes")

    ds = tfds.load("tfzoo_shapes", split="val")

``tfzoo.data.load("tfds:tfzoo_shapes", split)`` imports this module itself (through
:mod:`tfzoo.data.tfds_reader`), so the spec works without the import above; ``import
tfzoo.data`` does not import it (nor TFDS).

The records hold exactly what :func:`tfzoo.data.shapes.generate` draws: ``image`` (uint8,
PNG-encoded, so lossless), ``image/filename`` (``"<image_id>.png"``, whose stem
:mod:`tfzoo.data.tfds_reader` turns back into the ``image_id``) and ``objects`` with
``bbox`` (``[y1, x1, y2, x2]`` normalized, the canonical boxes unchanged) and ``label``
(:data:`~tfzoo.data.shapes.CLASS_NAMES`). Shapes has no crowd or difficult objects, so the
reader fills those flags with False. Splits and their sizes come from
:data:`~tfzoo.data.shapes.SPLITS`; examples keep their index order (shuffling disabled),
so ``split="val[:10]"`` is the same images as the spec ``shapes:10``.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from tfzoo.data import schema, shapes


class TfzooShapes(tfds.core.GeneratorBasedBuilder):
    """``tfzoo_shapes``: :mod:`tfzoo.data.shapes` written to TFDS records."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: the images of tfzoo.data.shapes.generate."}
    # This file, given rather than looked up: TFDS 4.9.10 looks it up through
    # `importlib_resources`, which it declares only for Python < 3.9 (tensorflow/datasets#11212).
    code_path = epath.Path(__file__)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n", 1)[0],
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
                "image/filename": tfds.features.Text(),
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(names=shapes.CLASS_NAMES),
                }),
            }),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated locally: nothing to download
        return {split: self._generate_examples(split) for split in shapes.SPLITS}

    def _generate_examples(self, split):
        for index in range(shapes.num_images(split)):
            ex = shapes.generate(split, index)
            yield index, {
                "image": ex[schema.IMAGE],
                "image/filename": f"{ex[schema.IMAGE_ID]}.png",
                "objects": {"bbox": ex[schema.BOXES], "label": ex[schema.CLASSES].astype(np.int64)},
            }
