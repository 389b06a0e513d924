"""How close to the limit: a training step's achieved FLOP/s against this CPU's matmul peak.

    flock /tmp/afternoon-bench.lock .venv/bin/python bench/flops.py [--arch cnn_dropout]
        [--batches 32,128,256] [--threads 2] [--samples 7680] [--repeats 3]
        [--matmul-n 2048,4096,8192] [--ops-batch 256]

FLOPs per sample of one training step, counted from the model's layers (a multiply-add is 2):
  conv2d forward 2*kh*kw*cin*cout*hout*wout, dense forward 2*in*out; backward, per such layer, the
  weight gradient (as many FLOPs as its forward) and the input gradient (as many again), except
  for the first weight layer, whose input (the image) needs no gradient. Bias, activations,
  pooling, dropout, softmax, the loss and the optimizer's update (elementwise or reductions)
  are not counted. Cross-check: TensorFlow's own count (``tf.compat.v1.profiler``, float_ops)
  over the graph of the model's ``train_step``.

Samples per second: the pipeline's step (``bench/step_timing.py``: ``afternoon.training.
make_dataset`` + ``model.fit``, one epoch of --samples images, op determinism on as in a job),
float32 and mixed_bfloat16 at each batch size; --repeats rounds, each round running every
variant once in turn; the median and the range.

Peak: ``tf.linalg.matmul`` of two n x n matrices (2 n^3 FLOPs) for each n of --matmul-n, float32
and bfloat16, with the same threads, --repeats alternating calls each; per precision, the
median GFLOP/s of the size that gave the highest median.
Achieved GFLOP/s = FLOPs per sample x samples/s; its fraction of the same precision's peak.

Where the time goes: each counted op (every conv2d / dense layer's forward, weight gradient and
input gradient) run alone at --ops-batch on random tensors in a ``tf.function``, fp32 and bf16,
median of --repeats x 3 alternating calls (each call includes ~0.4 ms of call overhead: the
small ops' rates are that overhead), their sum beside the step's time at that batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from step_timing import (
    TimedFit,
    alternate,
    architecture,
    cpu_description,
    median_range,
    random_images,
    start_tensorflow,
)

PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def counted_flops(model) -> tuple[float, list[tuple[str, float, float]]]:
    """Training-step FLOPs per sample and, per conv2d / dense layer, (name, forward, backward)."""
    rows, first = [], True
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            _, hout, wout, _ = layer.output_shape
            forward = 2 * kh * kw * cin * cout * hout * wout
        elif kind == "Dense":
            n_in, n_out = layer.kernel.shape
            forward = 2 * n_in * n_out
        else:
            continue
        backward = forward if first else 2 * forward  # weight gradient (+ input gradient)
        rows.append((f"{layer.name} ({kind})", float(forward), float(backward)))
        first = False
    return sum(f + b for _, f, b in rows), rows


def profiler_flops(tf, model, batch: int = 32) -> tuple[float, dict[str, float]]:
    """TensorFlow's float_ops per sample of the train step's graph: total and per op type."""
    images = tf.zeros((batch, *model.input_shape[1:]), tf.uint8)
    labels = tf.zeros((batch,), tf.uint8)
    graph = (
        tf.function(lambda x, y: model.train_step((x, y)))
        .get_concrete_function(images, labels)
        .graph
    )
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    op_type = {op.name: op.type for op in graph.get_operations()}
    by_type: dict[str, float] = {}
    stack = list(profile.children)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.float_ops and not node.children:
            kind = op_type.get(node.name, "other")
            by_type[kind] = by_type.get(kind, 0.0) + node.float_ops / batch
    return profile.total_float_ops / batch, by_type


def matmul_rates(tf, sizes: list[int], calls: int) -> dict[tuple[str, int], list[float]]:
    """GFLOP/s of n x n matmuls for each n of ``sizes``, float32 and bfloat16, alternating."""
    timers = {}
    for n in sizes:
        base = tf.random.stateless_uniform((2, n, n), seed=(1, 2))
        for key, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
            operands = [tf.cast(base[0], dtype), tf.cast(base[1], dtype)]
            timers[key, n] = _timed(tf.linalg.matmul, operands)
    times = alternate(timers, calls)
    return {(key, n): [2 * n**3 / t / 1e9 for t in values] for (key, n), values in times.items()}


def _layer_ops(tf, layer) -> tuple[dict, int]:
    """A conv2d / dense layer's forward, weight-gradient and input-gradient ops (each taking
    input, kernel, output gradient) and its forward FLOPs per sample."""
    k_shape = tuple(layer.kernel.shape)
    if type(layer).__name__ == "Dense":
        return {
            "forward": lambda x, k, dy: tf.matmul(x, k),
            "weight grad": lambda x, k, dy: tf.matmul(x, dy, transpose_a=True),
            "input grad": lambda x, k, dy: tf.matmul(dy, k, transpose_b=True),
        }, 2 * k_shape[0] * k_shape[1]
    strides, pad = [1, *layer.strides, 1], layer.padding.upper()
    _, hout, wout, _ = layer.output_shape
    return {
        "forward": lambda x, k, dy: tf.nn.conv2d(x, k, strides, pad),
        "weight grad": lambda x, k, dy: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=k_shape, out_backprop=dy, strides=strides, padding=pad
        ),
        "input grad": lambda x, k, dy: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=x.shape, filter=k, out_backprop=dy, strides=strides, padding=pad
        ),
    }, 2 * k_shape[0] * k_shape[1] * k_shape[2] * k_shape[3] * hout * wout


def op_timers(tf, model, batch: int) -> dict:
    """(layer, op, precision) -> (FLOPs at ``batch``, seconds()): each conv2d / dense layer's
    ops (no input gradient for the first) run alone on random tensors, fp32 and bf16."""
    timers, first = {}, True
    for layer in model.layers:
        if type(layer).__name__ not in ("Conv2D", "Dense"):
            continue
        ops, forward = _layer_ops(tf, layer)
        if first:
            del ops["input grad"]
        first = False
        shapes = [(batch, *layer.input_shape[1:]), tuple(layer.kernel.shape)]
        shapes.append((batch, *layer.output_shape[1:]))
        for op, fn in ops.items():
            for key, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
                args = [tf.cast(tf.random.stateless_uniform(s, (3, 4)), dtype) for s in shapes]
                timers[layer.name, op, key] = (forward * batch, _timed(tf.function(fn), args))
    return timers


def _timed(fn, args):
    float(tf_first(fn(*args)))  # traces, creates oneDNN primitives

    def seconds():
        start = time.perf_counter()
        float(tf_first(fn(*args)))
        return time.perf_counter() - start

    return seconds


def tf_first(tensor):
    """One element of ``tensor`` (reading it waits for the op)."""
    return tensor[(0,) * len(tensor.shape)]


def print_op_table(tf, model, batch: int, repeats: int, step_seconds: dict) -> None:
    timers = op_timers(tf, model, batch)
    times = alternate({key: seconds for key, (_, seconds) in timers.items()}, repeats)
    print(f"| layer | op | MFLOP at batch {batch} | fp32 ms (GFLOP/s) | bf16 ms (GFLOP/s) |")
    print("|---|---|---:|---:|---:|")
    total = {"fp32": 0.0, "bf16": 0.0}
    for layer, op in dict.fromkeys((layer, op) for layer, op, _ in timers):
        cells = []
        for key in total:
            flops = timers[layer, op, key][0]
            seconds = statistics.median(times[layer, op, key])
            total[key] += seconds
            cells.append(f"{seconds * 1e3:.2f} ({flops / seconds / 1e9:,.0f})")
        print(f"| {layer} | {op} | {flops / 1e6:,.0f} | {cells[0]} | {cells[1]} |")
    print(f"| all of these | | | {total['fp32'] * 1e3:.1f} | {total['bf16'] * 1e3:.1f} |")
    if step_seconds:
        print("| the training step (from the table above) | | | "
              + " | ".join(f"{step_seconds[key] * 1e3:.1f}" for key in total) + " |")  # fmt: skip
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn_dropout")
    parser.add_argument("--batches", default="32,128,256")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=7680, help="images per timed epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul-n", default="2048,4096,8192", help="matrix sizes for the peak")
    parser.add_argument("--ops-batch", type=int, default=256, help="batch of the per-op table")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    begin = time.perf_counter()
    tf = start_tensorflow(args.threads)
    from afternoon.training.models import build_model

    arch = architecture(args.arch)
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {cpu_description()}")
    print(f"TensorFlow {tf.__version__}, {args.threads} threads, {args.arch} on 28x28x1\n")

    model = build_model(arch, (28, 28, 1), seed=42)
    flops, layers = counted_flops(model)
    print("| layer | forward MFLOP/sample | backward MFLOP/sample |\n|---|---:|---:|")
    for name, forward, backward in layers:
        print(f"| {name} | {forward / 1e6:.3f} | {backward / 1e6:.3f} |")
    print(f"\ncounted: {flops / 1e6:.2f} MFLOP per sample per training step")
    total, by_type = profiler_flops(tf, model)
    heavy = {k: v for k, v in by_type.items() if k.startswith(("Conv2D", "MatMul"))}
    print(
        f"TensorFlow's profiler: {total / 1e6:.2f} MFLOP/sample in all, of which "
        + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in sorted(heavy.items()))
        + f"; other ops {(total - sum(heavy.values())) / 1e6:.2f}\n"
    )

    images, labels = random_images(args.samples)
    variants = {}
    for key, policy in PRECISIONS.items():
        for batch in batches:
            net = build_model(arch, (28, 28, 1), seed=42, mixed_precision=policy)
            variants[key, batch] = TimedFit(tf, net, images, labels, batch, args.threads).seconds
    times = alternate(variants, args.repeats)
    rates = matmul_rates(tf, [int(n) for n in args.matmul_n.split(",")], args.repeats)
    peaks = {key: max(statistics.median(v) for (k, _), v in rates.items() if k == key)
             for key in PRECISIONS}  # fmt: skip

    print("matmul GFLOP/s, median (range): " + "; ".join(
        f"{key} n={n} {statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f})"
        for (key, n), v in rates.items()))  # fmt: skip
    print("peak: the best size's median per precision\n")
    print(
        "| precision | batch | samples/s, median (range) | s / 60k epoch | achieved GFLOP/s "
        "| matmul peak GFLOP/s | fraction of peak |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for (key, batch), seconds in times.items():
        rate = statistics.median(args.samples / s for s in seconds)
        median, spread = median_range([args.samples / s for s in seconds])
        achieved = flops * rate / 1e9
        peak = peaks[key]
        print(
            f"| {key} | {batch} | {median} ({spread}) | {60000 / rate:.1f} | {achieved:.1f} "
            f"| {peak:,.0f} | {achieved / peak:.1%} |"
        )
    step = {}
    if args.ops_batch in batches:  # median seconds of one step at that batch
        for key in PRECISIONS:
            rate = statistics.median(args.samples / s for s in times[key, args.ops_batch])
            step[key] = args.ops_batch / rate
    print_op_table(tf, model, args.ops_batch, 3 * args.repeats, step)
    print(
        f"\n{args.repeats} rounds of {args.samples} images per variant; "
        f"{time.perf_counter() - begin:.0f} s in all"
    )


if __name__ == "__main__":
    main()
