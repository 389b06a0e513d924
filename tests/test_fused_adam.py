"""The pipeline's Adam: Keras' own optimizer whose updates run TensorFlow's fused kernel."""

import numpy as np
import pytest

import afternoon  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from afternoon.training.models import build_optimizer

import tensorflow as tf  # isort: skip (imported after afternoon: Keras 2)


def _variables(seed: int):
    rng = np.random.default_rng(seed)
    return [tf.Variable(rng.normal(size=shape).astype("float32")) for shape in [(64, 32), (32,)]]


def _train(optimizer, steps: int = 25):
    """``steps`` updates of two variables with fixed pseudo-random gradients; their values."""
    variables = _variables(0)
    rng = np.random.default_rng(1)
    gradients = [
        [tf.constant(rng.normal(size=v.shape).astype("float32")) for v in variables]
        for _ in range(steps)
    ]
    step = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables, strict=True)))
    for grads in gradients:
        step(grads)
    return [v.numpy() for v in variables], step.get_concrete_function(gradients[0])


@pytest.mark.parametrize("spec", [{"name": "adam"}, {"name": "adam", "learning_rate": 0.01}])
def test_fused_adam_matches_keras_adam_and_runs_the_fused_kernel(spec):
    fused, fused_fn = _train(build_optimizer(spec))
    stock_optimizer = tf.keras.optimizers.Adam(**{k: v for k, v in spec.items() if k != "name"})
    stock, stock_fn = _train(stock_optimizer)
    for a, b, start in zip(fused, stock, _variables(0), strict=True):
        assert not np.allclose(a, start.numpy())  # it trained
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)  # the same update, to rounding

    def op_types(fn):
        return {op.type for op in fn.graph.get_operations()}

    assert "ResourceApplyAdam" in op_types(fused_fn)
    assert "ResourceApplyAdam" not in op_types(stock_fn)


def test_fused_adam_follows_a_schedule():
    from afternoon.training.schedules import schedule_of

    def schedule():
        cosine = {"name": "cosine", "warmup_epochs": 1, "final_lr_fraction": 0.0}  # as in a spec
        return schedule_of(cosine, 0.01, 3, steps_per_epoch=5)

    fused, _ = _train(build_optimizer({"name": "adam", "learning_rate": 0.01}, schedule()), 15)
    stock, _ = _train(tf.keras.optimizers.Adam(schedule()), 15)
    for a, b in zip(fused, stock, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_amsgrad_keeps_keras_update():
    optimizer = build_optimizer({"name": "adam"})
    optimizer.amsgrad = True  # not a zoo option; Keras' own update handles it
    _, fn = _train(optimizer, 2)
    assert "ResourceApplyAdam" not in {op.type for op in fn.graph.get_operations()}


def test_saved_model_keeps_a_stock_keras_adam(tmp_path):
    from afternoon.training.models import build_model

    arch = {"name": "tiny", "layers": [{"dense": {"units": 10, "activation": "softmax"}}],
            "optimizer": {"name": "adam"}, "epochs": 1, "batch_size": 4}  # fmt: skip
    model = build_model(arch, (8, 8, 1), num_classes=10, seed=0)
    x = np.zeros((4, 8, 8, 1), "uint8")
    model.fit(x, np.arange(4), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = tf.keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is tf.keras.optimizers.Adam
    assert int(loaded.optimizer.iterations) == 1
