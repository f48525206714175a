"""The default recipe on data where classes differ by shape alone: one lever at a time.

Issue 17. For each stand-in of ``benchmarks/standins.py`` (written once into ``--root``),
runs exactly what a new user runs::

    tfzoo train MODEL --data voc:ROOT/STANDIN --minutes M --out OUT [--set k=v ...] [--no-flip]

then reads what ``tfzoo train`` wrote: val AP50 / AP (``metrics.json``), AP50 on the first
200 training images (its ``diagnostics``, same weights, no augmentation), the verdict
(underfitting / overfitting), the most confused pairs, and the training throughput
(images/s = optimizer steps x batch size / seconds in ``fit``, from ``state.json``). Each
run is one line of ``--jsonl`` (appended), so a table of levers accumulates across calls:

    python benchmarks/bench_standins.py --standins glyphs symbols --label baseline
    python benchmarks/bench_standins.py --standins glyphs --label no-flip -- --no-flip
    python benchmarks/bench_standins.py --standins glyphs --label heads4 -- --set head_convs=4

Everything after ``--`` goes to ``tfzoo train`` unchanged. ``--table`` prints the
accumulated lines as the markdown table of BENCHMARKS.md and exits.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import standins  # noqa: E402


def ensure_standin(name, root, train_images, val_images):
    """Writes stand-in ``name`` under ``root`` unless a complete copy is there; returns its path."""
    path = os.path.join(root, name)
    stamp = os.path.join(path, "standin.json")
    wanted = {"standin": name, "train_images": train_images, "val_images": val_images}
    if os.path.exists(stamp):
        with open(stamp, encoding="utf-8") as f:
            stats = json.load(f)
        if all(stats.get(k) == v for k, v in wanted.items()):
            return path, stats
    stats = standins.write(name, path, train_images, val_images)
    with open(stamp, "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=2)
    return path, stats


def run_one(model, data_path, minutes, out, extra, epochs=None):
    budget = ["--epochs", str(epochs)] if epochs else ["--minutes", f"{minutes:g}"]
    command = [sys.executable, "-m", "tfzoo.cli", "train", model, "--data", f"voc:{data_path}",
               *budget, "--out", out, *extra]
    print("$", " ".join(command), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True)
    wall = time.monotonic() - started
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    with open(os.path.join(out, "state.json"), encoding="utf-8") as f:
        state = json.load(f)
    diag = metrics.get("diagnostics", {})
    return {
        "val_AP50": metrics["AP50"], "val_AP": metrics["AP"], "val_AR100": metrics["AR100"],
        "train_AP50": diag.get("train_sample", {}).get("AP50"), "verdict": diag.get("verdict"),
        "confused_pairs": [f"{'/'.join(p['classes'])} {p['count']}" for p in diag.get("confused_pairs", [])],
        "per_class_val_AP50": {k: v["AP50"] for k, v in metrics["per_class"].items()},
        "epochs": state["epoch"], "steps": state["step"], "batch_size": state["batch_size"],
        "fit_seconds": state.get("seconds"), "wall_seconds": round(wall, 1),
        "images_per_s": round(state["step"] * state["batch_size"] / state["seconds"], 2) if state.get("seconds") else None,
    }


def table(lines):
    rows = ["| lever | stand-in | val AP50 | train-sample AP50 | val AP | verdict | steps | images/s | confused most |",
            "|---|---|---:|---:|---:|---|---:|---:|---|"]
    for r in lines:
        rows.append(f"| {r['label']} | {r['standin']} | {r['val_AP50']:.3f} | "
                    f"{r['train_AP50'] if r['train_AP50'] is None else format(r['train_AP50'], '.3f')} | "
                    f"{r['val_AP']:.3f} | {r['verdict']} | {r['steps']} | {r['images_per_s']} | "
                    f"{', '.join(r['confused_pairs'][:2])} |")
    return "\n".join(rows)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--standins", nargs="+", choices=standins.STANDINS, default=list(standins.STANDINS))
    parser.add_argument("--root", default="/tmp/tfzoo_standins", help="where the VOC folders are written")
    parser.add_argument("--runs", default="/tmp/tfzoo_standin_runs", help="where training directories go")
    parser.add_argument("--model", default="retinanet_mobile")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--epochs", type=int,
                        help="a fixed number of epochs instead of --minutes (compares levers at equal steps "
                             "when the machine's speed varies)")
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--val-images", type=int, default=150)
    parser.add_argument("--label", default="baseline", help="the lever's name in the table")
    parser.add_argument("--jsonl", default="/tmp/tfzoo_standin_runs/results.jsonl", help="results, appended")
    parser.add_argument("--table", action="store_true", help="print --jsonl as a markdown table and exit")
    args = parser.parse_args(argv)
    if args.table:
        with open(args.jsonl, encoding="utf-8") as f:
            print(table([json.loads(line) for line in f if line.strip()]))
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.jsonl)), exist_ok=True)
    for name in args.standins:
        path, stats = ensure_standin(name, args.root, args.train_images, args.val_images)
        out = os.path.join(args.runs, f"{name}_{args.label}")
        result = {"label": args.label, "standin": name, "model": args.model, "minutes": None if args.epochs else args.minutes,
                  "epochs_asked": args.epochs,
                  "train_args": extra, "date": time.strftime("%Y-%m-%d %H:%M"),
                  **run_one(args.model, path, args.minutes, out, extra, args.epochs)}
        print(json.dumps(result), flush=True)
        with open(args.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
