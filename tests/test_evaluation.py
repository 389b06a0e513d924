"""Evaluation: metrics, files and plots, on tiny tf.keras models with hand-set weights."""

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

import afternoon  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from afternoon.errors import AfternoonError, ConfigError, DataFormatError
from afternoon.evaluation import (
    class_scores,
    confusion_counts,
    evaluate_model,
    evaluate_run,
    most_confident_errors,
    write_evaluation,
)
from afternoon.layout import EVAL_FILES
from afternoon.report import plots
from afternoon.runtime import configure_tensorflow
from helpers.stage_args import eval_outputs

import tensorflow as tf  # isort: skip (imported after afternoon: Keras 2)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES3 = ["cat", "dog", "bird"]
GAIN = 10.0  # logit of class j = GAIN * pixel j / 255


def hand_set_model(shape=(8, 8, 1), n_classes=3):
    """Rescaling + Flatten + Dense softmax; logit j = GAIN * (flat pixel j) / 255."""
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Input(shape),
            tf.keras.layers.Rescaling(1 / 255),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(n_classes, activation="softmax"),
        ]
    )
    kernel = np.zeros((int(np.prod(shape)), n_classes), np.float32)
    kernel[np.arange(n_classes), np.arange(n_classes)] = GAIN
    model.layers[-1].set_weights([kernel, np.zeros(n_classes, np.float32)])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def expected_probabilities(x, n_classes=3):
    logits = GAIN * x.reshape(len(x), -1)[:, :n_classes].astype(np.float64) / 255
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def known_errors_set():
    """Six images; 1, 3, 4, 5 are wrong, in confidence order 4, 1, 3, 5."""
    pixels = [(255, 0, 0), (0, 200, 0), (0, 180, 0), (0, 0, 100), (255, 0, 0), (50, 0, 0)]
    labels = [0, 0, 1, 1, 2, 1]
    x = np.zeros((len(pixels), 8, 8, 1), np.uint8)
    x[:, 0, :3, 0] = pixels
    return x, np.array(labels, np.uint8)


@pytest.fixture(scope="module")
def model3():
    return hand_set_model()


@pytest.fixture(scope="module")
def random_set():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 3, size=200).astype(np.uint8)
    return x, y


@pytest.fixture(scope="module")
def result3(model3, random_set):
    x, y = random_set
    return evaluate_model(model3, x, y, CLASSES3, batch_size=64)


def assert_png(path, min_side=100):
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > min_side and image.shape[1] > min_side
    return image


# --- most_confident_errors ---------------------------------------------------------------------


def test_most_confident_errors_exact_order():
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # 0 right
            [0.2, 0.7, 0.1],  # 1 wrong p=.7
            [0.1, 0.1, 0.8],  # 2 right
            [0.05, 0.05, 0.9],  # 3 wrong p=.9
            [0.4, 0.3, 0.3],  # 4 wrong p=.4
            [0.1, 0.2, 0.7],  # 5 wrong p=.7 (tie with 1: test-set order)
        ]
    )
    y = np.array([0, 0, 2, 1, 2, 0])
    assert most_confident_errors(probs, y, 3).tolist() == [3, 1, 5]
    assert most_confident_errors(probs, y, 10).tolist() == [3, 1, 5, 4]
    assert most_confident_errors(probs, y, 0).tolist() == []
    assert most_confident_errors(probs, probs.argmax(axis=1), 5).tolist() == []
    with pytest.raises(ValueError, match=r"probabilities of shape \(6, 3\) for 3 labels"):
        most_confident_errors(probs, y[:3], 2)


# --- evaluate_model ----------------------------------------------------------------------------


