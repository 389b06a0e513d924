"""What a dropout mask costs on this CPU, by the random number generator that draws it.

    .venv/bin/python bench/dropout_masks.py [--calls 200] [--rounds 2]

One dropout (rate 0.25) of cnn_dropout's first dropout input at batch 256 (256 x 12 x 12 x 64,
bfloat16, as mixed_bfloat16 trains it), in a tf.function on 2 threads, drawn by: the pipeline's
stateful tf.random.Generator (`rng_type="stateful"`, its state checkpointed so that a resumed job
goes on with the same masks), a stateless op seeded from that generator, the legacy seeded
tf.nn.dropout, and the generator drawing float32 cast to bfloat16; a ReLU of the same tensor for
scale. Milliseconds per call, each variant timed in turn, --rounds times.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    x = tf.cast(tf.random.uniform((256, 12, 12, 64)), tf.bfloat16)
    generator = tf.random.Generator.from_seed(1)
    rate = 0.25

    def float32_sampler(shape, dtype):
        return tf.cast(generator.uniform(shape, dtype=tf.float32), dtype)

    variants = {
        "relu (no mask)": tf.nn.relu,
        "stateful generator": lambda x: tf.nn.experimental.general_dropout(
            x, rate=rate, uniform_sampler=generator.uniform
        ),
        "stateless, seeded by the generator": lambda x: tf.nn.experimental.stateless_dropout(
            x, rate=rate, seed=generator.make_seeds()[:, 0]
        ),
        "legacy tf.nn.dropout": lambda x: tf.nn.dropout(x, rate=rate, seed=3),
        "generator, float32 cast": lambda x: tf.nn.experimental.general_dropout(
            x, rate=rate, uniform_sampler=float32_sampler
        ),
    }
    for round_ in range(args.rounds):
        for name, op in variants.items():
            step = tf.function(op)
            for _ in range(5):
                step(x)
            started = time.perf_counter()
            for _ in range(args.calls):
                y = step(x)
            y.numpy()
            ms = (time.perf_counter() - started) / args.calls * 1000
            print(f"round {round_ + 1}: {name}: {ms:.2f} ms per call")


if __name__ == "__main__":
    main()
