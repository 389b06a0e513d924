"""A Hyperband search on digits with 2 local worker processes, through Snakemake: the trials
Hyperband's bracket arithmetic predicts, continuations resumed from their parents' checkpoints,
one MLflow parent run with a child per trial, the best trial as a zoo entry retrained, evaluated
and reported; editing reruns exactly what it should."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest
import yaml

from helpers.runners import run_snakemake
from helpers.search import TINY as SEARCH  # Hyperband, max_epochs 3, factor 3, 2 workers
from helpers.search import search_dir, search_runs, summary

# search_study (tests/conftest.py): the study with digits_tiny finished.


def trials_of(workdir) -> pd.DataFrame:
    path = search_dir(workdir, SEARCH) / "trials.csv"
    return pd.read_csv(path, dtype={"trial_id": str, "parent_trial": str})


def test_hyperband_runs_the_trials_its_bracket_arithmetic_predicts(search_study):
    # max_epochs 3, factor 3: 2 brackets. Bracket 1: 3 trials of 1 epoch, then the best of them
    # continued to 3 epochs; bracket 0: 2 trials of 3 epochs. 6 trials, 3 + 2 + 6 = 11 epochs.
    trials = trials_of(search_study)
    assert len(trials) == 6 and set(trials["status"]) == {"COMPLETED"}
    first = trials[(trials["bracket"] == 1) & (trials["round"] == 0)]
    assert len(first) == 3 and set(first["epochs"]) == {1}
    (continued,) = trials[trials["round"] == 1].itertuples()
    assert (continued.bracket, continued.initial_epoch, continued.epochs) == (1, 1, 3)
    assert continued.epochs_trained == 2
    assert continued.parent_trial == first.sort_values("objective").iloc[-1]["trial_id"]
    last = trials[(trials["bracket"] == 0)]
    assert len(last) == 2 and set(last["epochs"]) == {3} and set(last["initial_epoch"]) == {0}
    assert trials["epochs_trained"].sum() == 11
    done = summary(search_study, SEARCH)
    assert done["trials"] == done["predicted_trials"] == 6
    assert done["best_value"] == trials["objective"].max()
    # Both workers ran trials.
    records = [
        yaml.safe_load(p.read_text())
        for p in (search_dir(search_study, SEARCH) / "state/trials").glob("*/trial.json")
    ]
    assert {r["tuner_id"] for r in records} == {"tuner0", "tuner1"}


def test_a_continuation_starts_from_its_parents_checkpoint(search_study):
    trials = trials_of(search_study)
    (continued,) = trials[trials["round"] == 1].itertuples()
    client, _, children = search_runs(search_study, SEARCH)
    by_trial = {run.data.tags["afternoon.trial_id"]: run for run in children}
    steps = [
        m.step
        for m in client.get_metric_history(by_trial[continued.trial_id].info.run_id, "val_accuracy")
    ]
    assert sorted(steps) == [2, 3]  # epoch 1 came from the parent trial, not retrained
    parent_steps = [
        m.step
        for m in client.get_metric_history(
            by_trial[continued.parent_trial].info.run_id, "val_accuracy"
        )
    ]
    assert parent_steps == [1]
    log = (search_study / f"results/logs/tune/{SEARCH}/digits.log").read_text()
    assert re.search(rf"trials/{continued.trial_id}/checkpoint from the checkpoint of epoch 1", log)


def test_mlflow_groups_the_trials_under_the_search_run(search_study):
    client, parent, children = search_runs(search_study, SEARCH)
    done = summary(search_study, SEARCH)
    assert parent.info.run_id == done["parent_run_id"] and parent.info.status == "FINISHED"
    assert parent.data.tags["afternoon.run_kind"] == "search"
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(done["best_value"])
    assert len(children) == 6
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["afternoon.trial_status"] == "COMPLETED"
        assert {
            "optimizer.learning_rate",
            "layers.3.dense.units",
            "layers.0.conv2d.padding",
        } <= set(run.data.params)
        assert len(client.get_metric_history(run.info.run_id, "loss")) >= 1  # per epoch
    best = [run for run in children if run.data.tags.get("afternoon.best_trial") == "true"]
    assert [run.data.tags["afternoon.trial_id"] for run in best] == [done["best_trial"]]
    assert parent.data.tags["afternoon.best_trial"] == done["best_trial"]


def test_the_best_trial_is_a_zoo_entry_retrained_evaluated_and_reported(search_study):
    from afternoon.zoo import validate_architecture

    done = summary(search_study, SEARCH)
    folder = search_dir(search_study, SEARCH)
    entries = yaml.safe_load((folder / "best.yaml").read_text())
    assert list(entries) == [f"{SEARCH}-best"]
    entry = entries[f"{SEARCH}-best"]
    validate_architecture(f"{SEARCH}-best", entry)  # complete: it would load in a zoo as is
    values = done["best_values"]
    assert entry["optimizer"]["learning_rate"] == values["optimizer.learning_rate"]
    assert entry["layers"][3]["dense"]["units"] == values["layers[3].dense.units"]
    assert entry["layers"][0]["conv2d"]["padding"] == values["layers[0].conv2d.padding"]
    assert entry["epochs"] == values["tuner/epochs"] == 3
    metrics = yaml.safe_load((folder / "best/metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["architecture"] == f"{SEARCH}-best"
    evaluation = yaml.safe_load((folder / "best-eval/metrics.json").read_text())
    html = (search_study / "results/report/index.html").read_text()
    row = html[html.index(f'data-arch="{SEARCH}-best"') :]
    assert f"{100 * evaluation['test_accuracy']:.2f}" in row[:400]
    assert 'id="searches"' in html and "Hyperband brackets" in html


def dry_run_jobs(workdir) -> set[str]:
    """The rules `snakemake -n` would run now."""
    result = run_snakemake(workdir, "-n", "--cores", "2", "--quiet", "rules")
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", result.stdout, re.MULTILINE)} - {
        "total"
    }


@pytest.fixture
def study_copy(search_study, tmp_path):
    """The finished search study, copied (mtimes and .snakemake kept) for edits."""
    return shutil.copytree(search_study, tmp_path / "study", symlinks=True)


def test_editing_the_search_reruns_it_and_the_zoo_only_what_uses_it(study_copy):
    assert dry_run_jobs(study_copy) == set()
    searches_path, zoo_path = study_copy / "config/searches.yaml", study_copy / "config/zoo.yaml"
    searches, zoo = searches_path.read_text(), zoo_path.read_text()
    edited = yaml.safe_load(searches)
    edited[SEARCH]["space"]["layers[3].dense.units"]["int"] = [16, 96]
    searches_path.write_text(yaml.safe_dump(edited))
    assert dry_run_jobs(study_copy) == {
        "tune",
        "train_search_best",
        "evaluate_search_best",
        "report",
        "all",
    }
    searches_path.write_text(searches)
    other = yaml.safe_load(zoo)
    other["fc64"]["layers"][0]["dense"]["units"] = (
        32  # the study trains fc64; the search's base is cnn1
    )
    zoo_path.write_text(yaml.safe_dump(other))
    assert "tune" not in dry_run_jobs(study_copy)
    base = yaml.safe_load(zoo)
    base["cnn1"]["batch_size"] = 16
    zoo_path.write_text(yaml.safe_dump(base))
    assert "tune" in dry_run_jobs(study_copy) and "train" not in dry_run_jobs(study_copy)


def test_the_hparams_dashboard_holds_every_trial_as_tensorboard_reads_it(search_study):
    """The search's tensorboard/ folder, read by TensorBoard's own event multiplexer and the
    HParams plugin's parsers: the experiment (the space's three hyperparameters with their
    domains, the objective) and one session per trial with its values, objective and status."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import api_pb2, metadata

    folder = search_dir(search_study, SEARCH) / "tensorboard"
    events = EventMultiplexer()
    events.AddRunsFromDirectory(str(folder))
    events.Reload()
    content = events.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content["."][metadata.EXPERIMENT_TAG])
    infos = {info.name: info for info in experiment.hparam_infos}
    assert set(infos) == {"optimizer.learning_rate", "layers[3].dense.units",
                          "layers[0].conv2d.padding"}  # fmt: skip
    rate = infos["optimizer.learning_rate"].domain_interval
    assert (rate.min_value, rate.max_value) == (0.003, 0.3)
    padding = infos["layers[0].conv2d.padding"]
    assert [v.string_value for v in padding.domain_discrete.values] == ["valid", "same"]
    assert [m.name.tag for m in experiment.metric_infos] == ["val_accuracy"]
    trials = trials_of(search_study).set_index("trial_id")
    sessions = {run: tags for run, tags in content.items() if run != "."}
    assert set(sessions) == {f"trial-{trial_id}" for trial_id in trials.index}
    for run, tags in sessions.items():
        trial = trials.loc[run.removeprefix("trial-")]
        start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        assert start.hparams["layers[3].dense.units"].number_value == trial["layers[3].dense.units"]
        assert (
            start.hparams["layers[0].conv2d.padding"].string_value
            == trial["layers[0].conv2d.padding"]
        )
        end = metadata.parse_session_end_info_plugin_data(tags[metadata.SESSION_END_INFO_TAG])
        assert end.status == api_pb2.STATUS_SUCCESS
        (scalar,) = events.Tensors(run, "val_accuracy")
        assert scalar.step == trial["epochs"]
        assert float(scalar.tensor_proto.float_val[0]) == pytest.approx(trial["objective"])