def test_evaluate_model_metrics_agree_with_numpy(result3, random_set):
    x, y = random_set
    probs = result3["predictions"]
    np.testing.assert_allclose(probs, expected_probabilities(x), atol=1e-5)
    accuracy = float((probs.argmax(axis=1) == y).mean())
    assert 0.1 < accuracy < 0.9  # there are errors to count
    assert result3["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    loss = -np.log(probs[np.arange(len(y)), y]).mean()
    assert result3["test_loss"] == pytest.approx(loss, rel=1e-4)

    cm = result3["confusion_matrix"]
    assert cm.shape == (3, 3) and np.issubdtype(cm.dtype, np.integer)
    assert cm.sum() == result3["n_test"] == len(y)
    assert np.trace(cm) / cm.sum() == pytest.approx(accuracy, abs=1e-9)
    assert cm.sum(axis=1).tolist() == np.bincount(y, minlength=3).tolist()  # rows are true

    per_class = result3["per_class"]
    assert list(per_class.columns) == ["class", "precision", "recall", "f1", "support"]
    assert per_class["class"].tolist() == CLASSES3
    np.testing.assert_allclose(per_class["recall"], np.diag(cm) / cm.sum(axis=1))
    np.testing.assert_allclose(per_class["precision"], np.diag(cm) / cm.sum(axis=0))
    assert per_class["support"].tolist() == cm.sum(axis=1).tolist()
    assert result3["macro_recall"] == pytest.approx(per_class["recall"].mean())
    assert result3["macro_f1"] == pytest.approx(per_class["f1"].mean())

    assert result3["images_per_s"] > 0 and result3["ms_per_batch"] > 0
    assert result3["batch_size"] == 64


def test_evaluate_model_zero_division_and_uncompiled(random_set):
    x, y = random_set
    model = hand_set_model()
    x = x.copy()
    x[:, 0, 2, 0] = 0  # class 2 is never predicted: its precision is 0, not a warning or NaN
    compiled = evaluate_model(model, x, y, CLASSES3)
    assert compiled["per_class"]["precision"].iloc[2] == 0
    raw = tf.keras.Sequential(model.layers)  # same weights, not compiled
    fallback = evaluate_model(raw, x, y, CLASSES3)
    assert fallback["test_accuracy"] == pytest.approx(compiled["test_accuracy"], abs=1e-6)
    assert fallback["test_loss"] == pytest.approx(compiled["test_loss"], rel=1e-4)


def test_scores_are_scikit_learns_number_for_number():
    """The confusion matrix and per-class scores (numpy, so evaluation jobs skip importing
    scikit-learn and SciPy) equal scikit-learn's, bit for bit, also for classes never predicted
    or never present."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    for _ in range(300):
        k, n = int(rng.integers(2, 12)), int(rng.integers(20, 400))
        y = rng.integers(0, k, n)
        guess = rng.integers(0, int(rng.integers(1, k + 1)), n)  # some classes never predicted
        predicted = np.where(rng.random(n) < rng.random(), y, guess)
        labels = np.arange(k)
        cm = confusion_counts(y, predicted, k)
        expected_cm = confusion_matrix(y, predicted, labels=labels)
        assert cm.dtype == np.int64 and np.array_equal(cm, expected_cm)
        expected = precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0)
        if np.trace(cm) == 0:  # scikit-learn's support turns float when nothing is right
            continue
        for ours, theirs in zip(class_scores(cm), expected, strict=True):
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
        macro = precision_recall_fscore_support(
            y, predicted, labels=labels, zero_division=0, average="macro"
        )
        assert [float(np.mean(s)) for s in class_scores(cm)[:3]] == list(macro[:3])


# --- write_evaluation --------------------------------------------------------------------------


def test_write_evaluation_files(result3, random_set, tmp_path):
    x, y = random_set
    paths = write_evaluation(
        result3, eval_outputs(tmp_path / "eval"), x, y, CLASSES3, n_misclassified=7
    )
    assert set(paths) == set(EVAL_FILES)
    assert all(p.is_file() and p.parent == tmp_path / "eval" for p in paths.values())
    assert not [p for p in (tmp_path / "eval").iterdir() if p.name.startswith(".")]  # no temps

    metrics = json.loads(paths["metrics"].read_text())
    errors = int((result3["predictions"].argmax(axis=1) != y).sum())
    assert metrics["n_test"] == 200 and metrics["n_misclassified"] == errors
    assert metrics["n_misclassified_shown"] == 7
    assert metrics["test_accuracy"] == pytest.approx(result3["test_accuracy"])
    assert metrics["inference_images_per_s"] > 0
    for key in ("test_loss", "macro_precision", "macro_recall", "macro_f1"):
        assert isinstance(metrics[key], float)

    cm = pd.read_csv(paths["confusion_csv"], index_col=0)
    assert cm.index.tolist() == CLASSES3 and cm.columns.tolist() == CLASSES3
    assert cm.to_numpy().tolist() == result3["confusion_matrix"].tolist()

    per_class = pd.read_csv(paths["per_class"])
    assert per_class["class"].tolist() == CLASSES3
    pd.testing.assert_frame_equal(per_class, result3["per_class"], check_dtype=False)

    shown = pd.read_csv(paths["misclassified_csv"])
    expected = most_confident_errors(result3["predictions"], y, 7)
    assert shown["index"].tolist() == expected.tolist()
    assert shown["probability"].is_monotonic_decreasing

    for name in ("confusion_png", "misclassified_png"):
        assert_png(paths[name])


def test_misclassified_order_from_hand_set_model(model3, tmp_path):
    x, y = known_errors_set()
    result = evaluate_model(model3, x, y, CLASSES3)
    probs = expected_probabilities(x)
    assert result["predicted"].tolist() == [0, 1, 1, 2, 0, 0]
    paths = write_evaluation(result, eval_outputs(tmp_path), x, y, CLASSES3, n_misclassified=3)
    shown = pd.read_csv(paths["misclassified_csv"])
    assert shown["index"].tolist() == [4, 1, 3]
    assert shown["true"].tolist() == ["bird", "cat", "dog"]
    assert shown["predicted"].tolist() == ["cat", "dog", "bird"]
    np.testing.assert_allclose(shown["probability"], probs[[4, 1, 3]].max(axis=1), atol=1e-5)
    assert json.loads(paths["metrics"].read_text())["n_misclassified"] == 4

    everything = write_evaluation(
        result, eval_outputs(tmp_path / "all"), x, y, CLASSES3, n_misclassified=25
    )
    assert pd.read_csv(everything["misclassified_csv"])["index"].tolist() == [4, 1, 3, 5]
    assert_png(everything["misclassified_png"])
    titles = plots.misclassified_titles([2, 0], [0, 1], [0.9999, 0.5], CLASSES3)
    assert titles == ["bird → cat (p=1.00)", "cat → dog (p=0.50)"]


def test_zero_errors_writes_a_figure_saying_so(model3, tmp_path):
    x, _ = known_errors_set()
    y = expected_probabilities(x).argmax(axis=1).astype(np.uint8)
    result = evaluate_model(model3, x, y, CLASSES3)
    assert result["test_accuracy"] == 1.0
    paths = write_evaluation(result, eval_outputs(tmp_path), x, y, CLASSES3)
    assert json.loads(paths["metrics"].read_text())["n_misclassified"] == 0
    assert pd.read_csv(paths["misclassified_csv"]).empty
    assert_png(paths["misclassified_png"])


def test_rgb_misclassified_grid(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    path = plots.plot_misclassified(
        images, [0, 1, 2, 0, 1], [1, 2, 0, 2, 0], [0.9, 0.8, 0.7, 0.6, 0.5], CLASSES3,
        tmp_path / "rgb.png", "rgb",
    )  # fmt: skip
    image = assert_png(path)
    assert image.shape[1] > 300  # three tiles across


def test_plot_history_with_and_without_validation(tmp_path):
    full = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [1.0, 0.6, 0.4],
            "accuracy": [0.5, 0.7, 0.8],
            "val_loss": [1.1, 0.8, 0.7],
            "val_accuracy": [0.45, 0.6, 0.65],
        }
    )
    with_val = assert_png(plots.plot_history(full, tmp_path / "a.png", "with validation"))
    train_only = full[["epoch", "loss", "accuracy"]]
    without = assert_png(plots.plot_history(train_only, tmp_path / "b.png", "train only"))
    assert with_val.shape == without.shape
    no_epoch = full.drop(columns=["epoch"]).iloc[:1]
    assert_png(plots.plot_history(no_epoch, tmp_path / "c.png", "one epoch, no epoch column"))


def test_confusion_matrix_plot_ten_classes(tmp_path):
    names = [f"class {i}" for i in range(10)]
    cm = np.random.default_rng(2).integers(0, 1000, size=(10, 10))
    image = assert_png(plots.plot_confusion_matrix(cm, names, tmp_path / "cm.png", "ten"))
    assert image.shape[0] >= 600 and image.shape[1] >= 600
    with pytest.raises(ValueError, match=r"confusion matrix is \(10, 10\), expected \(3, 3\)"):
        plots.plot_confusion_matrix(cm, names[:3], tmp_path / "bad.png", "bad")


# --- evaluate_run ------------------------------------------------------------------------------


def write_dataset(tmp_path, x, y, class_names):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    npz = data_dir / "toy.npz"
    split = {"x_train": x[:20], "y_train": y[:20], "x_val": x[:0], "y_val": y[:0]}
    np.savez(npz, **split, x_test=x, y_test=y)
    card = data_dir / "toy.card.json"
    card.write_text(json.dumps({"dataset": "toy", "class_names": class_names}))
    return npz, card


def test_evaluate_run_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    names = [f"c{i}" for i in range(10)]
    x = rng.integers(0, 256, size=(120, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=120).astype(np.uint8)
    model = hand_set_model(shape=(8, 8, 3), n_classes=10)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    model_path = tmp_path / "runs" / "toy" / "tiny" / "model.keras"
    model_path.parent.mkdir(parents=True)
    model.save(model_path)
    npz, card = write_dataset(tmp_path, x, y, names)

    out = tmp_path / "eval"
    metrics = evaluate_run(model_path, npz, card, eval_outputs(out), n_misclassified=9, threads=2)
    assert metrics == json.loads((out / "metrics.json").read_text())
    probs = model.predict(x, verbose=0)
    assert metrics["test_accuracy"] == pytest.approx(float((probs.argmax(1) == y).mean()), abs=1e-6)
    assert metrics["n_test"] == 120 and metrics["n_misclassified_shown"] == 9
    for file in EVAL_FILES.values():
        assert (out / file).is_file()
    assert pd.read_csv(out / "confusion_matrix.csv", index_col=0).index.tolist() == names
    assert_png(out / "confusion_matrix.png", min_side=500)
    # a second call in the same process (TF already running) does not crash on threads
    again = evaluate_run(model_path, npz, card, eval_outputs(tmp_path / "again"), threads=3)
    assert again["test_accuracy"] == metrics["test_accuracy"]


def assert_one_line_naming(excinfo, path):
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(excinfo.value, AfternoonError)


def test_evaluate_run_bad_model_files(tmp_path, random_set):
    x, y = random_set
    npz, card = write_dataset(tmp_path, x, y, CLASSES3)
    corrupt = tmp_path / "corrupt" / "model.keras"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"this is not\na Keras model")
    with pytest.raises(DataFormatError, match="not a loadable Keras model") as excinfo:
        evaluate_run(corrupt, npz, card, eval_outputs(tmp_path / "out"))
    assert_one_line_naming(excinfo, corrupt)
    missing = tmp_path / "missing" / "model.keras"
    with pytest.raises(DataFormatError, match="model file not found$") as excinfo:
        evaluate_run(missing, npz, card, eval_outputs(tmp_path / "out"))
    assert_one_line_naming(excinfo, missing)
    assert not (tmp_path / "out").exists()


def test_evaluate_run_mismatches_name_the_files(tmp_path, model3, random_set):
    x, y = random_set
    model_path = tmp_path / "model.keras"
    model3.save(model_path)
    npz, card = write_dataset(tmp_path, x, y, CLASSES3 + ["fish"])
    with pytest.raises(DataFormatError, match=r"outputs \(3,\) per image, card has 4") as excinfo:
        evaluate_run(model_path, npz, card, eval_outputs(tmp_path / "out"))
    assert_one_line_naming(excinfo, model_path)
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="not a readable npz") as excinfo:
        evaluate_run(model_path, bad_npz, card, eval_outputs(tmp_path / "out"))
    assert_one_line_naming(excinfo, bad_npz)
    with pytest.raises(ConfigError, match="threads must be a positive integer, got 0"):
        configure_tensorflow(0)
