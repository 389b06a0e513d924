"""The architecture zoo (``config/zoo.yaml``): validation (no TensorFlow needed) and building
Keras 2 (``tf_keras``, switched on by the package's ``__init__``) models from it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from afternoon.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf


def _pos_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _number(v):
    return isinstance(v, int | float) and not isinstance(v, bool)


def _size(v):
    return _pos_int(v) or (isinstance(v, list | tuple) and len(v) == 2 and all(map(_pos_int, v)))


POS_INT = (_pos_int, "a positive integer")
SIZE = (_size, "a positive integer or a pair of them")
FRACTION = (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")
POS_NUMBER = (lambda v: _number(v) and v > 0, "a positive number")
NON_NEGATIVE = (lambda v: _number(v) and v >= 0, "a number >= 0")
NON_NEG_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0")
BOOL = (lambda v: isinstance(v, bool), "true or false")
STRING = (lambda v: isinstance(v, str), "a string")
PADDING = (lambda v: v in ("valid", "same"), "valid or same")
_ANY = (lambda v: True, "anything")
PERCENT = (lambda v: _number(v) and 0 <= v <= 100, "a percentage (0..100)")
MONITOR = (lambda v: v in ("val_loss", "val_accuracy", "loss", "accuracy"), "a Keras metric")

# Layer types and their keys, as the header of config/zoo.yaml documents them.
LAYER_KEYS = {
    "dense": {"required": ("units",), "optional": ("activation",)},
    "conv2d": {
        "required": ("filters", "kernel_size"),
        "optional": ("strides", "padding", "activation"),
    },
    "maxpool2d": {"required": (), "optional": ("pool_size", "strides", "padding")},
    "dropout": {"required": ("rate",), "optional": ()},
    "batchnorm": {"required": (), "optional": ("momentum", "epsilon")},
    "flatten": {"required": (), "optional": ()},
}
_LAYER_VALUES = {"units": POS_INT, "filters": POS_INT, "activation": STRING, "padding": PADDING}
_LAYER_VALUES.update(dict.fromkeys(("kernel_size", "pool_size", "strides"), SIZE))
_LAYER_VALUES.update(rate=FRACTION, momentum=FRACTION, epsilon=POS_NUMBER)
OPTIMIZER_KEYS = {
    "adam": {"learning_rate": POS_NUMBER, "beta_1": FRACTION, "beta_2": FRACTION},
    "sgd": {"learning_rate": POS_NUMBER, "momentum": FRACTION, "nesterov": BOOL},
}
OPTIMIZER_KEYS["adam"]["epsilon"] = POS_NUMBER
EARLY_STOPPING_KEYS = {
    "monitor": MONITOR,
    "patience": NON_NEG_INT,
    "restore_best_weights": BOOL,
    "min_delta": NON_NEGATIVE,
}
AUGMENTATION_KEYS = {"rotation": NON_NEGATIVE, "shift": FRACTION, "zoom": FRACTION}
# Data-parallel training (afternoon.distributed); every key optional, ranks: 1 is one process.
DISTRIBUTED_KEYS = {
    "backend": (lambda v: v == "horovod", "horovod"),
    "ranks": POS_INT,
    "scale_lr": BOOL,
    "warmup_epochs": NON_NEG_INT,
}
REQUIRED_FIELDS = ("layers", "optimizer", "batch_size", "epochs")
OVERRIDABLE = ("optimizer", "batch_size", "epochs", "early_stopping", "augmentation", "distributed")


class _Invalid(Exception):
    """A problem at a place inside one architecture; validate_architecture adds its name."""

    def __init__(self, where: str, message: str):
        super().__init__(f", {where}: {message}" if where else f": {message}")


def _check_value(where: str, value, check) -> None:
    if not check[0](value):
        raise _Invalid(where, f"must be {check[1]}, got {value!r}")


def _check_mapping(where: str, spec, checks: dict, required=()) -> None:
    if not isinstance(spec, dict):
        raise _Invalid(where, f"must be a mapping, got {spec!r}")
    if missing := [key for key in required if key not in spec]:
        raise _Invalid(where, f"missing required key {missing[0]!r}")
    for key, value in spec.items():
        if key not in checks:
            raise _Invalid(where, f"unknown key {key!r} (allowed: {', '.join(checks) or 'none'})")
        _check_value(f"{where}.{key}", value, checks[key])


def _check_optimizer(where: str, spec) -> None:
    if not isinstance(spec, dict) or "name" not in spec:
        raise _Invalid(where, f"must be a mapping with a 'name' (adam or sgd), got {spec!r}")
    if (name := spec["name"]) not in ("adam", "sgd"):
        raise _Invalid(f"{where}.name", f"unknown optimizer {name!r} (known: adam, sgd)")
    _check_mapping(where, spec, {"name": STRING, **OPTIMIZER_KEYS[name]})


def _check_layers(where: str, layers) -> None:
    if not isinstance(layers, list) or not layers:
        raise _Invalid(where, "must be a non-empty list of one-key mappings")
    for i, entry in enumerate(layers):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise _Invalid(at, f"must be a one-key mapping {{type: {{keys}}}}, got {entry!r}")
        ((kind, spec),) = entry.items()
        if kind not in LAYER_KEYS:
            raise _Invalid(at, f"unknown layer type {kind!r} (known: {', '.join(LAYER_KEYS)})")
        keys = LAYER_KEYS[kind]
        checks = {k: _LAYER_VALUES[k] for k in keys["required"] + keys["optional"]}
        _check_mapping(f"{at}.{kind}", {} if spec is None else spec, checks, keys["required"])
    last = layers[-1]
    if "dense" not in last or (last["dense"] or {}).get("activation") != "softmax":
        raise _Invalid(f"{where}[{len(layers) - 1}]", "the last layer must be dense with softmax")


def _check_each(where: str, spec, check) -> None:
    """A mapping with free keys (dataset names, reserved settings) whose values pass ``check``."""
    _check_mapping(where, spec, dict.fromkeys(spec if isinstance(spec, dict) else (), check))


def _check_datasets(where: str, datasets) -> None:
    _check_each(where, datasets, _ANY)
    for dataset, overrides in datasets.items():
        _check_mapping(f"{where}.{dataset}", overrides, dict.fromkeys(OVERRIDABLE, _ANY))
        for key, value in overrides.items():
            _FIELD_CHECKS[key](f"{where}.{dataset}.{key}", value)


_FIELD_CHECKS = {
    "description": lambda w, v: _check_value(w, v, STRING),
    "layers": _check_layers,
    "optimizer": _check_optimizer,
    "batch_size": lambda w, v: _check_value(w, v, POS_INT),
    "epochs": lambda w, v: _check_value(w, v, POS_INT),
    "early_stopping": lambda w, v: _check_mapping(w, v, EARLY_STOPPING_KEYS),
    "augmentation": lambda w, v: _check_mapping(w, v, AUGMENTATION_KEYS),
    "reference_accuracy": lambda w, v: _check_each(w, v, PERCENT),
    "datasets": _check_datasets,
    "distributed": lambda w, v: _check_mapping(w, v, DISTRIBUTED_KEYS),
}


def validate_architecture(name: str, arch: dict) -> None:
    """Raise a one-line ConfigError naming the architecture and key for anything off-format."""
    try:
        if not isinstance(arch, dict):
            raise _Invalid("", f"must be a mapping, got {arch!r}")
        if missing := [field for field in REQUIRED_FIELDS if field not in arch]:
            raise _Invalid("", f"missing required field {missing[0]!r}")
        for field, value in arch.items():
            if field not in _FIELD_CHECKS:
                raise _Invalid("", f"unknown field {field!r} (allowed: {', '.join(_FIELD_CHECKS)})")
            _FIELD_CHECKS[field](field, value)
    except _Invalid as err:
        raise ConfigError(f"architecture {name!r}{err}") from None


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _window_output(size: int, window: int, stride: int, padding: str) -> int:
    """Keras' output length of a conv/pool window along one axis (0 or less: nothing left)."""
    if padding == "same":
        return -(-size // stride)
    return -(-(size - window + 1) // stride)


def _layer_output(kind: str, spec: dict, shape: tuple) -> tuple | None:
    """The output shape (no batch axis) of one zoo layer on ``shape``; None if it does not fit."""
    if kind == "flatten" or (kind == "dense" and len(shape) > 1):  # dense flattens first
        shape = (math.prod(shape),)
    if kind == "dense":
        return (spec["units"],)
    if kind not in ("conv2d", "maxpool2d"):
        return shape  # dropout, batchnorm
    if len(shape) != 3:
        return None  # a 2-D window on a flat (dense or flattened) output
    if kind == "conv2d":
        window, channels, default_strides = _pair(spec["kernel_size"]), spec["filters"], 1
    else:  # Keras pools with strides = pool_size unless told otherwise
        window, channels = _pair(spec.get("pool_size", 2)), shape[2]
        default_strides = window
    strides = _pair(spec.get("strides") or default_strides)
    padding = spec.get("padding", "valid")
    out = tuple(
        _window_output(*args, padding) for args in zip(shape[:2], window, strides, strict=True)
    )
    return (*out, channels) if min(out) > 0 else None


def check_input_fits(name: str, arch: dict, input_shape, num_classes: int, dataset: str) -> None:
    """Raise a one-line ConfigError, without TensorFlow, if a validated ``arch`` cannot run on
    ``input_shape`` (a pool or valid conv larger than its input map, a 2-D layer after a flat
    one) or does not end in ``num_classes`` units: the dry run says so before any job runs."""
    input_shape = tuple(input_shape)
    shape = input_shape
    for i, entry in enumerate(arch["layers"]):
        ((kind, spec),) = entry.items()
        out = _layer_output(kind, spec or {}, shape)
        if out is None:
            raise ConfigError(
                f"architecture {name!r}, layers[{i}] ({kind}): too big for its input {shape} "
                f"(input shape {input_shape} of {dataset})"
            )
        shape = out
    if shape[-1] != num_classes:
        raise ConfigError(
            f"architecture {name!r}: last layer has {shape[-1]} units, {dataset} has "
            f"{num_classes} classes"
        )


def build_optimizer(spec: dict):
    """A Keras 2 (tf_keras) Adam or SGD optimizer from a validated ``optimizer`` mapping."""
    import tensorflow as tf

    kwargs = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] == "adam":
        return tf.keras.optimizers.Adam(**{"learning_rate": 0.001, **kwargs})
    if spec["name"] == "sgd":
        defaults = {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False}
        return tf.keras.optimizers.SGD(**{**defaults, **kwargs})
    raise ConfigError(f"unknown optimizer {spec['name']!r} (known: adam, sgd)")


_KERAS_CLASS = {"dense": "Dense", "conv2d": "Conv2D", "maxpool2d": "MaxPooling2D"}
_KERAS_CLASS.update(dropout="Dropout", batchnorm="BatchNormalization", flatten="Flatten")


def _make_layer(tf, kind: str, spec: dict, seed: int, name: str, dtype):
    """One Keras layer from a zoo entry; kernels and dropout masks seeded from ``seed``."""
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in (spec or {}).items()}
    if kind in ("dense", "conv2d"):
        kw["kernel_initializer"] = tf.keras.initializers.GlorotUniform(seed=seed)
    if kind == "dropout":  # a tf.random.Generator: its state goes into training checkpoints
        kw.update(seed=seed, rng_type="stateful")
    return getattr(tf.keras.layers, _KERAS_CLASS[kind])(name=name, dtype=dtype, **kw)


