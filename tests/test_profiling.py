"""TensorBoard profiling (training.profile_batches: [first, last]), as the slides show it: a
profile of exactly those training steps in the run's tensorboard/ folder, though the pipeline runs
50 steps per call into TensorFlow; the same weights as without it; a resumed job profiles the
first epoch it trains; a range that cannot be is one line naming the key, at the dry run where
the dataset's size is known, else at the job's start."""

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from afternoon.checks import check_profile_batches
from afternoon.config import check_against_schema, job_spec, load_yaml, load_zoo
from afternoon.errors import ConfigError
from helpers import runners
from helpers.paths import REPO
from test_resume import start_and_stop, train_command
from test_training import spec_for, train, weights

ZOO = load_zoo(REPO / "config/zoo.yaml")
SCHEMA = load_yaml(REPO / "workflow/schemas/config.schema.yaml")
KEY = "config: key training.profile_batches"


def config_with(profile_batches) -> dict:
    config = load_yaml(REPO / "config/config.yaml")
    config["training"]["profile_batches"] = profile_batches
    return config


# --- The key: in a job's spec only when set, checked at the dry run ----------------------------


def test_only_a_set_key_enters_the_job_spec():
    default = job_spec(load_yaml(REPO / "config/config.yaml"), ZOO, "digits", "cnn1")
    assert "profile_batches" not in default  # the default study's specs do not change
    assert "profile_batches" not in job_spec(config_with(None), ZOO, "digits", "cnn1")
    spec = job_spec(config_with([2, 3]), ZOO, "digits", "cnn1")
    assert spec == {**default, "profile_batches": [2, 3]}


@pytest.mark.parametrize(
    "value, message",
    [
        ([0, 3], "key training.profile_batches.0: 0 is less than the minimum of 1"),
        ([3], "key training.profile_batches: [3] is too short"),
        ([1, 2, 3], "key training.profile_batches: [1, 2, 3] is too long"),
        ("2,3", "key training.profile_batches: '2,3' is not of type 'array', 'null'"),
    ],
)
def test_a_malformed_range_is_one_line_naming_the_key(value, message):
    with pytest.raises(ConfigError, match=r"^config: " + message.replace("[", r"\[")):
        check_against_schema(config_with(value), SCHEMA)


def card(tmp_path: Path, train_samples: int, validation_fraction=0.1) -> Path:
    path = tmp_path / "digits.card.json"
    path.write_text(json.dumps({"validation_fraction": validation_fraction,
                                "splits": {"train": {"n": train_samples}}}))  # fmt: skip
    return path


def test_the_dry_run_checks_the_range_against_each_jobs_first_epoch(tmp_path):
    runs = {"digits": ["fc64", "cnn1"]}  # seed batch sizes 128 and 32
    with pytest.raises(ConfigError, match=rf"^{KEY}: first step 4 is after the last, 3$"):
        check_profile_batches(config_with([4, 3]), ZOO, runs, lambda ds: tmp_path / "none.json")
    # 1212 training samples (as digits' card says): fc64 has 10 steps per epoch, cnn1 38
    digits = card(tmp_path, 1212)
    check_profile_batches(config_with([2, 10]), ZOO, runs, lambda ds: digits)
    with pytest.raises(ConfigError) as error:
        check_profile_batches(config_with([2, 11]), ZOO, runs, lambda ds: digits)
    assert str(error.value) == (
        f"{KEY}: [2, 11]: fc64 on digits has 10 steps per epoch (1212 training samples, batch 128)"
    )
    # not preprocessed yet, or with another validation fraction: the job checks at its start
    check_profile_batches(config_with([2, 500]), ZOO, runs, lambda ds: tmp_path / "none.json")
    other = card(tmp_path, 1212, validation_fraction=0.2)
    check_profile_batches(config_with([2, 500]), ZOO, runs, lambda ds: other)


# --- The profile (digits, training jobs as the train stage runs them) --------------------------


@pytest.fixture(scope="module")
def digits(digits, tmp_path_factory):
    return runners.tracked_dataset(digits, tmp_path_factory.mktemp("profile"), "test-profile")


def profiled_steps(tensorboard: Path) -> list[tuple[int, int]]:
    """(epoch, step), counted from 0, of every training step marker (Keras' Trace "train"
    around a call into TensorFlow) in the run's one profile."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (path,) = tensorboard.glob("plugins/profile/*/*.xplane.pb")
    space = xplane_pb2.XSpace.FromString(path.read_bytes())
    steps = []
    for plane in space.planes:
        events, stats = plane.event_metadata, plane.stat_metadata
        for line in plane.lines:
            for event in line.events:
                if events[event.metadata_id].name == "train":
                    values = {stats[s.metadata_id].name: s.int64_value for s in event.stats}
                    steps.append((values["epoch_num"], values["step_num"]))
    return sorted(steps)


# cnn_dropout, batch 16: 76 steps per epoch on digits, 50 per call into TensorFlow
SPEC = {"epochs": 2, "batch_size": 16}


@pytest.mark.slow
def test_the_profile_holds_exactly_the_steps_asked_for_and_changes_no_weight(digits):
    from afternoon.training.loop import STEPS_PER_EXECUTION

    profiled, plain = digits["root"] / "profiled", digits["root"] / "plain"
    train(digits, spec_for("cnn_dropout", **SPEC, profile_batches=[2, 3]), profiled)
    assert 1212 // SPEC["batch_size"] > STEPS_PER_EXECUTION  # several steps per call
    (trace,) = (profiled / "tensorboard").glob("plugins/profile/*/*.xplane.pb")
    assert trace.stat().st_size > 0
    assert profiled_steps(profiled / "tensorboard") == [(0, 1), (0, 2)]  # steps 2 and 3
    train(digits, spec_for("cnn_dropout", **SPEC), plain)
    assert not (plain / "tensorboard/plugins/profile").exists()
    pairs = zip(weights(profiled / "model.keras"), weights(plain / "model.keras"), strict=True)
    for w1, w2 in pairs:
        np.testing.assert_array_equal(w1, w2)


@pytest.mark.slow
def test_a_range_past_the_first_epoch_stops_the_job_at_its_start(digits):
    spec = spec_for("cnn_dropout", **SPEC, profile_batches=[70, 80])
    result = train(digits, spec, digits["root"] / "too-far", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"afternoon: error: {KEY}: [70, 80] is not within the 76 steps per epoch of cnn_dropout on "
        "digits (1 <= first <= last)"
    )


@pytest.mark.slow
def test_a_resumed_job_profiles_the_first_epoch_it_trains(digits):
    """Stopped without a profile, resumed with one: the checkpoint is used (a profile changes
    nothing of what is trained), and the profile is of the first epoch the rerun trains."""
    out = digits["root"] / "resumed"
    spec = spec_for("cnn_dropout", epochs=12, batch_size=16)
    process, _ = start_and_stop(train_command(digits, spec, out), out, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    train(digits, {**spec, "profile_batches": [1, 2]}, out)
    metrics = json.loads((out / "metrics.json").read_text())
    resumed = metrics["resumed_from_epoch"]
    assert 1 <= resumed < spec["epochs"]
    assert profiled_steps(out / "tensorboard") == [(resumed, 0), (resumed, 1)]
