"""A detector's fp32 TFLite file against its SavedModel, under the runtime's options, with
the bound the machine's matmul rate puts on their ratio.

Random weights (``--model``, default ``yolov3_tiny``, at ``--image-size``), scores
calibrated so that ``--candidates`` (box, class) pairs pass the threshold as in
``bench_model.py``. Exported with ``tfzoo.export`` (SavedModel; fp32 TFLite with the
decoder and NMS inside; a second TFLite file with the ``raw_outputs`` signature, the network
alone), then timed interleaved, each measurement the mean of ``--calls`` calls:

- the SavedModel's ``detect`` and ``raw_outputs`` (``tfzoo.export.load_model``);
- the TFLite file in ``ai_edge_litert``'s ``Interpreter``: ``--threads`` threads with its
  default XNNPACK delegate (what ``tfzoo predict`` runs); one thread; the delegate's
  "latest features"; no delegate (the builtin kernels); the ``CompiledModel`` API, where the
  installed LiteRT has it; the network-only file;
- the fp32 ``--matmul``-square matmul (TensorFlow), for the machine's FLOP rate.

It also prints how the XNNPACK delegate splits each file (its partitions, and the ops left
to the builtin kernels), and the lower bound of TFLite / SavedModel: the network's FLOPs at
the matmul's rate, with a decoder and NMS that cost nothing, against the SavedModel's
``detect``. A ratio target below that bound cannot be met on the machine by a faster
runtime, only by a smaller network.

    python benchmarks/bench_tflite_runtime.py --model yolov3_tiny --image-size 320 --repeats 15
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

import common


def _compiled_model_runner(path, signature, image, threads):
    """The ``CompiledModel`` API's run of ``signature`` (None where LiteRT lacks it)."""
    try:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.cpu_options import CpuOptions
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import Options
    except ImportError:
        return None
    model = CompiledModel.from_file(path, options=Options(hardware_accelerators=HardwareAccelerator.CPU,
                                                          cpu_options=CpuOptions(num_threads=threads)))
    index = model.get_signature_index(signature)
    inputs, outputs = model.create_input_buffers(index), model.create_output_buffers(index)
    inputs[0].write(image)
    return lambda: model.run_by_index(index, inputs, outputs)


