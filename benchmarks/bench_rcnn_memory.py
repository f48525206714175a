"""R-CNN's peak memory at test time: one image with ``--proposals`` windows, each warped
and run through the CNN, from the Keras model, its SavedModel and its fp32 TFLite file.

Each format runs in a fresh process (``--child``): the model loaded from the file the
parent wrote, the process's peak resident memory (``VmHWM``) reset, one image detected,
and the peak during the call printed beside the resident memory before it and the peak
while loading. The target of issue 21:
under 4 GiB for ``rcnn`` (VGG-16, 224 x 224 warps, 2,000 proposals) in every format, which
the chunked CNN (``warp_chunk`` windows per pass) is there to keep.

    python benchmarks/bench_rcnn_memory.py --formats keras,saved_model,tflite
    python benchmarks/bench_rcnn_memory.py --tiny --formats keras,tflite   # a smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import common


def _status_gib(field):
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process, in GiB (Linux ``/proc``; unlike
    ``ru_maxrss``, a fresh process's own)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2 ** 20  # kB -> GiB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak():
    """Resets ``VmHWM`` to the current resident size (``/proc/self/clear_refs``, Linux)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def _inputs(size, proposals, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, (proposals, 2))
    sides = rng.uniform(0.05, 0.6, (proposals, 2))
    boxes = np.clip(np.concatenate([centres - sides / 2, centres + sides / 2], -1), 0, 1).astype(np.float32)
    image = rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    return {"images": image, "proposals": boxes[None]}


def _child(args):
    from tfzoo.export import load_model

    model = load_model(args.child, trust_model=True)
    inputs = _inputs(model.image_size[0], model.max_proposals)
    loading = _status_gib("VmHWM")
    _reset_peak()
    before = _status_gib("VmRSS")
    start = time.perf_counter()
    result = model.detect(inputs)
    seconds = time.perf_counter() - start
    print(json.dumps({"loading_peak_gib": loading, "before_gib": before, "peak_gib": _status_gib("VmHWM"),
                      "seconds": seconds, "detections": int(np.asarray(result["num_detections"])[0])}))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="rcnn")
    parser.add_argument("--proposals", type=int, default=2000)
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument("--formats", default="keras,saved_model,tflite")
    parser.add_argument("--tiny", action="store_true", help="the preset's tiny config (a smoke run)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--workdir", help="keep the written files here and reuse those already there "
                                          "(default: a temporary folder)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    import tfzoo
    from tfzoo.export import export_saved_model, export_tflite
    from tfzoo.models import MODELS

    preset = MODELS[args.model]
    overrides = dict(preset.detector.tiny) if args.tiny else {}
    overrides.update(num_classes=args.num_classes, backbone_weights=None)
    if not args.tiny:
        overrides["max_proposals"] = args.proposals
    detector = tfzoo.build_model(args.model, **overrides)
    print(f"{args.model}: {detector.config.max_proposals} proposals, {detector.config.warp_size} px warps, "
          f"{detector.config.warp_chunk} per CNN pass; {common.environment()}", flush=True)
    results = {}
    with (contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory()) as tmp:
        os.makedirs(tmp, exist_ok=True)
        paths = {}
        for fmt in args.formats.split(","):
            start = time.perf_counter()
            kept = {"keras": "model.keras", "saved_model": "saved_model", "tflite": "model.tflite"}.get(fmt)
            if args.workdir and kept and os.path.exists(os.path.join(tmp, kept)):
                paths[fmt] = os.path.join(tmp, kept)
                print(f"{fmt}: reusing {paths[fmt]}", flush=True)
                continue
            try:
                if fmt == "keras":
                    paths[fmt] = os.path.join(tmp, "model.keras")
                    detector.save(paths[fmt])
                elif fmt == "saved_model":
                    paths[fmt] = export_saved_model(detector, os.path.join(tmp, "saved_model"))
                elif fmt == "tflite":
                    # the export verifies the file by running it: its own peak is not measured here
                    paths[fmt] = export_tflite(detector, os.path.join(tmp, "model.tflite"))
                else:
                    raise SystemExit(f"unknown format {fmt!r}: keras, saved_model or tflite")
            except Exception as error:  # noqa: BLE001 - reported in the table, the other formats go on
                results[fmt] = {"error": f"export failed: {error}"[:2000]}
                print(f"{fmt}: export failed: {str(error)[:300]}", flush=True)
                continue
            print(f"{fmt}: written in {time.perf_counter() - start:.0f} s", flush=True)
        del detector
        print("| format | peak resident memory in detect | resident before the call | peak while loading | "
              "detect seconds |")
        print("|---|---:|---:|---:|---:|")
        for fmt, path in paths.items():
            proc = subprocess.run([sys.executable, __file__, "--child", path], capture_output=True, text=True,
                                  check=False)
            if proc.returncode != 0:
                print(f"| {fmt} | failed: {proc.stderr.strip().splitlines()[-1:]} | | | |")
                results[fmt] = {"error": proc.stderr[-2000:]}
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            results[fmt] = row
            print(f"| {fmt} | {row['peak_gib']:.2f} GiB | {row['before_gib']:.2f} GiB | {row['loading_peak_gib']:.2f} GiB "
                  f"| {row['seconds']:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