_AUGMENT = {"rotation": "RandomRotation", "shift": "RandomTranslation", "zoom": "RandomZoom"}


def _augmentation(tf, aug: dict, seed: int) -> list:
    """Random rotation / shift / zoom layers: active in training only (identity at inference)."""
    args = {"rotation": lambda r: (r / 360,), "shift": lambda s: (s, s), "zoom": lambda z: (z,)}
    return [
        getattr(tf.keras.layers, cls)(*args[key](aug[key]), seed=seed + i, name=f"augment_{key}")
        for i, (key, cls) in enumerate(_AUGMENT.items())
        if aug.get(key)
    ]


def build_model(
    arch: dict,
    input_shape: tuple,
    num_classes: int = 10,
    seed: int = 0,
    mixed_precision: str = "float32",
) -> tf.keras.Model:
    """A compiled Sequential for uint8 (H, W, C) images; ``arch`` (zoo entry + name) validated."""
    import tensorflow as tf

    name = arch.get("name") or "model"
    validate_architecture(name, {k: v for k, v in arch.items() if k != "name"})
    if mixed_precision not in ("float32", "mixed_bfloat16"):
        raise ConfigError(f"mixed_precision must be float32 or mixed_bfloat16: {mixed_precision!r}")
    policy = tf.keras.mixed_precision.Policy(mixed_precision)
    input_shape = tuple(input_shape)
    model = tf.keras.Sequential([tf.keras.Input(shape=input_shape, name="images")], name=name)
    model.add(tf.keras.layers.Rescaling(1 / 255, name="rescale", dtype="float32"))
    for layer in _augmentation(tf, arch.get("augmentation") or {}, seed * 1000 + 900):
        model.add(layer)
    specs = arch["layers"]
    for i, entry in enumerate(specs):
        ((kind, spec),) = entry.items()
        where = f"architecture {name!r}, layers[{i}] ({kind})"
        if kind == "dense" and len(model.output_shape) > 2:
            model.add(tf.keras.layers.Flatten(name=f"flatten_auto_{i}", dtype=policy))
        dtype = "float32" if i == len(specs) - 1 else policy
        try:
            layer = _make_layer(tf, kind, spec, seed * 1000 + i, f"{kind}_{i}", dtype)
        except ValueError as err:  # e.g. an activation Keras does not know
            raise ConfigError(f"{where}: {str(err).strip().splitlines()[0]}") from None
        before = model.output_shape[1:]
        try:
            model.add(layer)
            if 0 in model.output_shape[1:]:
                raise ValueError("empty output")
        except ValueError:  # a pool or valid conv larger than the map it gets
            msg = f"{where}: too big for its input {before} (input shape {input_shape})"
            raise ConfigError(msg) from None
    if model.output_shape[-1] != num_classes:
        raise ConfigError(f"architecture {name!r}: last layer units != {num_classes} classes")
    optimizer = build_optimizer(arch["optimizer"])
    model.compile(optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def count_params(model) -> int:
    """Trainable plus non-trainable parameters (batch-norm moving statistics included)."""
    return int(model.count_params())
