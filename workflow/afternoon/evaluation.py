"""Test-set evaluation of one trained model: loss, accuracy, confusion matrix, per-class scores,
the most confidently misclassified images and inference throughput.

`evaluate_model()` computes, `write_evaluation()` writes (each file atomically), `evaluate_run()`
does both from the files a training job leaves behind. The output names are the layout's
(``afternoon.layout.EVAL_FILES``)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from afternoon.errors import DataFormatError
from afternoon.fileio import atomic_path, read_json, write_json_atomic
from afternoon.layout import EVAL_FILES
from afternoon.npz import load_npz
from afternoon.runtime import configure_tensorflow

log = logging.getLogger(__name__)

TIMED_PASSES = 3
SCORES = ("precision", "recall", "f1", "support")  # per_class columns after "class"


def load_model(model_path: str | Path):
    """The saved tf.keras model; a missing or unreadable file is a one-line DataFormatError."""
    path = Path(model_path)
    if not path.is_file():
        raise DataFormatError(f"{path}: model file not found")
    import tensorflow as tf

    import afternoon.training.losses  # noqa: F401 (registers the label-smoothing loss with Keras)
    import afternoon.training.schedules  # noqa: F401 (registers the learning-rate schedules with Keras)

    try:
        return tf.keras.models.load_model(str(path))
    except Exception as exc:  # corrupt files fail in h5py, zipfile, json or Keras itself
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__  # one line
        raise DataFormatError(f"{path}: not a loadable Keras model ({reason})") from exc


def load_class_names(card_path: str | Path) -> list[str]:
    """The class names listed by a dataset card."""
    card = read_json(card_path)
    names = card.get("class_names") if isinstance(card, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataFormatError(f"{card_path}: no list of class_names")
    return names


def most_confident_errors(probabilities: np.ndarray, y_true: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to ``n`` wrong predictions, highest predicted probability first (ties in
    test-set order); fewer than ``n`` errors give them all, none gives an empty array."""
    probs, y = np.asarray(probabilities), np.asarray(y_true)
    if probs.ndim != 2 or len(probs) != len(y) or n < 0:
        raise ValueError(f"probabilities of shape {probs.shape} for {len(y)} labels, n={n}")
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y)
    confidence = probs[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:n]


def confusion_counts(y_true: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """The k x k confusion matrix (rows true, columns predicted) of labels in 0..k-1, int64."""
    pairs = np.asarray(y_true, np.int64) * k + np.asarray(predicted, np.int64)
    return np.bincount(pairs, minlength=k * k).reshape(k, k).astype(np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, 0 where the denominator is 0."""
    denominator = np.asarray(denominator, np.float64)
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, np.asarray(numerator, np.float64) / safe)


def class_scores(cm: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per class (``SCORES``): precision, recall, F1 (0 where undefined) and support, from the
    confusion matrix: scikit-learn's ``precision_recall_fscore_support(zero_division=0)``
    number for number, without importing scikit-learn (and SciPy) in every evaluation job."""
    tp, predicted, true = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    f1 = _ratio(2.0 * tp.astype(np.float64), true.astype(np.float64) + predicted)
    return _ratio(tp, predicted), _ratio(tp, true), f1, true.astype(np.int64)


def measure_throughput(model, x: np.ndarray, batch_size: int, passes: int = TIMED_PASSES):
    """(predictions, speed): `model.predict` on all of ``x`` after a warm-up batch, best of
    ``passes`` timed passes; speed has images_per_s, ms_per_batch, batch_size, best_pass_s."""
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # traces predict_function
    best, predictions = math.inf, None
    for _ in range(passes):
        start = time.perf_counter()
        out = model.predict(x, batch_size=batch_size, verbose=0)
        best = min(best, time.perf_counter() - start)
        predictions = out if predictions is None else predictions
    ms_per_batch = 1000.0 * best / math.ceil(len(x) / batch_size)
    speed = dict(images_per_s=len(x) / best, ms_per_batch=ms_per_batch, batch_size=batch_size)
    return np.asarray(predictions), speed | {"best_pass_s": best}


def _loss_and_accuracy(model, x, y, predictions, batch_size: int) -> tuple[float, float]:
    """model.evaluate's loss and accuracy; the same from the predictions if it is not compiled."""
    accuracy = float((predictions.argmax(axis=1) == y).mean())
    if getattr(model, "compiled_loss", None) is None:
        log.warning("model is not compiled: loss and accuracy computed from its predictions")
        p_true = np.clip(predictions[np.arange(len(y)), y].astype(np.float64), 1e-7, 1.0)
        return float(-np.log(p_true).mean()), accuracy
    scores = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    keys = [k for k in ("accuracy", "sparse_categorical_accuracy", "acc") if k in scores]
    return float(scores["loss"]), float(scores[keys[0]]) if keys else accuracy


def evaluate_model(
    model, x_test: np.ndarray, y_test: np.ndarray, class_names: Sequence[str], batch_size: int = 256
) -> dict:
    """Scores of ``model`` on raw uint8 test images (the model rescales them itself): test_loss,
    test_accuracy (model.evaluate), predictions (N x classes), predicted, confusion_matrix (rows
    true), per_class (DataFrame: class, precision, recall, f1, support), macro_precision/recall/f1,
    images_per_s, ms_per_batch, batch_size, best_pass_s, n_test, class_names."""
    import pandas as pd

    x, y, k = np.asarray(x_test), np.asarray(y_test).astype(np.int64), len(class_names)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"{len(x)} test images with {len(y)} labels: nothing to evaluate")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"test labels {y.min()}..{y.max()} outside the {k} classes")
    predictions, speed = measure_throughput(model, x, batch_size)
    if predictions.shape != (len(x), k):
        raise ValueError(f"model outputs {predictions.shape[1:]} per image, expected ({k},)")
    predicted = predictions.argmax(axis=1)
    test_loss, test_accuracy = _loss_and_accuracy(model, x, y, predictions, batch_size)
    cm = confusion_counts(y, predicted, k)
    scores = class_scores(cm)
    per_class = pd.DataFrame({"class": list(class_names)} | dict(zip(SCORES, scores, strict=True)))
    macro = {f"macro_{m}": float(np.mean(v)) for m, v in zip(SCORES[:3], scores[:3], strict=True)}
    return {
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "predictions": predictions,
        "predicted": predicted,
        "confusion_matrix": cm,
        "per_class": per_class,
        **macro,
        **speed,
        "n_test": len(x),
        "class_names": list(class_names),
    }