def delegate_split(interpreter):
    """``{"partitions": XNNPACK partitions, "builtin_ops": {op: count}}`` of an allocated
    ``Interpreter`` with the default delegate: the ops it left to the builtin kernels."""
    # The node list keeps the nodes a delegate replaced beside its DELEGATE nodes: walk back
    # from the outputs, through a DELEGATE node wherever one produces the tensor.
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    by_delegate = {int(t): op for op in delegates for t in op["outputs"]}
    by_node = {int(t): op for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    pending = [int(t) for t in interpreter._interpreter.OutputIndices()]
    seen, kept = set(), collections.Counter()
    while pending:
        tensor = pending.pop()
        op = by_delegate.get(tensor) or by_node.get(tensor)
        if op is None or op["index"] in seen:
            continue
        seen.add(op["index"])
        if op["op_name"] != "DELEGATE":
            kept[op["op_name"]] += 1
        pending.extend(int(t) for t in op["inputs"] if t >= 0)
    return {"partitions": len(delegates), "builtin_ops": dict(kept)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="yolov3_tiny", help="the preset (default: yolov3_tiny)")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--candidates", type=int, default=2000,
                        help="(box, class) pairs above the score threshold on the benchmark image")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=5, help="calls per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="TFLite threads (default: all CPUs)")
    parser.add_argument("--matmul", type=int, default=2048, help="side of the fp32 matmul that gives the FLOP rate")
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args(argv)

    import bench_model as bm
    from tfzoo import export

    model_args = bm.build_parser().parse_args([
        "--model", args.model, "--mobile-model", args.model, "--image-size", str(args.image_size),
        "--mobile-image-size", str(args.image_size), "--num-classes", str(args.num_classes),
        "--candidates", str(args.candidates)])
    detector = bm.build_tfzoo(model_args, args.model, image_size=args.image_size)
    image = bm.benchmark_image(model_args, args.image_size)
    prepared = bm.adapter_of(args.model).prepare_tfzoo(detector, image, args.candidates)
    flops = bm.graph_flops(lambda x: detector(x, training=False), image.shape)
    matmul, matmul_flops = bm.matmul_fn(args.matmul)
    result = {"model": args.model, "image_size": args.image_size, "threads": args.threads,
              "params": int(detector.count_params()), "network_flops": flops,
              "candidates": prepared["candidates"], "environment": common.environment()}
    print(f"{args.model} at {args.image_size}: {result['params']:,} parameters, {flops / 1e9:.3f} GFLOP "
          f"(network), candidates {prepared['candidates']}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        saved_path = os.path.join(tmp, "saved_model")
        full, raw = os.path.join(tmp, "fp32.tflite"), os.path.join(tmp, "fp32_raw.tflite")
        export.export_saved_model(detector, saved_path)
        export.export_tflite(detector, full)
        export.export_tflite(detector, raw, raw_outputs=True)
        saved = export.load_model(saved_path, trust_model=True)
        from ai_edge_litert.interpreter import OpResolverType

        default = f"TFLite, {args.threads} threads"
        tflite = {
            default: bm.TFLiteRunner(full, args.threads),
            "TFLite, 1 thread": bm.TFLiteRunner(full, 1),
            "TFLite, XNNPACK latest features": bm.TFLiteRunner(
                full, args.threads, experimental_default_delegate_latest_features=True),
            "TFLite, builtin kernels (no XNNPACK)": bm.TFLiteRunner(
                full, args.threads, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
            "TFLite raw_outputs": bm.TFLiteRunner(raw, args.threads, signature="raw_outputs"),
        }
        result["delegate_split"] = {
            "detect": delegate_split(tflite[default].interpreter),
            "raw_outputs": delegate_split(tflite["TFLite raw_outputs"].interpreter)}
        runners = {"SavedModel detect": lambda: saved.detect(image),
                   "SavedModel raw_outputs": lambda: saved.raw_outputs(image),
                   **{name: (lambda r=r: r.detect(image)) for name, r in tflite.items()}}
        compiled = _compiled_model_runner(full, "serving_default", image, args.threads)
        if compiled is not None:
            runners["TFLite, CompiledModel API"] = compiled
        runners["fp32 matmul"] = lambda: matmul().numpy()

        def mean_of_calls(fn):
            def run():
                for _ in range(args.calls):
                    result_ = fn()
                return result_
            return run

        print(f"timing {len(runners)} contenders, {args.repeats} interleaved rounds of {args.calls} calls ...",
              flush=True)
        runs = common.interleaved({k: mean_of_calls(fn) for k, fn in runners.items()}, 2, args.repeats)
    runs = {name: [t / args.calls for t in values] for name, values in runs.items()}
    stats = {name: common.spread(values) for name, values in runs.items()}
    result["runs_s"], result["stats_s"] = runs, stats

    saved_detect = stats["SavedModel detect"]["median"]
    matmul_rate = matmul_flops / stats["fp32 matmul"]["median"]
    result["matmul_gflops"] = matmul_rate / 1e9
    lines = [f"{'contender':40s} {'median ms':>10s} {'(q1-q3)':>15s} {'/ SavedModel':>13s} {'GFLOP/s':>8s} "
             f"{'of matmul':>9s}"]
    for name, s in stats.items():
        if name == "fp32 matmul":
            continue
        rate = flops / s["median"]
        lines.append(f"{name:40s} {1e3 * s['median']:10.2f} {common.fmt(s, 1e3, 2):>15s} "
                     f"{s['median'] / saved_detect:13.2f} {rate / 1e9:8.0f} {rate / matmul_rate:9.2f}")
    bound = flops / matmul_rate / saved_detect
    result["ratio"] = stats[default]["median"] / saved_detect
    result["per_round_ratio"] = common.paired_ratios(runs[default], runs["SavedModel detect"])
    result["ratio_bound"] = bound
    lines += [
        f"fp32 matmul {args.matmul}: {matmul_rate / 1e9:.0f} GFLOP/s",
        f"TFLite ({args.threads} threads) / SavedModel detect: {result['ratio']:.2f}x "
        f"(per round {common.fmt(result['per_round_ratio'], 1, 2)})",
        f"bound: the network at the matmul's rate, decoder and NMS free: {1e3 * flops / matmul_rate:.2f} ms, "
        f"{bound:.2f}x the SavedModel's detect",
    ]
    for signature, split in result["delegate_split"].items():
        ops = ", ".join(f"{op} {n}" for op, n in sorted(split["builtin_ops"].items())) or "none"
        lines.append(f"XNNPACK split of the {signature} file: {split['partitions']} partitions; builtin ops: {ops}")
    print("\n".join(lines))
    print(json.dumps(result["environment"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
