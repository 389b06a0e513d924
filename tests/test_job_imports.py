"""What a job imports: each Snakemake job is a fresh process, so every library a stage imports and
does not use costs every job of that stage its import time (TensorFlow ~2-3 s, scikit-learn with
SciPy ~0.5-0.8 s on 2 cores; BENCHMARKS.md, "The default study"). Real stage runs, in fresh
interpreters, then a look at ``sys.modules``."""

import subprocess
import sys

from helpers.env import clean_env

TENSORFLOW = ("tensorflow", "tf_keras", "keras")


def loaded_after(code: str, cwd) -> set[str]:
    """The modules (dotted names) a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    env = clean_env()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split())


def packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_data_tracking_and_report_stages_do_not_import_tensorflow(tmp_path):
    """preprocess and init-tracking, run for real, and the report, download and sync-tracking
    stages' modules (their --help included) leave TensorFlow unimported."""
    code = f"""
import contextlib
from afternoon import cli
data, mlflow = {str(tmp_path / "data")!r}, {str(tmp_path / "mlflow")!r}
assert cli.main(["preprocess", "digits", "--npz", data + "/digits.npz",
                 "--card", data + "/digits.card.json", "--validation-fraction", "0.1"]) == 0
assert cli.main(["init-tracking", "--experiment", "imports", "--default-db",
                 mlflow + "/mlflow.db", "--marker", mlflow + "/tracking.json"]) == 0
for stage in ("report", "download", "sync-tracking"):
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):
        cli.main([stage, "--help"])
import afternoon.stages.report, afternoon.stages.download, afternoon.stages.sync_tracking
"""
    loaded = packages(loaded_after(code, tmp_path))
    assert {"mlflow", "sklearn", "matplotlib", "pandas"} <= loaded  # the stages did run
    assert not loaded & set(TENSORFLOW)
    assert (tmp_path / "mlflow" / "tracking.json").is_file()


def test_evaluation_does_not_import_scikit_learn(tmp_path):
    """An evaluation (scores, CSVs, figures) computes its confusion matrix and per-class scores
    with numpy: scikit-learn and SciPy's statistics stay unimported (TensorFlow imports SciPy's
    core, not scipy.stats)."""
    code = f"""
import numpy as np
import afternoon
from afternoon.evaluation import evaluate_model, write_evaluation
from afternoon.layout import EVAL_FILES
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(3, activation="softmax")])
model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
rng = np.random.default_rng(0)
x, y = rng.integers(0, 256, (40, 8, 8, 1)).astype(np.uint8), rng.integers(0, 3, 40)
result = evaluate_model(model, x, y, ["a", "b", "c"], batch_size=16)
outputs = {{name: {str(tmp_path)!r} + "/" + name for name in EVAL_FILES}}
write_evaluation(result, outputs, x, y, ["a", "b", "c"], 5)
"""
    loaded = loaded_after(code, tmp_path)
    assert {"tensorflow", "matplotlib"} <= packages(loaded)  # it did evaluate and plot
    assert (tmp_path / "per_class").is_file()
    assert "sklearn" not in packages(loaded) and "scipy.stats" not in loaded
