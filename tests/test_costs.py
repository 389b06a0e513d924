"""afternoon.report.costs: the device a job reports, its cost, and Slurm's accounting as sacct
prints
it (the Slurm lab test, tests/test_slurm.py, checks the same against a real cluster)."""

import os

import pytest

from afternoon.report import costs

# `sacct -X -n -P -o JobIDRaw,State,ElapsedRaw,AllocTRES` as Slurm 22.05 prints it
SACCT = """\
41|COMPLETED|37|billing=2,cpu=2,gres/gpu=1,mem=1000M,node=1
42|RUNNING|12|billing=2,cpu=2,mem=1000M,node=1
43|CANCELLED by 0|5|billing=4,cpu=4,mem=2G,node=1
"""


def test_parse_sacct_elapsed_times_allocated_tres():
    assert costs.parse_sacct(SACCT, "41") == {
        "slurm_elapsed_s": 37.0,
        "cost_slurm_cpu_s": 74.0,
        "cost_slurm_gpu_s": 37.0,
    }
    # a cancelled job ended too: its accounting is final; no GPU allocated, no GPU cost
    assert costs.parse_sacct(SACCT, "43") == {"slurm_elapsed_s": 5.0, "cost_slurm_cpu_s": 20.0}


def test_parse_sacct_a_running_or_unknown_job_has_no_cost_yet():
    assert costs.parse_sacct(SACCT, "42") is None
    assert costs.parse_sacct(SACCT, "4") is None  # not a prefix match


def test_slurm_cost_without_sacct_is_empty_with_a_warning(caplog):
    assert costs.slurm_cost("41", sacct="/nonexistent/sacct", attempts=1) == {}
    assert "slurm job 41: no accounting" in caplog.text


def test_cpu_device_and_core_seconds():
    device = costs.device_of(2, gpus=[])
    assert device["kind"] == "cpu" and device["units"] == 2
    assert device["name"] == f"{costs.cpu_model()} (2 of {os.cpu_count()} cores)"
    assert costs.run_cost(device, 10.5) == {"job_wall_s": 10.5, "cost_core_s": 21.0}


def test_gpu_device_and_gpu_seconds():
    device = costs.device_of(8, gpus=["NVIDIA H200"])
    assert device == {"kind": "gpu", "name": "1x NVIDIA H200", "units": 1}
    assert costs.run_cost(device, 3.0) == {"job_wall_s": 3.0, "cost_gpu_s": 3.0}
    horovod = costs.device_of(8, ranks=2, gpus=["NVIDIA H200", "NVIDIA H200"])
    assert horovod["units"] == 2 and horovod["name"] == "2x NVIDIA H200"


@pytest.mark.parametrize(
    "metrics, expected",
    [
        ({"cost_core_s": 5.0, "cost_slurm_cpu_s": 8.0}, (8.0, "core·s (Slurm)")),
        (
            {"cost_core_s": 5.0, "cost_slurm_cpu_s": 8.0, "cost_slurm_gpu_s": 4.0},
            (4.0, "GPU·s (Slurm)"),
        ),
        ({"cost_gpu_s": 3.0}, (3.0, "GPU·s")),
        ({"cost_core_s": 5.0}, (5.0, "core·s")),
        ({}, None),
    ],
)
def test_the_report_cost_prefers_slurm_then_gpu(metrics, expected):
    assert costs.cost_of(metrics) == expected
