"""Safe defaults: the MLflow UI on 127.0.0.1, no archive extraction outside its place, no pickle
from downloaded data, safe YAML, and no credential written anywhere by a real pipeline run."""

import ast
import gzip
import io
import os
import re
import secrets
import subprocess
import tarfile
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import runners
from helpers.data import CIFAR_DIR, make_cifar_archive, write_manifest
from helpers.paths import REPO
from helpers.runners import run_cli as cli  # cli(*args, cwd=): python -m afternoon.cli
from helpers.runners import snakemake_command
from helpers.stage_args import train_output_args
from helpers.study import write_study

PACKAGE = REPO / "workflow" / "afternoon"
LOOPBACK = "127.0.0.1"


def run(command: list[str], env: dict | None = None, cwd: Path = REPO):
    """``command`` in a clean environment plus ``env`` (helpers.runners.run)."""
    return runners.run(command, env=env, cwd=cwd)


def one_error_line(result, *needles: str) -> str:
    assert result.returncode != 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("afternoon: error:"), result.stderr[-3000:]
    assert sum(line.startswith("afternoon:") for line in lines) == 1
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[-1]
    return lines[-1]


# --- (a) The MLflow UI binds to the loopback address ----------------------------------------


def mlflow_commands(text: str) -> list[list[str]]:
    """Every `mlflow ui` / `mlflow server` command in ``text`` (Makefile recipes, README code
    blocks and inline code; comments dropped, inline code joined across line breaks)."""
    text = re.sub(r"(?m)[ \t]+#.*$", "", text)  # shell/Make comments (no '#' inside commands)
    spans = re.findall(r"`([^`]+)`", text)  # inline code, possibly across a line break
    candidates = [" ".join(span.split()) for span in spans] + text.splitlines()
    commands = []
    for candidate in candidates:
        for match in re.finditer(r"\bmlflow\s+(?:ui|server)\b[^`\n]*", candidate):
            commands.append(match.group(0).split())
    return commands


def host_of(command: list[str]) -> str | None:
    for i, word in enumerate(command):
        if word == "--host" and i + 1 < len(command):
            return command[i + 1]
        if word.startswith("--host="):
            return word.split("=", 1)[1]
    return None


def test_makefile_mlflow_ui_binds_loopback():
    commands = mlflow_commands((REPO / "Makefile").read_text())
    assert commands, "no mlflow ui/server command in the Makefile"
    for command in commands:
        assert host_of(command) == LOOPBACK, command


def test_readme_mlflow_commands_bind_loopback_or_use_basic_auth():
    readme = (REPO / "README.md").read_text()
    commands = mlflow_commands(readme)
    assert commands
    for command in commands:
        if host_of(command) != LOOPBACK:  # a network bind: only with MLflow's authentication
            assert "--app-name" in command and "basic-auth" in command, command
    assert any("basic-auth" in command for command in commands)  # the network bind is shown
    assert "make mlflow-ui" in readme and "mlflow-ui:" in (REPO / "Makefile").read_text()


def test_no_wildcard_bind_address_anywhere():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout
    offenders = []
    for name in files.split():
        path = REPO / name
        if path.suffix in {".png", ".jpg", ".gz", ".db"} or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if re.search(r"\b0\.0\.0\.0\b|--host[ =]+::", text):
            offenders.append(name)
    assert offenders == []


# --- (b) Archives: nothing is ever extracted, so nothing lands outside ----------------------


def _method_calls(tree: ast.AST, names: set[str]):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in names:
                yield node


def python_sources() -> list[Path]:
    roots = [PACKAGE, REPO / "bench", REPO / "docs", REPO / "scripts"]
    return [path for root in roots if root.is_dir() for path in root.rglob("*.py")]


def test_any_tar_extraction_uses_the_data_filter():
    for path in python_sources():
        tree = ast.parse(path.read_text(), str(path))
        for call in _method_calls(tree, {"extractall", "extract"}):
            filters = [kw.value for kw in call.keywords if kw.arg == "filter"]
            assert filters and ast.literal_eval(filters[0]) == "data", (
                f"{path}:{call.lineno}: tar extraction without filter='data'"
            )
    shell = [p for p in (REPO / "scripts").rglob("*") if p.is_file() and p.suffix != ".py"]
    for path in shell:
        assert not re.search(r"\btar\s+-?\w*x", path.read_text(errors="replace")), path