def write_evaluation(
    result: dict,
    outputs: dict[str, Path],
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: Sequence[str],
    n_misclassified: int = 25,
    *,
    title: str = "test set",
) -> dict[str, Path]:
    """Write ``outputs`` (a path for each name of ``layout.EVAL_FILES``): metrics.json, the
    confusion matrix (CSV, PNG), per_class.csv and the most confidently misclassified images
    (PNG, plus their indices in misclassified.csv)."""
    import pandas as pd

    from afternoon.report import plots

    names = list(class_names)
    if missing := set(EVAL_FILES) - set(outputs):
        raise ValueError(f"no path for the evaluation outputs {sorted(missing)}")
    paths = {name: Path(outputs[name]) for name in EVAL_FILES}
    y = np.asarray(y_test).astype(np.int64)
    probs = np.asarray(result["predictions"])
    predicted = probs.argmax(axis=1)
    shown = most_confident_errors(probs, y, n_misclassified)
    scores = ("test_loss", "test_accuracy", "macro_precision", "macro_recall", "macro_f1")
    metrics = {key: float(result[key]) for key in scores} | {
        "inference_images_per_s": float(result["images_per_s"]),
        "inference_ms_per_batch": float(result["ms_per_batch"]),
        "inference_batch_size": int(result["batch_size"]),
        "n_test": len(y),
        "n_misclassified": int((predicted != y).sum()),
        "n_misclassified_shown": len(shown),
    }
    write_json_atomic(paths["metrics"], metrics)
    cm = np.asarray(result["confusion_matrix"])
    with atomic_path(paths["confusion_csv"]) as tmp:
        pd.DataFrame(cm, index=names, columns=names).to_csv(tmp, index_label="true/predicted")
    with atomic_path(paths["per_class"]) as tmp:
        result["per_class"].to_csv(tmp, index=False)
    true, pred, prob = y[shown], predicted[shown], probs[shown, predicted[shown]]
    labels = np.array(names, dtype=object)
    rows = {"index": shown, "true": labels[true], "predicted": labels[pred], "probability": prob}
    with atomic_path(paths["misclassified_csv"]) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    accuracy = metrics["test_accuracy"]
    plots.plot_confusion_matrix(
        cm, names, paths["confusion_png"], f"{title}: confusion matrix (accuracy {accuracy:.4f})"
    )
    heading = f"{title}: {len(shown)} most confident of {metrics['n_misclassified']} errors"
    images = np.asarray(x_test)[shown]
    plots.plot_misclassified(images, true, pred, prob, names, paths["misclassified_png"], heading)
    return paths


def evaluate_run(
    model_path: Path,
    npz_path: Path,
    card_path: Path,
    outputs: dict[str, Path],
    n_misclassified: int = 25,
    threads: int | None = None,
    *,
    batch_size: int = 256,
    title: str | None = None,
) -> dict:
    """Evaluate a saved model on the test split of a preprocessed dataset; write ``outputs``
    (see ``write_evaluation``, figures titled ``title``) and return the metrics written to
    metrics.json."""
    model_path, npz_path, card_path = Path(model_path), Path(npz_path), Path(card_path)
    if threads is not None:
        configure_tensorflow(threads)  # before any TensorFlow op runs

    names = load_class_names(card_path)
    data = load_npz(npz_path)
    x_test, y_test = data["x_test"], data["y_test"]
    model = load_model(model_path)
    k, where = len(names), f"{model_path} with {npz_path} and {card_path}"
    if len(x_test) == 0 or int(y_test.max()) >= k:
        raise DataFormatError(f"{npz_path}: empty test split or labels beyond {k} classes")
    try:
        in_shape, out_shape = tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
    except (AttributeError, RuntimeError, TypeError) as exc:
        raise DataFormatError(f"{model_path}: model has no single input and output") from exc
    if out_shape != (k,):
        raise DataFormatError(f"{where}: model outputs {out_shape} per image, card has {k} classes")
    fits = [m in (None, d) for m, d in zip(in_shape, x_test.shape[1:], strict=False)]
    if len(in_shape) != x_test.ndim - 1 or not all(fits):
        raise DataFormatError(f"{where}: model takes {in_shape} images, not {x_test.shape[1:]}")
    title = title or f"{model_path.name} on {npz_path.stem}"
    result = evaluate_model(model, x_test, y_test, names, batch_size=batch_size)
    paths = write_evaluation(result, outputs, x_test, y_test, names, n_misclassified, title=title)
    metrics = read_json(paths["metrics"])
    log.info("%s: %s", title, metrics)
    return metrics
