"""Shared helpers of the test suite; tests/conftest.py turns the common ones into fixtures.

    paths       REPO, SNAKEFILE, SHARED_DATA, MNIST_DIR
    env         clean_env(): os.environ for a subprocess, no MLFLOW_* of the caller's, venv on PATH
    runners     run_cli(*args), run_snakemake(workdir, *args), run(command), cli_command(*args)
    components  missing(reason) / require(ok, reason): skip, or fail under CI=true; need_root,
                need_horovod, need_mpirun, need_browser, need_mnist (../shared, else downloaded
                into data_cache(): fetch_mnist); marks needs_horovod, needs_mpirun, needs_browser
    services    free_port(), MlflowServer (a real `mlflow server`), mlflow_server(db, dir),
                wait_for, search_runs(url, experiment_id) (MLflow's REST API)
    study       the small shared study (write_study, ARCHS; the `small_study` fixture runs it)
    data        tiny synthetic raw datasets (IDX, CIFAR-10 tar.gz, manifests), real_mnist_files()
    httpserver  LoopbackServer: serves a directory on 127.0.0.1, with failures on chosen paths
    browser     headless Chromium (chromium(), screenshot())
    stage_args  the explicit output flags of the train and evaluate stages for a folder

Fixtures (tests/conftest.py): small_study, digits, clean_mlflow_env, and the component checks
horovod_installed, mpirun_installed, browser_installed (used through the needs_* marks).

Rules of the house: a test that cannot run without a real component (the Slurm lab, Chromium,
MPI/Horovod, root for mounts, the shared MNIST files) calls ``missing``/``require``/``need_*`` or
carries a ``needs_*`` mark, never ``pytest.skip`` or ``skipif`` (under CI=true it must fail, and
`make test` fails on any skip there); subprocesses go through ``runners`` (a clean environment,
a time limit); nothing decides what to test by reading the package's source.
"""