def _evil_tar(path: Path, outside: Path, wanted_as_link: bool) -> None:
    """A CIFAR-10 binary archive with path-traversal, absolute and symlink members; the real
    members are kept (``wanted_as_link``: data_batch_1.bin is a symlink to /etc/passwd)."""
    make_cifar_archive(path)
    with tarfile.open(path, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    evil = [
        ("../evil-traversal.txt", b"escaped"),
        (f"{CIFAR_DIR}/../../evil-nested.txt", b"escaped"),
        (str(outside / "evil-absolute.txt"), b"escaped"),
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("evil-link")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        tar.addfile(link)
        for name, data in evil + [("evil-link/through-link.txt", b"escaped")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for member, data in members:
            if wanted_as_link and member.name.endswith("data_batch_1.bin"):
                member = tarfile.TarInfo(member.name)
                member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(member)
            else:
                tar.addfile(member, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("wanted_as_link", [False, True], ids=["extra members", "member is link"])
def test_tar_members_never_write_outside(tmp_path, wanted_as_link):
    outside = Path("/tmp") / f"afternoon-outside-{uuid.uuid4().hex}"
    work, raw, out = tmp_path / "cwd", tmp_path / "raw", tmp_path / "data"
    for directory in (work, raw, out):
        directory.mkdir()
    archive = raw / "cifar-10-binary.tar.gz"
    _evil_tar(archive, outside, wanted_as_link)
    manifest = write_manifest(raw / "MANIFEST.json", "cifar10", {"archive": archive})
    before = _files(tmp_path)
    result = cli(
        "preprocess", "cifar10", "--manifest", str(manifest), "--npz", str(out / "c.npz"),
        "--card", str(out / "c.card.json"), cwd=work,
    )  # fmt: skip
    new = _files(tmp_path) - before
    if wanted_as_link:  # a symlink is not the member: refused, nothing read through it
        one_error_line(result, "missing member(s)", "data_batch_1.bin")
        assert new == set()
    else:  # the extra members are ignored
        assert result.returncode == 0, result.stderr[-2000:]
        assert new == {"data/c.npz", "data/c.card.json"}
    assert not outside.exists()
    assert not list(tmp_path.parent.glob("evil*")) and not list(REPO.glob("evil*"))


# --- (c) No pickle from downloaded data ------------------------------------------------------


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node


UNPICKLERS = re.compile(r"^\s*(import|from)\s+(c?pickle|dill|joblib|cloudpickle)\b", re.M)
UNSAFE_YAML = re.compile(
    r"yaml\.(unsafe_load|full_load|load_all)\b|(Full|Unsafe)Loader|=yaml\.Loader"
)


def test_package_never_unpickles():
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        assert not UNPICKLERS.search(source), path
        for call in _calls(path):
            func = ast.unparse(call.func)
            keywords = {kw.arg: kw.value for kw in call.keywords}
            if func in ("np.load", "numpy.load"):
                assert "allow_pickle" in keywords, f"{path}:{call.lineno}: allow_pickle=False"
                assert ast.literal_eval(keywords["allow_pickle"]) is False, f"{path}:{call.lineno}"
            if func.endswith("load_model") and "safe_mode" in keywords:
                assert ast.literal_eval(keywords["safe_mode"]) is True, f"{path}:{call.lineno}"


class _Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_object_array_is_refused_and_never_run(study, tmp_path):
    workdir = study["workdir"]
    data = workdir / "results/data"
    with np.load(data / "digits.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    marker = tmp_path / "payload-ran"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    np.savez(tmp_path / "evil.npz", **(arrays | {"x_train": evil}))
    result = cli(
        "train", "--spec", json_spec(), "--npz", str(tmp_path / "evil.npz"),
        "--card", str(data / "digits.card.json"),
        "--tracking", str(workdir / "results/mlflow/tracking.json"),
        *train_output_args(tmp_path / "run"),
    )  # fmt: skip
    one_error_line(result, "evil.npz", "'x_train'", "allow_pickle=False")
    assert not marker.exists()
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    # the payload is live: loading it with pickle allowed runs it (what load_npz never does)
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as npz:
        npz["x_train"]
    assert marker.exists()


def json_spec() -> str:
    import json

    from afternoon.config import job_spec, load_zoo

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    return json.dumps(job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", "fc64"))


# --- (d) YAML is read safely -------------------------------------------------------------------

PAYLOADS = {
    "object/apply": '!!python/object/apply:os.system ["touch {marker}"]',
    "object/new": '!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
    "object": '!!python/object:subprocess.Popen {{args: ["touch", "{marker}"]}}',
}


def _dry_run(workdir: Path, configfile: Path):
    return run(snakemake_command(workdir, "-n", "--configfile", str(configfile)))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_python_tag_in_the_zoo_is_refused_in_one_line(tmp_path, payload):
    marker = tmp_path / "payload-ran"
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(f"fc64: {PAYLOADS[payload].format(marker=marker)}\n")
    write_study(tmp_path)
    configfile = tmp_path / "override.yaml"
    configfile.write_text(yaml.safe_dump({"zoo": str(zoo), "architectures": ["fc64"]}))
    result = _dry_run(tmp_path, configfile)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"afternoon: {zoo}:1: invalid YAML"), lines
    assert "python/object" in lines[0]
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_python_tag_in_the_configfile_is_refused_and_never_run(tmp_path, payload):
    """Snakemake reads --configfile itself (yte, PyYAML's FullLoader): it refuses the tag without
    running it, in its own two-line message (no file name) before our check can run."""
    marker = tmp_path / "payload-ran"
    write_study(tmp_path)
    configfile = tmp_path / "override.yaml"
    configfile.write_text(f"seed: {PAYLOADS[payload].format(marker=marker)}\n")
    result = _dry_run(tmp_path, configfile)
    assert result.returncode == 1
    assert "Config file is not valid JSON or YAML" in result.stdout + result.stderr
    assert not marker.exists()


def test_package_reads_yaml_safely():
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        assert not UNSAFE_YAML.search(source), path
        for call in _calls(path):
            if ast.unparse(call.func) == "yaml.load":
                loader = {kw.arg: ast.unparse(kw.value) for kw in call.keywords}.get("Loader")
                assert loader == "_UniqueKeyLoader", f"{path}:{call.lineno}: yaml.load({loader})"
    from afternoon.config import _UniqueKeyLoader

    assert issubclass(_UniqueKeyLoader, yaml.SafeLoader)


# --- (e) No credentials written anywhere -------------------------------------------------------

SECRET_NAMES = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """digits, fc64, one epoch: the whole chain (download .. report) with tracking credentials
    in the environment, HOME and TMPDIR inside the test's directory so every write is seen."""
    root = tmp_path_factory.mktemp("secret-study")
    workdir = write_study(root / "work", archs=["fc64"], max_epochs=1)
    home, tmp = root / "home", root / "tmp"
    home.mkdir()
    tmp.mkdir()
    tokens = {name: secrets.token_hex(16) for name in SECRET_NAMES}  # 32 characters each
    env = tokens | {"HOME": str(home), "TMPDIR": str(tmp), "MLFLOW_TRACKING_USERNAME": "alice"}
    result = run(snakemake_command(workdir, "--cores", "2"), env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"root": root, "workdir": workdir, "tokens": tokens, "result": result}


def contents(path: Path):
    """(name, bytes) of a file and, for a zip (.keras, .npz) or gzip file, of what it holds."""
    data = path.read_bytes()
    yield str(path), data
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield f"{path}!{member}", archive.read(member)
    elif data[:2] == b"\x1f\x8b":
        yield f"{path}!gunzip", gzip.decompress(data)


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found += [name for name, data in contents(path) if any(n in data for n in needles)]
    return found


def test_secret_scanner_looks_inside_archives(tmp_path):
    token = secrets.token_hex(16).encode()
    with zipfile.ZipFile(tmp_path / "m.keras", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b"x" * 100 + token)
    (tmp_path / "log.gz").write_bytes(gzip.compress(b"y" * 100 + token))
    (tmp_path / "plain.txt").write_bytes(b"nothing")
    assert token not in (tmp_path / "m.keras").read_bytes()  # compressed: only seen inside
    found = files_holding(tmp_path, [token])
    assert found == [f"{tmp_path}/log.gz!gunzip", f"{tmp_path}/m.keras!config.json"]


def test_no_credential_is_written_anywhere(study):
    root, workdir = study["root"], study["workdir"]
    results = workdir / "results"
    written = {p.relative_to(results).parts[0] for p in results.rglob("*") if p.is_file()}
    assert {"data", "mlflow", "runs", "eval", "report", "logs"} <= written
    assert (results / "mlflow/mlflow.db").stat().st_size > 0
    assert list((workdir / ".snakemake/log").glob("*.snakemake.log"))
    needles = [token.encode() for token in study["tokens"].values()]
    assert files_holding(root, needles) == []
    artifacts = mlflow_artifact_root(workdir)
    assert list(artifacts.rglob("model.keras"))  # the run's artifacts are there to be read
    if not artifacts.is_relative_to(root):  # an artifact store outside the study is walked too
        assert files_holding(artifacts, needles) == []
    output = study["result"].stdout + study["result"].stderr
    assert not any(token in output for token in study["tokens"].values())


def mlflow_artifact_root(workdir: Path) -> Path:
    """Where the study's MLflow experiment stores artifacts (a local path)."""
    import json

    import mlflow

    marker = json.loads((workdir / "results/mlflow/tracking.json").read_text())
    client = mlflow.tracking.MlflowClient(marker["tracking_uri"])
    location = client.get_experiment(marker["experiment_id"]).artifact_location
    path = Path(location.removeprefix("file://"))
    assert path.is_dir(), location
    return path
