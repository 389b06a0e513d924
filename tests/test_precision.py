"""Precision for the GPUs the seeds ran on: ``auto`` picks mixed_float16 on a GPU of compute
capability 7.x (V100-class), mixed_bfloat16 from 8.0, float32 below and the CPU rule without a
GPU; the dry run says so; mixed_float16 trains with dynamic loss scaling (a LossScaleOptimizer
around the fused Adam), checkpoints, resumes, saves, loads for evaluation, and the run records
its precision. No GPU needed: the decision takes the GPUs as arguments."""

import json
import math
import subprocess

import numpy as np
import pandas as pd
import pytest

from afternoon.checks import precision_notes
from afternoon.config import check_against_schema, job_spec, load_yaml, load_zoo
from afternoon.training.precision import (
    GPU_RULE_TEXT,
    NO_BF16,
    NO_F16,
    choose_precision,
    nvidia_gpus,
)
from afternoon.zoo import validate_architecture
from helpers import runners
from helpers.paths import REPO
from test_training import spec_for, train

ZOO = load_zoo(REPO / "config/zoo.yaml")
NO_BF16_CPU = {"avx2", "avx512f"}  # an AMD EPYC of ours without avx512_bf16
BF16_CPU = {"avx2", "amx_bf16"}
ADAM = {"name": "adam"}  # the fused update (training.fused_adam), Keras' defaults


# --- The decision ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "capability, expected",
    [
        ("7.0", "mixed_float16"),  # V100
        ("7.5", "mixed_float16"),  # T4
        ("8.0", "mixed_bfloat16"),  # A100
        ("8.6", "mixed_bfloat16"),
        ("9.0", "mixed_bfloat16"),  # H100
        ("6.0", "float32"),  # P100: no tensor cores
    ],
)
@pytest.mark.parametrize("flags", [NO_BF16_CPU, BF16_CPU])  # the GPU decides, not the CPU
def test_auto_on_a_gpu_follows_its_compute_capability(capability, expected, flags):
    precision, why = choose_precision("auto", [("Tesla X", capability)], flags=flags)
    assert precision == expected
    assert why.startswith(f"auto: GPU Tesla X (compute capability {capability})")


@pytest.mark.parametrize("gpus", [None, []])
def test_auto_without_a_gpu_is_the_cpu_rule(gpus):
    assert choose_precision("auto", gpus, flags=BF16_CPU)[0] == "mixed_bfloat16"
    precision, why = choose_precision("auto", gpus, flags=NO_BF16_CPU)
    assert precision == "float32" and NO_BF16 in why


def test_mixed_float16_asked_for_is_honoured_and_said_slow_on_a_cpu():
    precision, why = choose_precision("mixed_float16", flags=NO_BF16_CPU)
    assert precision == "mixed_float16" and NO_F16 in why
    assert NO_F16 not in choose_precision("mixed_float16", [("V100", "7.0")], flags=set())[1]
    assert NO_F16 not in choose_precision("mixed_float16", flags={"avx512_fp16"})[1]


def test_the_zoo_and_the_config_accept_mixed_float16():
    validate_architecture(
        "cnn1", {**ZOO["cnn1"], "recipes": {"v100": {"precision": "mixed_float16"}}}
    )
    config = load_yaml(REPO / "config/config.yaml")
    config["training"]["precision"] = "mixed_float16"
    check_against_schema(config, load_yaml(REPO / "workflow/schemas/config.schema.yaml"))
    assert job_spec(config, ZOO, "digits", "cnn1")["precision"] == "mixed_float16"


def fake_nvidia_smi(listing: str, fails=False):
    def run(command, **kwargs):
        assert command[0] == "nvidia-smi" and "--query-gpu=index,name,compute_cap" in command
        if fails:
            raise FileNotFoundError("nvidia-smi")
        return subprocess.CompletedProcess(command, 0, stdout=listing)

    return run


