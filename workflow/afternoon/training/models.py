"""Keras 2 (``tf_keras``, switched on by the package's ``__init__``) models of the architecture zoo
(``config/zoo.yaml``) from a job's spec, validated and every default filled in where it is made
(``config.job_spec``): nothing here reads the zoo or its defaults (tests/test_defaults.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from afternoon.errors import ConfigError
from afternoon.training.precision import PRECISIONS, loss_scaled

if TYPE_CHECKING:
    import tensorflow as tf

_KERAS_OPTIMIZER = {"adam": "Adam", "nadam": "Nadam", "sgd": "SGD", "adadelta": "Adadelta"}


def build_optimizer(spec: dict, schedule=None):
    """A Keras 2 (tf_keras) Adam, Nadam, SGD or Adadelta optimizer from a spec's ``optimizer``
    mapping; with ``schedule`` (afternoon.training.schedules), its learning rate follows it
    (peaking at, or for step starting from, the spec's)."""
    import tensorflow as tf

    if spec["name"] not in _KERAS_OPTIMIZER:
        known = ", ".join(_KERAS_OPTIMIZER)
        raise ConfigError(f"unknown optimizer {spec['name']!r} (known: {known})")
    kwargs = {key: value for key, value in spec.items() if key != "name"}
    if schedule is not None:
        kwargs["learning_rate"] = schedule
    optimizer = getattr(tf.keras.optimizers, _KERAS_OPTIMIZER[spec["name"]])(**kwargs)
    if spec["name"] == "adam":  # Keras' Adam, updating with TensorFlow's fused kernel
        from afternoon.training.fused_adam import fuse_adam

        fuse_adam(optimizer)
    return optimizer


_KERAS_CLASS = {"dense": "Dense", "conv2d": "Conv2D", "maxpool2d": "MaxPooling2D"}
_KERAS_CLASS.update(dropout="Dropout", batchnorm="BatchNormalization", flatten="Flatten")
_KERAS_CLASS["spatial_dropout2d"] = "SpatialDropout2D"


def _make_layer(tf, kind: str, spec: dict, seed: int, name: str, dtype):
    """One Keras layer from a spec's entry; kernels and dropout masks seeded from ``seed``."""
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in (spec or {}).items()}
    if kind in ("dense", "conv2d"):
        kw["kernel_initializer"] = tf.keras.initializers.GlorotUniform(seed=seed)
    if kind in ("dropout", "spatial_dropout2d"):  # a tf.random.Generator: its state is checkpointed
        kw.update(seed=seed, rng_type="stateful")
    return getattr(tf.keras.layers, _KERAS_CLASS[kind])(name=name, dtype=dtype, **kw)


def _rescaling(tf, normalize: dict | None):
    """The first layer: uint8 pixels to x / 255, or with ``normalize`` (x / 255 - mean) / std."""
    if not normalize:
        return tf.keras.layers.Rescaling(1 / 255, name="rescale", dtype="float32")
    mean, std = float(normalize["mean"]), float(normalize["std"])
    return tf.keras.layers.Rescaling(
        1 / (255 * std), offset=-mean / std, name="rescale", dtype="float32"
    )


# In this order (each layer's seed is its place here: a new one goes last).
_AUGMENT = {"rotation": "RandomRotation", "shift": "RandomTranslation", "zoom": "RandomZoom"}
_AUGMENT["flip"] = "RandomFlip"


def _augmentation(tf, aug: dict, seed: int) -> list:
    """Random rotation / shift / zoom / flip layers: active in training only (identity at
    inference). flip: its mode (horizontal), where the dataset's labels allow it (the dry run)."""
    args = {"rotation": lambda r: (r / 360,), "shift": lambda s: (s, s), "zoom": lambda z: (z,)}
    args["flip"] = lambda mode: (mode,)
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
    steps_per_epoch: int | None = None,
    steps_per_execution: int = 1,
) -> tf.keras.Model:
    """A compiled Sequential for uint8 (H, W, C) images; ``arch``: a job's spec (its layers,
    optimizer, augmentation, label_smoothing, schedule, epochs, name). An ``arch`` with a
    ``schedule`` needs ``steps_per_epoch`` (its length in steps); ``steps_per_execution``:
    training steps per call into TensorFlow (the same arithmetic)."""
    import tensorflow as tf

    name = arch.get("name") or "model"
    if mixed_precision not in PRECISIONS:
        raise ConfigError(f"mixed_precision must be {' or '.join(PRECISIONS)}: {mixed_precision!r}")
    policy = tf.keras.mixed_precision.Policy(mixed_precision)
    input_shape = tuple(input_shape)
    model = tf.keras.Sequential([tf.keras.Input(shape=input_shape, name="images")], name=name)
    model.add(_rescaling(tf, arch.get("normalize")))
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
        except (TypeError, ValueError) as err:  # a key or value Keras refuses
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
    schedule = None
    if arch.get("schedule"):
        from afternoon.training.schedules import schedule_of

        if not steps_per_epoch:
            raise ConfigError(f"architecture {name!r}: a schedule needs the steps per epoch")
        peak = arch["optimizer"]["learning_rate"]
        schedule = schedule_of(arch["schedule"], peak, arch["epochs"], steps_per_epoch)
    optimizer = build_optimizer(arch["optimizer"], schedule)  # mixed_float16: loss-scaled
    optimizer = loss_scaled(tf, optimizer, mixed_precision, model.trainable_variables)
    from afternoon.training.losses import loss_of

    model.compile(
        optimizer,
        loss=loss_of(arch),  # label_smoothing: one-hot targets, smoothed; else Keras' sparse
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def count_params(model) -> int:
    """Trainable plus non-trainable parameters (batch-norm moving statistics included)."""
    return int(model.count_params())
