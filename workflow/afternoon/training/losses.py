"""Label smoothing for integer labels (a recipe's ``label_smoothing``).

tf_keras' ``SparseCategoricalCrossentropy`` has no ``label_smoothing``; its
``CategoricalCrossentropy`` has, on one-hot labels. ``SmoothedSparseCategoricalCrossentropy``
is that loss on the one-hot encoding of the integer labels the input pipeline feeds: the targets
are (1 - e) x one_hot + e / classes. The labels stay integers everywhere (the input pipeline,
validation, the evaluation's ``model.evaluate``), so the ``accuracy`` metric stays Keras' sparse
categorical accuracy. A job without label smoothing keeps Keras' own sparse loss.

Registered with Keras, so a saved model (its loss) loads anywhere this module is imported
(``evaluation.load_model`` does).
"""

from __future__ import annotations

import tensorflow as tf


@tf.keras.saving.register_keras_serializable(package="afternoon")
class SmoothedSparseCategoricalCrossentropy(tf.keras.losses.Loss):
    """Categorical cross-entropy with ``label_smoothing`` on integer labels (class indices)."""

    def __init__(self, label_smoothing=0.0, name="smoothed_sparse_categorical_crossentropy", **kw):
        super().__init__(name=name, **kw)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        classes = tf.shape(y_pred)[-1]
        labels = tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:-1]), tf.int32)
        one_hot = tf.one_hot(labels, classes, dtype=y_pred.dtype)
        return tf.keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def loss_of(spec: dict):
    """The loss of a job's spec: Keras' sparse cross-entropy, or with ``label_smoothing`` (> 0)
    the smoothed one."""
    smoothing = spec.get("label_smoothing") or 0.0
    if not smoothing:
        return "sparse_categorical_crossentropy"
    return SmoothedSparseCategoricalCrossentropy(label_smoothing=smoothing)
