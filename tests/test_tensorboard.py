"""`make tensorboard`: TensorBoard over every run of a study, on 127.0.0.1 only, with the weight
histograms training writes (histogram_freq=1, as the seeds' callback). Started as the Makefile
starts it, on the small shared study (digits, fc64 + cnn1, 2 epochs)."""

import contextlib
import socket
import urllib.parse
import urllib.request

import pytest

from helpers.services import get_json, make_tensorboard

pytestmark = pytest.mark.slow


def listening_addresses(port: int) -> set[str]:
    """The local addresses (IPv4 and IPv6) of the sockets listening on ``port`` (/proc/net)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in handle.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    if width == 8:
                        found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                    else:  # four little-endian 32-bit words
                        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                        found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


@pytest.fixture(scope="module")
def tensorboard(small_study, tmp_path_factory):
    log = tmp_path_factory.mktemp("tensorboard") / "tensorboard.log"
    runs = small_study / "results/runs"
    with make_tensorboard(log, f"TENSORBOARD_LOGDIR={runs}") as base:
        yield {"base": base, "port": int(base.rsplit(":", 1)[1]), "log": log}


def test_every_run_of_the_study_is_listed(tensorboard):
    runs = get_json(f"{tensorboard['base']}/data/runs")
    for arch in ("fc64", "cnn1"):
        assert f"digits/{arch}/tensorboard/train" in runs
        assert f"digits/{arch}/tensorboard/validation" in runs


def test_weight_histograms_are_on(tensorboard):
    tags = get_json(f"{tensorboard['base']}/data/plugin/histograms/tags")
    for arch in ("fc64", "cnn1"):
        run = tags[f"digits/{arch}/tensorboard/train"]
        kernels = [tag for tag in run if "kernel" in tag]
        assert kernels, f"{arch}: no weight histograms ({sorted(run)})"
        query = urllib.parse.urlencode(
            {"run": f"digits/{arch}/tensorboard/train", "tag": kernels[0]}
        )
        points = get_json(f"{tensorboard['base']}/data/plugin/histograms/histograms?{query}")
        assert len(points) == 2  # one histogram per epoch


def test_listens_on_loopback_only(tensorboard):
    assert listening_addresses(tensorboard["port"]) == {"127.0.0.1"}
