"""The slides' own Fashion-MNIST script, epoch by epoch: what number did the slides report?

    .venv/bin/python bench/slides_protocol.py [--archs cnn2,cnn_batchnorm] [--seeds 42,43,44]
        [--epochs 15] [--threads 2] [--out FILE.jsonl]

The workshop's script as deck 004 shows it (CNN_dropout.py with `mnist = tf.keras.datasets
.fashion_mnist`): all 60,000 training images as floats (x / 255), the layers of "Scaling Up The
CNN" (cnn2) or "Trying Batch Normalization" (cnn_batchnorm), SGD(0.01, momentum 0.9), batch 32,
`model.fit(..., validation_data=(test_images, test_labels))`: the test set is the validation set,
so every epoch's `val_accuracy` is a test accuracy. The code says epochs=10, the logs "Epoch
15/15": 15 epochs, and both are read off.

Per architecture and seed (tf.keras.utils.set_random_seed), one process each (--threads
TensorFlow threads): the test accuracy after epoch 10 (the code's), after epoch 15 (the log's
last line) and the best epoch's (what a reader of the log or of TensorBoard's curve would pick);
then their means over the seeds. Real Fashion-MNIST from ../shared/data/fashion_mnist, else
Debian's dataset-fashion-mnist, each file checked against the registry's sha256 (of the
uncompressed bytes, for a recompressed copy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fast_vs_seed import REPO, real_data  # noqa: E402


def load_fashion_mnist():
    """(train_images, train_labels), (test_images, test_labels), as tf.keras.datasets gives:
    the registry's four files, each checked as a mirror's download is (verify)."""
    sys.path.insert(0, str(REPO / "workflow"))
    from afternoon.formats import read_idx_dataset
    from afternoon.registry import dataset_entry
    from afternoon.verify import verify

    source = real_data("fashion_mnist")
    files = {}
    for entry in dataset_entry("fashion_mnist")["files"]:
        path = source / entry["name"]
        verify(path, entry, str(source), recompressed_ok=True)  # a one-line error if not
        files[entry["role"]] = path
    data = read_idx_dataset(files)
    return (data["x_train"][..., 0], data["y_train"]), (data["x_test"][..., 0], data["y_test"])


def slide_model(tf, arch: str):
    """The slides' Sequential models, layer for layer."""
    layers = tf.keras.layers
    if arch == "cnn2":  # "Scaling Up The CNN"
        body = [
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D(2, 2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
        ]
    elif arch == "cnn_batchnorm":  # "Trying Batch Normalization"
        body = [
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
            layers.BatchNormalization(),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D(2, 2),
            layers.BatchNormalization(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.BatchNormalization(),
        ]
    else:
        sys.exit(f"slides_protocol: no slide script for {arch!r} (cnn2, cnn_batchnorm)")
    return tf.keras.Sequential(body + [layers.Dense(10, activation="softmax")])


def worker(arch: str, seed: int, epochs: int, threads: int) -> dict:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # Keras 2 (tf_keras), as the slides' TensorFlow 2.0
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    (train_images, train_labels), (test_images, test_labels) = load_fashion_mnist()
    train_images = train_images.reshape(60000, 28, 28, 1)
    test_images = test_images.reshape(10000, 28, 28, 1)
    train_images, test_images = train_images / 255, test_images / 255
    tf.keras.utils.set_random_seed(seed)
    model = slide_model(tf, arch)
    model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        train_images,
        train_labels,
        batch_size=32,
        epochs=epochs,
        verbose=0,
        validation_data=(test_images, test_labels),
    )
    test = [round(a * 100, 2) for a in history.history["val_accuracy"]]
    return {"arch": arch, "seed": seed, "test_accuracy_by_epoch": test}


def summary(rows: list[dict], epochs: int) -> None:
    print("| arch | seed | epoch 10 | epoch 15 (last) | best epoch | best |")
    print("|---|---|---|---|---|---|")
    by_arch: dict[str, list[dict]] = {}
    for row in rows:
        test = row["test_accuracy_by_epoch"]
        best = max(range(len(test)), key=test.__getitem__)
        row["at_10"], row["last"], row["best"] = test[min(9, epochs - 1)], test[-1], test[best]
        print(f"| {row['arch']} | {row['seed']} | {row['at_10']:.2f} | {row['last']:.2f} "
              f"| {best + 1} | {row['best']:.2f} |")  # fmt: skip
        by_arch.setdefault(row["arch"], []).append(row)
    print("\n| arch | n | mean at epoch 10 | mean at epoch 15 (last) | mean of the best epochs |")
    print("|---|---|---|---|---|")
    for arch, group in by_arch.items():
        means = [statistics.fmean(r[k] for r in group) for k in ("at_10", "last", "best")]
        print(f"| {arch} | {len(group)} | " + " | ".join(f"{m:.2f}" for m in means) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", default="cnn2,cnn_batchnorm")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="append each run's epochs here (JSON lines)")
    parser.add_argument("--worker", nargs=2, metavar=("ARCH", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        arch, seed = args.worker
        print(json.dumps(worker(arch, int(seed), args.epochs, args.threads)))
        return
    rows = []
    for arch in args.archs.split(","):
        for seed in args.seeds.split(","):
            command = [sys.executable, __file__, "--worker", arch, seed]
            command += ["--epochs", str(args.epochs), "--threads", str(args.threads)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            if args.out:
                with args.out.open("a") as sink:
                    sink.write(json.dumps(rows[-1]) + "\n")
    summary(rows, args.epochs)


if __name__ == "__main__":
    main()
