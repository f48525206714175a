"""Published detector weights converted into tfzoo's models (``tfzoo convert``).

    detector = tfzoo.convert.load("yolov3.weights", model="yolov3")            # Darknet
    tfzoo.convert.convert("yolov3.weights", "yolov3", "converted/yolov3", cfg="yolov3.cfg")
    detector = tfzoo.convert.load("retinanet_resnet50_fpn_coco-eeacb38b.pth")    # torchvision

:func:`convert` writes a folder as ``tfzoo train`` does (``model.keras`` and
``config.json``, plus ``converted.json`` naming the source), which ``tfzoo predict``,
``evaluate``, ``export`` and ``compare --trained`` take like a trained run.

Sources so far:

- Darknet ``.weights`` files of YOLOv3 and YOLOv3-tiny (:mod:`tfzoo.convert.darknet`),
  with the ``.cfg`` they go with (without one, the published ``yolov3.cfg`` /
  ``yolov3-tiny.cfg``: 608 / 416 px, 80 COCO classes, their anchors and masks);
- torchvision's ``retinanet_resnet50_fpn``, ``fasterrcnn_resnet50_fpn`` and
  ``ssd300_vgg16`` checkpoints (``.pth`` or ``.safetensors``; :mod:`tfzoo.convert.torchvision`)
  into ``retinanet``, ``faster_rcnn_fpn`` and ``ssd300``.
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


#: torchvision architectures a checkpoint's keys identify -> the tfzoo preset they convert into.
TORCHVISION_SOURCES = {
    "retinanet_resnet50_fpn": "retinanet",
    "fasterrcnn_resnet50_fpn": "faster_rcnn_fpn",
    "ssd300_vgg16": "ssd300",
}
#: The input size of a converted torchvision detector unless one is given: torchvision
#: evaluates COCO with the short side at 800 (the long at most 1333); tfzoo letterboxes the
#: long side to the square input, and 1024 puts a 4:3 photograph's short side at 768.
TORCHVISION_IMAGE_SIZE = 1024


def torchvision_architecture(state, path="checkpoint"):
    """The torchvision architecture whose state dict ``state`` is (its keys say)."""
    from tfzoo.convert.torchvision import CheckpointError  # noqa: PLC0415

    keys = set(state)
    if "head.classification_head.cls_logits.weight" in keys and "backbone.body.conv1.weight" in keys:
        return "retinanet_resnet50_fpn"
    if "roi_heads.box_predictor.cls_score.weight" in keys:
        return "fasterrcnn_resnet50_fpn"
    if "head.classification_head.module_list.0.weight" in keys:
        return "ssd300_vgg16"
    raise CheckpointError(f"{path}: not a checkpoint of a torchvision detector tfzoo converts "
                          f"({', '.join(TORCHVISION_SOURCES)}); its first keys: {', '.join(sorted(keys)[:3])}")


def load_state(state, model=None, image_size=None, bn_eps=None, info=None, source="state dict"):
    """A tfzoo detector holding a torchvision state dict (``{name: array}``, current key
    spellings: :func:`tfzoo.convert.torchvision.read_state_dict` reads a file into one).
    The preset follows from its keys; ``model`` may name it. Other arguments as
    :func:`load`'s; ``source`` names the state dict in errors."""
    import tfzoo  # noqa: PLC0415
    from tfzoo.convert import torchvision as tv  # noqa: PLC0415

    architecture = torchvision_architecture(state, source)
    preset = TORCHVISION_SOURCES[architecture]
    if model is not None and model != preset:
        raise ValueError(f"{source}: a {architecture} checkpoint converts into {preset}, not {model}")
    configure, fill = {"retinanet_resnet50_fpn": (tv.retinanet_config, tv.load_retinanet),
                       "fasterrcnn_resnet50_fpn": (tv.faster_rcnn_config, tv.load_faster_rcnn),
                       "ssd300_vgg16": (tv.ssd_config, tv.load_ssd)}[architecture]
    if architecture == "ssd300_vgg16":  # its default boxes fix the size
        overrides = configure(state, image_size, source)
    else:
        overrides = configure(state, image_size or TORCHVISION_IMAGE_SIZE, source)
    detector = tfzoo.build_model(preset, **overrides)
    fill(detector, state, source, bn_eps)
    if info is not None:
        info.update({"format": "torchvision", "architecture": architecture,
                     "bn_eps": tv.batch_norm_eps(state, bn_eps)})
    return detector


