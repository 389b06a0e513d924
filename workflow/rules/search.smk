# Hyperparameter searches (config/searches.yaml, selected by config searches.run): one tune job
# per search x dataset, Keras Tuner's chief and its workers; then the best trial is retrained with
# its full recipe and evaluated like any architecture of the zoo.


# The chief serves the oracle on 127.0.0.1 and starts `workers` local worker processes; on Slurm
# (the profile's resource search_launcher: srun) the job is one allocation of `workers` tasks:
# the chief runs in the job's batch step and starts the workers as one step, `srun -n WORKERS`
# (they find the chief in <state>/chief.json). A stopped job leaves its state folder (not an
# output): the next run resumes the search.
rule tune:
    input:
        npz=LAYOUT.npz("{dataset}"),
        card=LAYOUT.card("{dataset}"),
        tracking=rules.init_tracking.output.marker,
    output:
        **{name: path for name, path in LAYOUT.search_outputs("{search}", "{dataset}").items() if name != "tensorboard"},
        tensorboard=directory(LAYOUT.search_outputs("{search}", "{dataset}")["tensorboard"]),
    log:
        LAYOUT.log("tune", "{search}", "{dataset}"),
    conda:
        f"../../envs/{config['training']['conda_env']}.yaml"
    threads: tune_threads
    resources:
        # A search of several workers: one job of a task per worker (under Slurm; the chief,
        # idle and without a GPU, needs no task of its own); the chief starts them with the
        # launcher set before its command (params.launcher), or as local processes.
        mpi=tune_mpi,
        tasks=tune_tasks,
        cpus_per_task=tune_cpus_per_task,
    params:
        spec=tune_spec,
        workers=tune_workers,
        launcher=tune_launcher,
        state=LAYOUT.search_state_dir("{search}", "{dataset}"),
    shell:
        "{params.launcher} python -m afternoon.cli tune --spec {params.spec:q} --npz {input.npz}"
        " --card {input.card} --tracking {input.tracking} --state {params.state}"
        " --workers {params.workers} --threads {threads} --trials {output.trials}"
        " --summary {output.summary} --best {output.best} --best-spec {output.best_spec}"
        " --tensorboard {output.tensorboard} > {log} 2>&1"


# The best trial's full recipe (best_spec.json: the zoo entry best.yaml as a training spec),
# trained by the train stage into its own run folder and MLflow run.
rule train_search_best:
    input:
        spec=rules.tune.output.best_spec,
        npz=LAYOUT.npz("{dataset}"),
        card=LAYOUT.card("{dataset}"),
        tracking=rules.init_tracking.output.marker,
    output:
        **{
            name: path
            for name, path in LAYOUT.search_best_train("{search}", "{dataset}").items()
            if name not in ("tensorboard", "checkpoint")
        },
        tensorboard=directory(LAYOUT.search_best_train("{search}", "{dataset}")["tensorboard"]),
    log:
        LAYOUT.log("train_search_best", "{search}", "{dataset}"),
    conda:
        f"../../envs/{config['training']['conda_env']}.yaml"
    threads: config["training"]["threads"]
    params:
        checkpoint=LAYOUT.search_best_train("{search}", "{dataset}")["checkpoint"],
    shell:
        'python -m afternoon.cli train --spec "$(cat {input.spec})" --npz {input.npz} --card {input.card}'
        " --tracking {input.tracking} --model {output.model} --history {output.history}"
        " --metrics {output.metrics} --run {output.run} --tensorboard {output.tensorboard}"
        " --checkpoint {params.checkpoint} --threads {threads} --tag snakemake_rule=train_search_best"
        " --tag search={wildcards.search} > {log} 2>&1"


# Evaluated as every architecture is (rule evaluate), from its own run folder.
use rule evaluate as evaluate_search_best with:
    input:
        model=rules.train_search_best.output.model,
        run=rules.train_search_best.output.run,
        npz=LAYOUT.npz("{dataset}"),
        card=LAYOUT.card("{dataset}"),
        tracking=rules.init_tracking.output.marker,
    output:
        **LAYOUT.search_best_eval("{search}", "{dataset}"),
    log:
        LAYOUT.log("evaluate_search_best", "{search}", "{dataset}"),
