"""The README's zoo table from one ``tfzoo compare`` run: one row per preset with its AP50,
AP, latency and size per format and its training minutes, beside the published figures of
the paper's own model (VOC07 mAP, COCO AP), each cited.

    python benchmarks/zoo_table.py /work/zoo_compare/compare.json > table.md

The compare's command and machine are printed above the table; nothing is typed by hand.
"""
from __future__ import annotations

import argparse
import json
import sys

#: Family -> (the paper's model, VOC 2007 test mAP, COCO test-dev AP, source). The figures
#: belong to the paper's own model (its preset: ``rcnn``, ``ssd300`` ...) trained on the full
#: datasets on GPUs, not to the CPU presets measured here; "-" where the paper reports none.
PAPERS = {
    "R-CNN": ("R-CNN (AlexNet, box regression, 07)", "58.5", "-", "Girshick et al. 2014"),
    "SPP-Net": ("SPP-Net (ZF-5, one scale, 07)", "59.2", "-", "He et al. 2014"),
    "Fast R-CNN": ("Fast R-CNN (VGG-16)", "71.8", "19.7 (35.9 AP50)", "Girshick 2015, as the seed gives it"),
    "Faster R-CNN": ("Faster R-CNN (VGG-16, 07+12)", "73.2", "21.9", "Ren et al. 2015"),
    "Faster R-CNN + FPN": ("Faster R-CNN + FPN (ResNet-101)", "-", "36.2 (59.1 AP50)", "Lin et al. 2017 (FPN)"),
    "RetinaNet": ("RetinaNet (ResNeXt-101-FPN)", "-", "40.8", "Lin et al. 2017 (focal loss)"),
    "YOLOv1": ("Fast YOLO / YOLO (07+12)", "52.7 / 63.4", "-", "Redmon et al. 2016"),
    "YOLOv2": ("Tiny YOLO / YOLOv2 416 (07+12)", "57.1 / 76.8", "21.6 (YOLOv2 544)", "Redmon & Farhadi 2017"),
    "YOLOv3": ("YOLOv3 608", "-", "33.0 (57.9 AP50)", "Redmon & Farhadi 2018"),
    "SSD": ("SSD300 / SSD512 (07+12)", "74.3 / 76.9", "23.2 / 26.8", "Liu et al. 2016"),
}

FORMATS = ("keras", "saved_model", "tflite", "int8")

#: The rows in the lineage's order, as the overview tells it.
LINEAGE = ("R-CNN", "SPP-Net", "Fast R-CNN", "Faster R-CNN", "Faster R-CNN + FPN", "RetinaNet", "YOLOv1", "YOLOv2",
           "YOLOv3", "SSD")


def family(preset):
    from tfzoo.models import MODELS

    name = MODELS[preset].family
    return "Faster R-CNN + FPN" if preset.startswith("faster_rcnn_fpn") else name


def table(results):
    lines = []
    machine = results.get("machine") or {}
    budget = (f"{results['minutes']:g} training minutes per preset" if results.get("minutes") is not None
              else f"{results['epochs']} epochs per preset" if results.get("epochs") is not None
              else "trained before")
    calls = results.get("latency_images", 10) * results.get("latency_repeats", 3)
    lines += ["```", results.get("command") or "tfzoo compare ...", "```", "",
              f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; {results['data']} "
              f"{results.get('val_split', 'val')}; {budget}; latency: batch 1, original image to detections, median "
              f"of {calls} calls (a proposal-based preset's includes selective search on each image: `ss` ms); "
              f"sizes in MiB; int8: TFLite calibrated on {results.get('calibration_count', 100)} training images.",
              ""]
    lines += ["| preset | AP50 | AP | latency Keras / SavedModel / TFLite / int8 ms | int8 AP50 | "
              "size .keras / SavedModel / TFLite / int8 | train min | paper's model | VOC07 mAP | COCO AP | source |",
              "|---|---:|---:|---|---:|---|---:|---|---:|---:|---|"]
    ordered = sorted(results["models"].items(), key=lambda item: LINEAGE.index(family(item[1]["preset"])))
    for key, record in ordered:
        formats = record.get("formats", {})
        if not all(formats.get(f, {}).get("status") == "done" for f in FORMATS):
            continue
        fp32 = formats["saved_model"]
        latency = " / ".join(f"{formats[f]['latency_ms']['median']:.1f}" for f in FORMATS)
        search = formats["saved_model"]["latency_ms"].get("proposals_median")
        if search is not None:
            latency += f" (ss {search:.0f})"
        sizes = " / ".join(f"{formats[f]['size_bytes'] / 2**20:.1f}" for f in FORMATS)
        paper, voc, coco, source = PAPERS[family(record["preset"])]
        minutes = (record.get("train") or {}).get("minutes")
        lines.append(f"| `{key}` | {fp32['AP50']:.3f} | {fp32['AP']:.3f} | {latency} | {formats['int8']['AP50']:.3f} "
                     f"| {sizes} | {'-' if minutes is None else format(minutes, '.1f')} | {paper} | {voc} | {coco} "
                     f"| {source} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a compare.json of tfzoo compare")
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as f:
        sys.stdout.write(table(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