def check(detector, source, images=2, seed=0, bn_eps=None):
    """Compares a converted ``detector`` with torchvision's own model holding the checkpoint
    ``source`` (:func:`tfzoo.convert.torchvision.check_retinanet` and its siblings) on
    ``images`` (``[N, S, S, 3]`` RGB pixels at the detector's size, or a count of random
    ones). Needs torch and torchvision. Returns their report."""
    import numpy as np  # noqa: PLC0415

    from tfzoo.convert import torchvision as tv  # noqa: PLC0415

    state = tv.read_state_dict(source)
    size = detector.config.image_size
    if isinstance(images, int):
        images = np.random.default_rng(seed).uniform(0, 255, (images, size, size, 3)).astype(np.float32)
    architecture = torchvision_architecture(state, source)
    if architecture == "ssd300_vgg16":
        return tv.check_ssd(detector, state, images, path=source)
    checker = tv.check_retinanet if architecture == "retinanet_resnet50_fpn" else tv.check_faster_rcnn
    return checker(detector, state, images, bn_eps=bn_eps, path=source)


def load(source, model=None, cfg=None, image_size=None, bn_eps=None, info=None):
    """A tfzoo detector holding the weights of ``source``.

    ``source``: a Darknet ``.weights`` file (``model``: ``yolov3`` or ``yolov3_tiny``;
    default: the cfg's, else ``yolov3``; ``cfg``: the Darknet cfg the file goes with,
    default the published one of ``model``), or a torchvision checkpoint (``.pth``, ``.pt``,
    ``.safetensors``; the preset follows from its keys, ``model`` may name it; ``image_size``
    the square input, default :data:`TORCHVISION_IMAGE_SIZE`; ``bn_eps`` torchvision's
    batch-norm epsilon, default by :mod:`tfzoo.convert.torchvision`'s rule). The detector's
    config follows the source (its widths, size, classes, anchors). ``info``, a dict, receives
    what the conversion found (format, architecture, epsilon)."""
    import tfzoo  # noqa: PLC0415
    from tfzoo.convert import darknet  # noqa: PLC0415
    from tfzoo.convert.torchvision import CHECKPOINT_SUFFIXES  # noqa: PLC0415

    source = os.fspath(source)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such file")
    if source.endswith(CHECKPOINT_SUFFIXES):
        if cfg is not None:
            raise ValueError(f"{source}: a torchvision checkpoint takes no Darknet cfg")
        from tfzoo.convert.torchvision import read_state_dict  # noqa: PLC0415

        return load_state(read_state_dict(source), model, image_size, bn_eps, info, source)
    if not source.endswith(".weights"):
        raise ValueError(f"{source}: not a Darknet .weights file nor a torchvision checkpoint "
                         f"({', '.join(CHECKPOINT_SUFFIXES)})")
    if bn_eps is not None:
        raise ValueError(f"{source}: bn_eps applies to torchvision checkpoints only")
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
    if image_size is not None and image_size != detector.config.image_size:
        detector = detector.with_image_size(image_size)
    darknet.load_yolo_weights(detector, source)
    if info is not None:
        info.update({"format": "darknet"})
    return detector


def convert(source, model, out, cfg=None, overwrite=False, image_size=None, bn_eps=None, info=None):
    """Converts ``source`` (:func:`load`) into the folder ``out``: ``model.keras``,
    ``config.json`` and ``converted.json``, each written atomically; a folder that holds a
    model is refused unless ``overwrite``. Returns the detector; ``info``, a dict, receives
    what ``converted.json`` records."""
    from tfzoo.atomic import save_keras_atomic, write_json_atomic  # noqa: PLC0415
    from tfzoo.train.rundir import CONFIG_FILE, METRICS_FILE, MODEL_FILE, STATE_FILE  # noqa: PLC0415

    model_path = os.path.join(out, MODEL_FILE)
    if os.path.exists(model_path) and not overwrite:
        raise FileExistsError(f"{out} holds a model.keras; pass overwrite (--overwrite) to replace it")
    info = {} if info is None else info
    detector = load(source, model, cfg, image_size=image_size, bn_eps=bn_eps, info=info)
    os.makedirs(out, exist_ok=True)
    for stale in (STATE_FILE, METRICS_FILE):  # a training run's files describe other weights
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
    save_keras_atomic(detector, model_path)
    write_json_atomic(os.path.join(out, CONFIG_FILE), json.loads(detector.config.to_json()))
    write_json_atomic(os.path.join(out, SOURCE_FILE),
                      {"source": os.path.abspath(source), "cfg": os.path.abspath(cfg) if cfg else None,
                       "model": detector.config.name, **info})
    return detector