def test_the_dry_run_finds_this_machines_gpus_with_nvidia_smi(monkeypatch):
    listing = "0, Tesla V100-SXM2-16GB, 7.0\n1, NVIDIA A100-SXM4-40GB, 8.0\n"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvidia_gpus(fake_nvidia_smi(listing)) == [
        ("Tesla V100-SXM2-16GB", "7.0"),
        ("NVIDIA A100-SXM4-40GB", "8.0"),
    ]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert nvidia_gpus(fake_nvidia_smi(listing)) == [("NVIDIA A100-SXM4-40GB", "8.0")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert nvidia_gpus(fake_nvidia_smi(listing)) == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert nvidia_gpus(fake_nvidia_smi("", fails=True)) == []
    assert nvidia_gpus(fake_nvidia_smi("0, Tesla V100, [N/A]\n")) == []  # an old driver


def fast_study() -> dict:
    config = load_yaml(REPO / "config/config.yaml")
    config["training"]["recipes"] = "fast"  # every recipe: precision auto
    return config


def test_the_dry_run_says_what_auto_picks_on_a_v100():
    config = fast_study()
    runs = {"digits": ["fc64", "cnn1"]}
    (note,) = precision_notes(config, ZOO, runs, gpus=[("Tesla V100-SXM2-16GB", "7.0")])
    assert note.startswith(
        "precision mixed_float16 for fc64@digits, cnn1@digits: auto: GPU Tesla V100-SXM2-16GB "
        f"(compute capability 7.0): {GPU_RULE_TEXT}; a job on another node"
    )
    (note,) = precision_notes(config, ZOO, runs, gpus=[("NVIDIA H100", "9.0")])
    assert note.startswith("precision mixed_bfloat16 for fc64@digits, cnn1@digits: auto: GPU")
    # no GPU here (a login node): the CPU's decision, and what a GPU node would pick
    (note,) = precision_notes(config, ZOO, runs, gpus=[])
    assert "auto: this CPU" in note and f"decides there ({GPU_RULE_TEXT})" in note
    config["training"]["precision"] = "mixed_float16"
    (note,) = precision_notes(config, ZOO, runs, gpus=[])
    assert note.startswith("precision mixed_float16 for fc64@digits, cnn1@digits: mixed_float16,")


# --- Training in mixed_float16 on the CPU (digits) ---------------------------------------------


@pytest.fixture(scope="module")
def digits(digits, tmp_path_factory):
    return runners.tracked_dataset(digits, tmp_path_factory.mktemp("float16"), "test-float16")


@pytest.fixture(scope="module")
def float16_run(digits):
    """cnn_batchnorm with Adam (the fused update) trained 1 epoch in mixed_float16 by the train
    stage."""
    spec = spec_for("cnn_batchnorm", epochs=1, precision="mixed_float16", optimizer=ADAM)
    out = digits["root"] / "float16"
    train(digits, spec, out)
    return out


@pytest.mark.slow
def test_mixed_float16_trains_with_loss_scaling_and_records_its_precision(digits, float16_run):
    import mlflow
    import tensorflow as tf

    history = pd.read_csv(float16_run / "history.csv")
    assert len(history) == 1
    assert np.isfinite(history[["loss", "accuracy", "val_loss", "val_accuracy"]].to_numpy()).all()
    metrics = json.loads((float16_run / "metrics.json").read_text())
    assert metrics["precision"] == "mixed_float16"
    assert metrics["precision_reason"].startswith("mixed_float16, as the recipe or config sets it")
    record = json.loads((float16_run / "run.json").read_text())
    marker = json.loads(digits["marker"].read_text())
    run = mlflow.tracking.MlflowClient(marker["tracking_uri"]).get_run(record["run_id"])
    assert run.data.tags["precision"] == "mixed_float16"
    assert run.data.tags["precision_reason"] == metrics["precision_reason"]

    model = tf.keras.models.load_model(float16_run / "model.keras")
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert model.optimizer.dynamic
    assert type(model.optimizer.inner_optimizer).__name__ == "Adam"  # stock Keras Adam saved
    scale = float(model.optimizer.loss_scale)
    assert scale >= 1 and math.log2(scale).is_integer()  # halved on overflow, doubled after 2,000
    assert {layer.compute_dtype for layer in model.layers[1:-1]} == {"float16"}
    assert model.layers[-1].compute_dtype == "float32"  # the softmax in float32
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.slow
def test_a_mixed_float16_model_loads_for_evaluation(digits, float16_run):
    from afternoon.evaluation import evaluate_model, load_class_names, load_model
    from afternoon.npz import load_npz

    data = load_npz(digits["npz"])
    model = load_model(float16_run / "model.keras")  # as the evaluate stage loads it
    scores = evaluate_model(model, data["x_test"], data["y_test"], load_class_names(digits["card"]))
    assert math.isfinite(scores["test_loss"]) and scores["test_accuracy"] > 0.3  # 10 classes


def graph_op_types(function) -> set[str]:
    """Every op type of a concrete function, those in its branches and loops included."""
    graph = function.graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return {node.op for node in nodes}


def test_loss_scaling_wraps_the_fused_adam():
    import tensorflow as tf

    from afternoon.training.models import build_optimizer
    from afternoon.training.precision import loss_scaled
    from test_fused_adam import _train

    fused = loss_scaled(tf, build_optimizer({"name": "adam"}), "mixed_float16")
    assert isinstance(fused, tf.keras.mixed_precision.LossScaleOptimizer) and fused.dynamic
    stock = tf.keras.mixed_precision.LossScaleOptimizer(tf.keras.optimizers.Adam())
    (fused_values, fused_fn), (stock_values, _) = _train(fused), _train(stock)
    for a, b in zip(fused_values, stock_values, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    assert "ResourceApplyAdam" in graph_op_types(fused_fn)  # in the finite-gradients branch
    assert loss_scaled(tf, fused, "mixed_float16") is fused  # never wrapped twice
    assert not isinstance(loss_scaled(tf, stock.inner_optimizer, "mixed_bfloat16"), type(stock))


@pytest.mark.slow
def test_a_mixed_float16_checkpoint_resumes_weights_moments_and_loss_scale(tmp_path):
    """In one process: a checkpoint restores weights, Adam's moments, the step count and the
    loss scale into a fresh model, which trains on."""
    import tensorflow as tf

    from afternoon.training.checkpoint import Checkpointer, CheckpointState
    from afternoon.training.models import build_model

    spec = spec_for("cnn_batchnorm", epochs=1, optimizer=ADAM)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (96, 8, 8, 1), dtype=np.uint8), rng.integers(0, 10, 96)

    def model(seed):
        return build_model(spec, (8, 8, 1), seed=seed, mixed_precision="mixed_float16",
                           steps_per_execution=3)  # fmt: skip

    trained = model(1)
    history = trained.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and int(trained.optimizer.iterations) == 12
    Checkpointer(tmp_path, {"spec": "f16"}).save(tf, trained, CheckpointState(2, []))
    fresh, reader = model(2), Checkpointer(tmp_path, {"spec": "f16"})
    reader.restore(tf, fresh, reader.load())
    for a, b in zip(trained.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(trained.optimizer.variables(), fresh.optimizer.variables(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(fresh.optimizer.loss_scale) == float(trained.optimizer.loss_scale)
    assert np.isfinite(fresh.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"]).all()


@pytest.mark.slow
def test_a_backends_own_optimizer_is_loss_scaled_and_an_untrained_model_loads(tmp_path):
    """A distributed backend recompiles with its own (legacy) optimizer: loss-scaled again. Its
    export, a model built and saved untrained, loads (its LossScaleOptimizer has its state)."""
    import contextlib

    import tensorflow as tf

    from afternoon.training.models import build_model
    from afternoon.training.precision import keep_loss_scaling

    spec = spec_for("fc64", epochs=1)
    model = build_model(spec, (8, 8, 1), mixed_precision="mixed_float16")
    model.save(tmp_path / "untrained.keras")
    loaded = tf.keras.models.load_model(tmp_path / "untrained.keras")
    assert isinstance(loaded.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    backend_optimizer = tf.keras.optimizers.legacy.Adam()  # as distributed.common makes it
    model.compile(backend_optimizer, loss=model.loss, metrics=["accuracy"])
    keep_loss_scaling(tf, model, "mixed_float16", contextlib.nullcontext)
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert model.optimizer.inner_optimizer is backend_optimizer
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8), rng.integers(0, 10, 64)
    assert np.isfinite(model.fit(x, y, batch_size=16, verbose=0).history["loss"]).all()
    float32 = build_model(spec, (8, 8, 1))
    float32.compile(tf.keras.optimizers.legacy.Adam(), loss=float32.loss)
    keep_loss_scaling(tf, float32, "float32", contextlib.nullcontext)
    assert not isinstance(float32.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
