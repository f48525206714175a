"""Issue 24's exactness check of the torchvision converter, without a download.

For ``retinanet_resnet50_fpn`` and ``fasterrcnn_resnet50_fpn``, each with both batch-norm
kinds torchvision writes (``BatchNorm2d``, epsilon 1e-5, as a model built without weights
saves it; ``FrozenBatchNorm2d`` at epsilon 0, as the published COCO_V1 checkpoints load),
and for ``ssd300_vgg16``, it builds torchvision's model with random weights (random
batch-norm statistics too; SSD's class head scaled by 0.02 so that no softmax saturates),
saves the state dict (``.pth``; the frozen one as ``.safetensors``, which tfzoo reads
without torch), then:

1. ``tfzoo.convert.convert`` (what ``tfzoo convert`` runs) at ``--image-size``;
2. :func:`tfzoo.convert.torchvision.check_retinanet` / ``check_faster_rcnn`` /
   ``check_ssd`` on ``--images`` random images (RetinaNet and SSD: both sides' score
   threshold where about ``--detections`` (box, class) pairs of the first image pass):
   backbone maps and raw head outputs (largest difference relative to torchvision's
   largest magnitude) and detections matched one to one by class and IoU >= 0.99;
3. ``tfzoo export`` of the converted folder to a SavedModel and a TFLite file (each is
   loaded back and checked against the Keras model by the command; the TFLite file must
   hold builtin ops only).

Needs torch and torchvision (``pip install -e '.[convert]'``)::

    python benchmarks/bench_convert.py --image-size 640 --images 2 --out /tmp/tfzoo_convert

writes ``--out/bench_convert.json`` and prints the table of BENCHMARKS.md.
"""
from __future__ import annotations

# torchvision first: imported after TensorFlow it crashes the process (TF 2.21).
import torch  # noqa: I001
import torchvision

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


BUILDERS = {"retinanet": "retinanet_resnet50_fpn", "faster_rcnn_fpn": "fasterrcnn_resnet50_fpn",
            "ssd300": "ssd300_vgg16"}


def random_torchvision(architecture, seed):
    """torchvision's model, random weights and batch-norm statistics, its state dict."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models.detection, architecture)(weights=None, weights_backbone=None)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
        if architecture == "ssd300_vgg16":  # a class head small enough that no softmax saturates (ties at 1.0)
            for conv in model.head.classification_head.module_list:
                conv.weight.mul_(0.02)
    return {k: v.clone() for k, v in model.state_dict().items()}


def run(command):
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.monotonic() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--detections", type=int, default=300,
                        help="both sides' score threshold is set where about this many (box, class) pairs of the "
                             "first image pass it (random weights score unlike a trained model)")
    parser.add_argument("--out", default="/tmp/tfzoo_convert")
    parser.add_argument("--kinds", default="batchnorm,frozen")
    parser.add_argument("--models", default="retinanet,faster_rcnn_fpn,ssd300")
    args = parser.parse_args(argv)

    import tfzoo.convert  # noqa: PLC0415  (TensorFlow after torchvision)
    from tfzoo.convert import torchvision as tv  # noqa: PLC0415
    from tfzoo.export import tflite  # noqa: PLC0415

    os.makedirs(args.out, exist_ok=True)
    images = np.random.default_rng(0).uniform(0, 255, (args.images, args.image_size, args.image_size, 3))
    rows = []
    for preset, kind in [(m, k) for m in args.models.split(",") for k in args.kinds.split(",")
                         if m != "ssd300" or k == "batchnorm"]:  # SSD's VGG has no batch norm
        state = random_torchvision(BUILDERS[preset], seed=len(rows) + 1)
        name = f"{preset}_{kind}"
        if kind == "frozen":
            source = os.path.join(args.out, f"{name}.safetensors")
            tv.write_safetensors(source, {k: v.numpy() for k, v in state.items() if "num_batches_tracked" not in k})
        else:
            source = os.path.join(args.out, f"{name}.pth")
            torch.save(state, source)
        folder = os.path.join(args.out, f"converted_{name}")
        started = time.monotonic()
        detector = tfzoo.convert.convert(source, None, folder, overwrite=True,
                                         image_size=None if preset == "ssd300" else args.image_size)
        convert_seconds = time.monotonic() - started
        size = detector.config.image_size
        pixels = images[:, :size, :size].astype(np.float32)
        if preset == "faster_rcnn_fpn":  # the preset's 0.05: few of a softmax over 91 random entries pass it
            report = tv.check_faster_rcnn(detector, tv.read_state_dict(source), pixels)
        else:
            logits = np.asarray(detector(pixels[:1], training=False)["class_logits"], np.float64)[0]
            if preset == "retinanet":
                scores = 1.0 / (1.0 + np.exp(-logits))
            else:
                scores = np.exp(logits - logits.max(-1, keepdims=True))
                scores = (scores / scores.sum(-1, keepdims=True))[:, :detector.config.num_classes]
            ranked = np.sort(scores.ravel())  # halfway between two scores: none sits on the threshold
            threshold = float((ranked[-args.detections] + ranked[-args.detections - 1]) / 2.0)
            check = tv.check_retinanet if preset == "retinanet" else tv.check_ssd
            report = check(detector, tv.read_state_dict(source), pixels, score_threshold=threshold)
        exports = {}
        for fmt, path in (("saved_model", os.path.join(args.out, f"{name}_saved_model")),
                          ("tflite", os.path.join(args.out, f"{name}.tflite"))):
            seconds = run([sys.executable, "-m", "tfzoo.cli", "export", folder, "--format", fmt, "--out", path])
            exports[fmt] = {"seconds": round(seconds, 1)}
            if fmt == "tflite":
                with open(path, "rb") as f:
                    ops = tflite.op_names(f.read())
                exports[fmt].update({"megabytes": round(os.path.getsize(path) / 2**20, 1),
                                     "non_builtin_ops": sorted(tflite.non_builtin_ops(ops))})
        rows.append({"model": preset, "kind": kind, "source": os.path.basename(source),
                     "convert_seconds": round(convert_seconds, 1), **report, "exports": exports})
        print(json.dumps(rows[-1], indent=1), flush=True)
    with open(os.path.join(args.out, "bench_convert.json"), "w", encoding="utf-8") as f:
        json.dump({"image_size": args.image_size, "images": args.images, "torch": torch.__version__,
                   "torchvision": torchvision.__version__, "rows": rows}, f, indent=1)
    print("\n| checkpoint | BN epsilon | backbone maps (largest) | raw head outputs (largest) | proposals theirs / "
          "ours / matched | detections theirs / ours / matched | max score diff | TFLite builtin only |")
    print("|---|---:|---:|---:|---|---|---:|---|")
    for r in rows:
        p, d = r.get("proposals"), r["detections"]
        proposals = f"{p['theirs']} / {p['ours']} / {p['matched']}" if p else "-"
        heads = ", ".join(f"{k} {v:.1e}" for k, v in r["heads"].items())
        print(f"| {r['source']} | {r['settings']['bn_eps']:g} | {max(r['features'].values()):.1e} | {heads} | "
              f"{proposals} | {d['theirs']} / {d['ours']} / {d['matched']} | {d['max_score_diff']:.1e} | "
              f"{'yes' if not r['exports']['tflite']['non_builtin_ops'] else 'no'} |")


if __name__ == "__main__":
    main()
