"""A private PostgreSQL cluster on 127.0.0.1 for tests (Debian's postgresql), like the Slurm lab:
initdb into a temporary folder, pg_ctl start on a free port (TCP on 127.0.0.1 only, its socket in
that folder), one database; stopped (pg_ctl stop) at the end of the session.

    with PostgresCluster(tmp_path) as pg:   # started
        pg.uri("mlflow")                     # postgresql://postgres@127.0.0.1:<port>/mlflow

As root (CI), initdb and the server run as the system user ``postgres`` (PostgreSQL refuses to run
as root). A machine without the binaries or the driver: helpers.components.missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from helpers.components import missing
from helpers.services import free_port


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL server binaries (/usr/lib/postgresql/<version>/bin), newest first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(found[0]).parent if found else None


def need_postgres() -> Path:
    """The PostgreSQL binaries and the psycopg2 driver MLflow's store uses."""
    __tracebackhide__ = True
    bin_dir = postgres_bin()
    if bin_dir is None:
        missing("no PostgreSQL server here (apt-get install postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError as err:
        missing(f"the PostgreSQL driver does not import ({err}): pip install psycopg2-binary")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing("as root, PostgreSQL runs as the user postgres: runuser is missing")
    return bin_dir


@contextlib.contextmanager
def private_dir():
    """A fresh folder under /tmp (pytest's own are root-only: the user postgres could not enter
    them), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="afternoon-postgres-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


class PostgresCluster:
    def __init__(self, root: Path):
        self.bin = need_postgres()
        self.root = Path(root)
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "postgres.log"

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stdout}{done.stderr}"
        return done

    def start(self) -> PostgresCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--encoding=UTF8", "--no-sync")  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-o", options, "-w", "start")  # fmt: skip
        return self

    def createdb(self, name: str) -> str:
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", name)  # fmt: skip
        return self.uri(name)

    def uri(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
