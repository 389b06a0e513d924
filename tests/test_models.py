"""The architecture zoo: config/zoo.yaml validates, builds Keras 2 models of the slides' sizes."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from afternoon.checks import check_input_fits
from afternoon.defaults import LAYER_DEFAULTS, OPTIMIZER_DEFAULTS, layer_settings
from afternoon.errors import ConfigError
from afternoon.training.models import build_model, build_optimizer, count_params
from afternoon.zoo import ACTIVATIONS, LAYER_KEYS, validate_architecture

ROOT = Path(__file__).resolve().parents[1]
MNIST, DIGITS, CIFAR10 = (28, 28, 1), (8, 8, 1), (32, 32, 3)
# Parameter counts of the workshop's MNIST models (batch-norm moving statistics included).
EXPECTED_PARAMS = {
    "fc64": 55050,
    "fc512": 669706,
    "fc512x3": 932362,
    "cnn1": 542230,
    "cnn2": 1199882,
    "cnn_dropout": 1199882,
    "cnn_batchnorm": 1200778,
}
# The CIML deck's CNN on MNIST: conv 16 3x3 (160) -> 13x13x16 -> dense 32 (86,560) -> 10 (330);
# with 9x9 filters: conv (1,312) -> 10x10x16 -> dense 32 (51,232) -> 10 (330).
CIML_PARAMS = {"ciml_cnn": 87050, "ciml_cnn9": 52874}


@pytest.fixture(scope="module")
def zoo():
    return yaml.safe_load((ROOT / "config" / "zoo.yaml").read_text())


def named(zoo, name, **changes):
    return {**copy.deepcopy(zoo[name]), "name": name, **changes}


def uint8_batch(shape, n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


@pytest.fixture(scope="module")
def mnist_models(zoo):
    """The models these tests look at (the seven, the CIML CNNs): not the whole zoo."""
    return {name: build_model(named(zoo, name), MNIST) for name in [*EXPECTED_PARAMS, *CIML_PARAMS]}


def test_keras_is_keras2():
    import tensorflow as tf
    import tf_keras

    assert tf.keras.__name__.startswith("tf_keras")
    assert tf_keras.__version__.startswith("2.")


def test_zoo_starts_with_the_seven_architectures(zoo):
    assert list(zoo)[:7] == list(EXPECTED_PARAMS)
    assert set(CIML_PARAMS) <= set(zoo)


@pytest.mark.parametrize("name", CIML_PARAMS)
def test_ciml_cnns_have_the_decks_layers(mnist_models, name):
    assert count_params(mnist_models[name]) == CIML_PARAMS[name]


def test_the_hparams_tutorials_model(zoo):
    """Flatten, Dense(16, relu), Dropout(0.1), Dense(10, softmax): 784 x 16 + 16 + 16 x 10 + 10
    parameters, compiled with Adam at Keras' default rate, batch 32 and 1 epoch (the tutorial's
    model.fit(x_train, y_train, epochs=1))."""
    entry = zoo["hparams_tutorial"]
    model = build_model(named(zoo, "hparams_tutorial"), MNIST)
    assert count_params(model) == 784 * 16 + 16 + 16 * 10 + 10 == 12730
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Rescaling", "Flatten", "Dense", "Dropout", "Dense"]
    assert model.layers[3].rate == 0.1 and model.optimizer.learning_rate.numpy() == np.float32(
        0.001
    )
    assert (entry["batch_size"], entry["epochs"]) == (32, 1)


def test_layer_keys_match_the_zoo_header():
    assert LAYER_KEYS["conv2d"]["required"] == ("filters", "kernel_size")
    assert set(LAYER_KEYS) == {"dense", "conv2d", "maxpool2d", "dropout", "batchnorm", "flatten",
                               "spatial_dropout2d"}  # fmt: skip
    assert LAYER_KEYS["dropout"]["required"] == ("rate",)
    assert LAYER_KEYS["flatten"] == {"required": (), "optional": ()}


@pytest.mark.parametrize("name", EXPECTED_PARAMS)
def test_zoo_architecture_validates(zoo, name):
    validate_architecture(name, zoo[name])


def test_validation_needs_no_tensorflow():
    code = (
        "import sys\nfrom afternoon.config import load_zoo\n"
        "from afternoon.checks import check_inputs_fit\n"
        f"zoo = load_zoo({str(ROOT / 'config' / 'zoo.yaml')!r})\n"
        "check_inputs_fit(['mnist', 'fashion_mnist', 'cifar10'], zoo, list(zoo))\n"
        "check_inputs_fit(['digits'], zoo, list(zoo)[:7])  # ciml_cnn9's 9x9 filters: not 8x8\n"
        "assert 'tensorflow' not in sys.modules and 'tf_keras' not in sys.modules"
    )
    env_path = str(ROOT / "workflow")
    env = {**os.environ, "PYTHONPATH": env_path}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("name", EXPECTED_PARAMS)
def test_mnist_parameter_counts(mnist_models, name):
    model = mnist_models[name]
    assert count_params(model) == EXPECTED_PARAMS[name]
    assert model.name == name
    assert model.output_shape == (None, 10)
    assert model.loss == "sparse_categorical_crossentropy"


def test_flatten_is_added_before_the_first_dense_layer(mnist_models):
    names = [layer.name for layer in mnist_models["fc64"].layers]
    assert names[:3] == ["rescale", "flatten_auto_0", "dense_0"]
    assert not any("auto" in layer.name for layer in mnist_models["cnn1"].layers)


@pytest.mark.parametrize("shape", [DIGITS, MNIST, CIFAR10], ids=["digits", "mnist", "cifar10"])
@pytest.mark.parametrize("name", EXPECTED_PARAMS)
def test_builds_and_predicts_probabilities(zoo, mnist_models, name, shape):
    model = mnist_models[name] if shape == MNIST else build_model(named(zoo, name), shape)
    assert model.output_shape == (None, 10)
    probs = model(uint8_batch(shape), training=False).numpy()
    assert probs.shape == (4, 10)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def weights(model):
    return model.get_weights()


def test_same_seed_same_initial_weights(zoo):
    arch = named(zoo, "cnn_dropout")
    a, b = build_model(arch, DIGITS, seed=3), build_model(arch, DIGITS, seed=3)
    c = build_model(arch, DIGITS, seed=4)
    for wa, wb in zip(weights(a), weights(b), strict=True):
        np.testing.assert_array_equal(wa, wb)
    kernels_a = [w for w in weights(a) if w.ndim > 1]
    kernels_c = [w for w in weights(c) if w.ndim > 1]
    assert all(not np.array_equal(x, y) for x, y in zip(kernels_a, kernels_c, strict=True))


def test_mixed_bfloat16(zoo):
    model = build_model(named(zoo, "cnn_batchnorm"), DIGITS, mixed_precision="mixed_bfloat16")
    hidden = {layer.name: layer for layer in model.layers}
    assert hidden["conv2d_0"].compute_dtype == "bfloat16"
    assert hidden["dense_6"].compute_dtype == "bfloat16"
    assert hidden["conv2d_0"].variable_dtype == "float32"
    assert model.layers[-1].compute_dtype == "float32"
    assert model.output.dtype == "float32"
    probs = model(uint8_batch(DIGITS), training=False).numpy()
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_float32_is_the_default(mnist_models):
    assert {layer.compute_dtype for layer in mnist_models["cnn1"].layers} == {"float32"}


def test_unknown_precision_is_a_config_error(zoo):
    message = "must be float32 or mixed_bfloat16 or mixed_float16: 'float16'"
    with pytest.raises(ConfigError, match=message):
        build_model(named(zoo, "fc64"), DIGITS, mixed_precision="float16")


def test_augmentation_is_identity_at_inference(zoo):
    aug = {"rotation": 10, "shift": 0.1, "zoom": 0.1}
    augmented = build_model(named(zoo, "cnn1", augmentation=aug), DIGITS, seed=1)
    plain = build_model(named(zoo, "cnn1"), DIGITS, seed=1)
    names = [layer.name for layer in augmented.layers]
    assert names[1:4] == ["augment_rotation", "augment_shift", "augment_zoom"]
    for wa, wb in zip(weights(augmented), weights(plain), strict=True):
        np.testing.assert_array_equal(wa, wb)
    x = uint8_batch(DIGITS)
    np.testing.assert_array_equal(augmented(x, training=False), plain(x, training=False))
    assert not np.allclose(augmented(x, training=True), plain(x, training=True))


def test_build_optimizer_defaults_and_values():
    adam = build_optimizer({"name": "adam"})
    assert adam.__class__.__module__.startswith("tf_keras")
    assert float(adam.learning_rate) == pytest.approx(0.001)
    sgd = build_optimizer({"name": "sgd"})
    assert float(sgd.learning_rate) == pytest.approx(0.01)
    assert float(sgd.momentum) == 0.0 and sgd.nesterov is False
    sgd = build_optimizer({"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True})
    assert float(sgd.learning_rate) == pytest.approx(0.1)
    assert float(sgd.momentum) == pytest.approx(0.9) and sgd.nesterov is True
    adam = build_optimizer({"name": "adam", "beta_1": 0.8, "epsilon": 1e-6})
    assert float(adam.beta_1) == pytest.approx(0.8) and adam.epsilon == pytest.approx(1e-6)
    nadam = build_optimizer({"name": "nadam", "learning_rate": 0.003})
    assert type(nadam).__name__ == "Nadam" and float(nadam.learning_rate) == pytest.approx(0.003)


def test_nadam_takes_adams_keys_and_refuses_sgds(zoo):
    """The Nesterov rows' fast recipes train with Nadam; its keys are Adam's."""
    arch = named(zoo, "cnn1")
    del arch["name"]
    arch["optimizer"] = {"name": "nadam", "learning_rate": 0.003, "beta_1": 0.9, "epsilon": 1e-7}
    validate_architecture("cnn1", arch)
    arch["optimizer"] = {"name": "nadam", "nesterov": True}
    with pytest.raises(ConfigError, match="nesterov"):
        validate_architecture("cnn1", arch)


def test_valid_optional_fields_pass(zoo):
    arch = named(zoo, "cnn1")
    del arch["name"]
    arch.update(
        early_stopping={"monitor": "val_loss", "patience": 3, "restore_best_weights": True},
        augmentation={"rotation": 10, "shift": 0.1, "zoom": 0.1},
        distributed={},
        datasets={
            "fashion_mnist": {"epochs": 40, "optimizer": {"name": "adam", "learning_rate": 1e-3}},
            "cifar10": {"augmentation": {"shift": 0.1}, "early_stopping": {"patience": 5}},
        },
    )
    arch["layers"][0] = {"conv2d": {"filters": 8, "kernel_size": [3, 3], "padding": "same"}}
    arch["layers"][1] = {"maxpool2d": {"pool_size": 2, "strides": 2}}
    arch["layers"].insert(2, {"batchnorm": None})
    validate_architecture("cnn1", arch)


def _set(path, value):
    """A change to an architecture: set the value at a path of keys and indices."""

    def change(arch):
        *parents, last = path
        node = arch
        for key in parents:
            node = node[key]
        node[last] = value

    return change


def _delete(path):
    def change(arch):
        *parents, last = path
        node = arch
        for key in parents:
            node = node[key]
        del node[last]

    return change


BAD = {
    # case: (architecture, change, what the message must name)
    "unknown layer type": ("cnn1", _set(["layers", 1], {"conv3d": {}}), ["layers[1]", "conv3d"]),
    "unknown layer key": (
        "cnn1",
        _set(["layers", 0, "conv2d", "filter"], 32),
        ["layers[0].conv2d", "'filter'"],
    ),
    "missing required field": ("fc64", _delete(["epochs"]), ["'epochs'"]),
    "missing required layer key": (
        "cnn2",
        _delete(["layers", 1, "conv2d", "kernel_size"]),
        ["layers[1].conv2d", "kernel_size"],
    ),
    "bad dropout rate": ("cnn_dropout", _set(["layers", 3, "dropout", "rate"], 1.5), ["rate"]),
    "negative dropout rate": (
        "cnn_dropout",
        _set(["layers", 6, "dropout", "rate"], -0.1),
        ["rate"],
    ),
    "bad optimizer name": ("fc64", _set(["optimizer", "name"], "rmsprop"), ["rmsprop"]),
    "unknown optimizer key": ("fc64", _set(["optimizer", "momentum"], 0.9), ["momentum"]),
    "bad override key": ("fc64", _set(["datasets"], {"mnist": {"layers": []}}), ["layers"]),
    "bad override value": ("fc64", _set(["datasets"], {"mnist": {"epochs": 0}}), ["epochs"]),
    "unknown field": ("fc64", _set(["learning_rate"], 0.1), ["learning_rate"]),
    "bad batch size": ("fc64", _set(["batch_size"], "128"), ["batch_size"]),
    "bad epochs": ("fc64", _set(["epochs"], 0), ["epochs"]),
    "boolean units": ("fc64", _set(["layers", 0, "dense", "units"], True), ["units"]),
    "bad padding": ("cnn1", _set(["layers", 0, "conv2d", "padding"], "full"), ["padding"]),
    "bad kernel size": (
        "cnn1",
        _set(["layers", 0, "conv2d", "kernel_size"], [3, 3, 3]),
        ["kernel"],
    ),
    "bad activation": ("fc64", _set(["layers", 0, "dense", "activation"], 1), ["activation"]),
    "layer not one key": ("fc64", _set(["layers", 0], {"dense": {}, "flatten": {}}), ["layers[0]"]),
    "augmentation key": ("cnn1", _set(["augmentation"], {"flip": True}), ["flip"]),
    "augmentation shift": ("cnn1", _set(["augmentation"], {"shift": 1.0}), ["shift"]),
    "augmentation rotation": ("cnn1", _set(["augmentation"], {"rotation": -5}), ["rotation"]),
    "early stopping key": ("cnn1", _set(["early_stopping"], {"patients": 3}), ["patients"]),
    "distributed not a mapping": ("cnn1", _set(["distributed"], "yes"), ["distributed"]),
    "last layer not softmax": (
        "fc64",
        _set(["layers", 2, "dense", "activation"], "relu"),
        ["layers[2]"],
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_architecture_is_a_one_line_config_error(zoo, case):
    name, change, needles = BAD[case]
    arch = copy.deepcopy(zoo[name])
    change(arch)
    with pytest.raises(ConfigError, match=f"^architecture {re.escape(repr(name))}") as info:
        validate_architecture(name, arch)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"architecture {name!r}")
    for needle in needles:
        assert needle in message


def test_unknown_layer_type_lists_the_known_ones(zoo):
    arch = copy.deepcopy(zoo["cnn1"])
    arch["layers"][0] = {"conv3d": {"filters": 4}}
    with pytest.raises(ConfigError, match=r"known: dense, conv2d, maxpool2d, dropout"):
        validate_architecture("cnn1", arch)


def test_too_big_for_the_input_is_a_config_error(zoo):
    with pytest.raises(ConfigError, match=r"'cnn2'.*layers\[1\].*\(4, 4, 1\)") as info:
        build_model(named(zoo, "cnn2"), (4, 4, 1))
    message = str(info.value)
    assert "\n" not in message
    assert "'cnn2'" in message and "layers[1]" in message and "(4, 4, 1)" in message


def test_pool_on_a_single_pixel_is_a_config_error():
    arch = {
        "name": "tiny",
        "layers": [{"maxpool2d": {}}, {"dense": {"units": 10, "activation": "softmax"}}],
        "optimizer": {"name": "adam"},
        "batch_size": 8,
        "epochs": 1,
    }
    with pytest.raises(ConfigError, match=r"'tiny', layers\[0\] \(maxpool2d\).*\(1, 1, 1\)"):
        build_model(arch, (1, 1, 1))


def test_class_count_mismatch_is_a_config_error(zoo):
    with pytest.raises(ConfigError, match="100"):
        build_model(named(zoo, "fc64"), DIGITS, num_classes=100)


def test_activation_keras_does_not_know_is_a_config_error(zoo):
    arch = named(zoo, "fc64")
    arch["layers"][0]["dense"]["activation"] = "relux"
    with pytest.raises(ConfigError, match=r"'fc64', layers\[0\] \(dense\): .*'relux'"):
        build_model(arch, DIGITS)


def test_a_key_keras_refuses_is_one_line_naming_the_layer(zoo):
    """build_model builds what a job's spec says (validated where it is made: config.job_spec);
    a spec made by hand with a key Keras does not know stops in one line."""
    arch = named(zoo, "cnn1")
    arch["layers"][0]["conv2d"]["filter"] = 8
    with pytest.raises(ConfigError, match=r"'cnn1', layers\[0\] \(conv2d\): .*'filter'"):
        build_model(arch, DIGITS)


# --- afternoon.zoo's names, defaults and shapes agree with tf_keras ------------------------------


def _activation_or_none(name):
    """What tf_keras makes of activation ``name``, if it maps a tensor to one of its shape."""
    import tensorflow as tf

    try:
        function = tf.keras.activations.get(name)
        out = function(tf.ones((2, 3)))
    except (ValueError, TypeError, AttributeError):
        return None
    return function if getattr(out, "shape", None) == (2, 3) else None


def test_activations_are_what_keras_accepts():
    import tensorflow as tf

    assert all(_activation_or_none(name) is not None for name in ACTIVATIONS)
    for name in ("relux", "Relu", "hard_swish", "hard_silu", "leakyrelu", "get", "serialize"):
        assert name not in ACTIVATIONS and _activation_or_none(name) is None
    # Every name tf_keras resolves (of its activations, tf.nn's, its layers'), and no other.
    candidates = {*dir(tf.keras.activations), *dir(tf.nn), *dir(tf.keras.layers)}
    accepted = {name for name in candidates if _activation_or_none(name) is not None}
    assert accepted == set(ACTIVATIONS)


@pytest.mark.parametrize("activation", ["gelu", "LeakyReLU", "log_softmax"])
def test_a_zoo_activation_builds(zoo, activation):
    arch = named(zoo, "fc64")
    arch["layers"][0]["dense"]["activation"] = activation
    assert build_model(arch, DIGITS).output_shape == (None, 10)


def test_unknown_activation_is_one_line_from_the_zoo_check(zoo):
    arch = copy.deepcopy(zoo["cnn1"])
    arch["layers"][0]["conv2d"]["activation"] = "leakyrelu"
    with pytest.raises(ConfigError, match="must be a Keras activation .*got 'leakyrelu'") as info:
        validate_architecture("cnn1", arch)
    assert str(info.value) == (
        "architecture 'cnn1', layers[0].conv2d.activation: must be a Keras activation "
        f"({', '.join(ACTIVATIONS)}), got 'leakyrelu'"
    )


KNOWN = "known: digits, mnist, fashion_mnist, cifar10"


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "datasets",
            {"mnist": {"epochs": 3}, "fashion-mnist": {"epochs": 40}},
            f"datasets: unknown dataset 'fashion-mnist' ({KNOWN})",
        ),
        (
            "reference_accuracy",
            {"mnist": 97.5, "svhn": 95.0},
            f"reference_accuracy: unknown dataset 'svhn' ({KNOWN})",
        ),
        (
            "reference_accuracy",
            {"mnist": 101},
            "reference_accuracy.mnist: must be a percentage (0..100), got 101",
        ),
    ],
)
def test_datasets_named_in_the_zoo_are_registered(zoo, field, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        validate_architecture("fc64", {**zoo["fc64"], field: value})
    assert str(info.value) == f"architecture 'fc64', {message}"


@pytest.mark.parametrize("name", ["my net", "cnn/2", "_cnn", "..", 7])
def test_an_architecture_name_is_a_path_component(zoo, name):
    with pytest.raises(ConfigError, match="the name must be letters, digits") as info:
        validate_architecture(name, zoo["fc64"])
    assert str(info.value) == (
        f"architecture {name!r}: the name must be letters, digits, _ . - (a letter or digit first)"
    )


def test_zoo_defaults_are_keras_defaults():
    """The defaults every job's spec carries (afternoon.defaults) are Keras' own: passing them
    changes no model."""
    import tensorflow as tf

    layers = tf.keras.layers
    classes = [
        ("dense", layers.Dense, (4,)),
        ("conv2d", layers.Conv2D, (4, 3)),
        ("maxpool2d", layers.MaxPooling2D, ()),
        ("batchnorm", layers.BatchNormalization, ()),
    ]
    assert [kind for kind, _, _ in classes] == list(LAYER_DEFAULTS)
    for kind, cls, args in classes:
        default, ours = cls(*args, name="x"), cls(*args, name="x", **layer_settings(kind, {}))
        assert default.get_config() == ours.get_config()
    optimizers = tf.keras.optimizers
    for name, cls in [("adam", optimizers.Adam), ("sgd", optimizers.SGD),
                      ("adadelta", optimizers.Adadelta), ("nadam", optimizers.Nadam)]:  # fmt: skip
        assert cls().get_config() == cls(**OPTIMIZER_DEFAULTS[name]).get_config()


@pytest.mark.parametrize(
    "layers, shape",
    [
        ([{"conv2d": {"filters": 4, "kernel_size": 3, "strides": 2}}], (8, 8, 1)),
        ([{"conv2d": {"filters": 4, "kernel_size": [5, 3], "padding": "same"}}], (7, 9, 3)),
        ([{"maxpool2d": {"pool_size": 3}}], (8, 8, 1)),
        ([{"maxpool2d": {"pool_size": 2, "strides": 1, "padding": "same"}}], (5, 5, 2)),
        ([{"maxpool2d": None}] * 3, (8, 8, 1)),
        ([{"maxpool2d": {}}] * 4, (8, 8, 1)),
        ([{"conv2d": {"filters": 4, "kernel_size": 9}}], (8, 8, 1)),
        ([{"flatten": {}}, {"maxpool2d": {}}], (8, 8, 1)),
    ],
)
def test_the_zoo_shape_arithmetic_agrees_with_keras(layers, shape):
    """check_input_fits (no TensorFlow) refuses what build_model refuses, and only that."""
    arch = {"name": "t", "optimizer": {"name": "adam"}, "batch_size": 8, "epochs": 1}
    arch["layers"] = [*copy.deepcopy(layers), {"dense": {"units": 10, "activation": "softmax"}}]
    try:
        build_model(arch, shape)
    except ConfigError as err:
        assert "too big" in str(err)
        with pytest.raises(ConfigError, match="too big"):
            check_input_fits("t", arch, shape, 10, "test")
    else:
        check_input_fits("t", arch, shape, 10, "test")
