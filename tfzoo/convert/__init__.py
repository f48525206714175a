"""Published detector weights converted into tfzoo's models (``tfzoo convert``).

    detector = tfzoo.convert.load("yolov3.weights", model="yolov3")            # Darknet
    tfzoo.convert.convert("yolov3.weights", "yolov3", "converted/yolov3", cfg="yolov3.cfg")

:func:`convert` writes a folder as ``tfzoo train`` does (``model.keras`` and
``config.json``, plus ``converted.json`` naming the source), which ``tfzoo predict``,
``evaluate``, ``export`` and ``compare --trained`` take like a trained run.

Sources so far: Darknet ``.weights`` files of YOLOv3 and YOLOv3-tiny
(:mod:`tfzoo.convert.darknet`), with the ``.cfg`` they go with (without one, the published
``yolov3.cfg`` / ``yolov3-tiny.cfg``: 608 / 416 px, 80 COCO classes, their anchors and
masks). torchvision checkpoints are issue 24's next part.
"""
from __future__ import annotations

import json
import os

#: The published cfgs' settings, for a ``.weights`` file given without its cfg.
PUBLISHED = {
    "yolov3": {"image_size": 608, "num_classes": 80},  # yolov3.cfg's [net] (the paper's COCO figure is at 608)
    "yolov3_tiny": {"image_size": 416, "num_classes": 80},
}
#: Written beside the model: where the weights came from.
SOURCE_FILE = "converted.json"


def load(source, model=None, cfg=None):
    """A tfzoo detector holding the weights of ``source`` (a Darknet ``.weights`` file).

    ``model``: the preset (``yolov3`` or ``yolov3_tiny``; default: the cfg's, else
    ``yolov3``); ``cfg``: the path of the Darknet cfg the file goes with (default: the
    published one of ``model``). The detector's config follows the source: full widths,
    the cfg's size, classes, priors and masks, and no prior fitting when it trains on."""
    import tfzoo  # noqa: PLC0415
    from tfzoo.convert import darknet  # noqa: PLC0415

    if not str(source).endswith(".weights"):
        raise ValueError(f"{source}: not a Darknet .weights file (the one source converted so far)")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such file")
    if cfg is not None:
        with open(cfg, encoding="utf-8") as f:
            text = f.read()
        try:
            detector = darknet.build_for_cfg(text, model)
        except (KeyError, ValueError) as error:
            raise ValueError(f"{cfg}: {error}") from None
    else:
        model = model or "yolov3"
        if model not in PUBLISHED:
            raise ValueError(f"Darknet .weights convert into {', '.join(PUBLISHED)}, not {model!r}")
        detector = tfzoo.build_model(model, **darknet.FULL_WIDTH, **PUBLISHED[model])
    darknet.load_yolo_weights(detector, source)
    return detector


def convert(source, model, out, cfg=None, overwrite=False):
    """Converts ``source`` (:func:`load`) into the folder ``out``: ``model.keras``,
    ``config.json`` and ``converted.json``, each written atomically; a folder that holds a
    model is refused unless ``overwrite``. Returns the detector."""
    from tfzoo.atomic import save_keras_atomic, write_json_atomic  # noqa: PLC0415
    from tfzoo.train.rundir import CONFIG_FILE, MODEL_FILE  # noqa: PLC0415

    from tfzoo.train.rundir import METRICS_FILE, STATE_FILE  # noqa: PLC0415

    model_path = os.path.join(out, MODEL_FILE)
    if os.path.exists(model_path) and not overwrite:
        raise FileExistsError(f"{out} holds a model.keras; pass overwrite (--overwrite) to replace it")
    detector = load(source, model, cfg)
    os.makedirs(out, exist_ok=True)
    for stale in (STATE_FILE, METRICS_FILE):  # a training run's files describe other weights
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
    save_keras_atomic(detector, model_path)
    write_json_atomic(os.path.join(out, CONFIG_FILE), json.loads(detector.config.to_json()))
    write_json_atomic(os.path.join(out, SOURCE_FILE),
                      {"source": os.path.abspath(source), "cfg": os.path.abspath(cfg) if cfg else None,
                       "model": detector.config.name, "format": "darknet"})
    return detector
