# Training: one job per dataset x architecture, each tracked as one MLflow run. An architecture
# with `distributed: {backend: multi_worker | horovod, ranks: N}` trains data-parallel: the same
# rule and outputs, its command started as N processes by the worker launcher (multi_worker) or
# the MPI launcher (horovod): this machine's, the Slurm profile's srun, or the config's
# training.worker_launcher / mpi_launcher; only worker 0 writes files and the MLflow run. Backend
# mirrored is one process over the node's GPUs.


# The tracking store (a sqlite DB by default) is created once, before any training job: creating
# it takes seconds and races when many jobs do it at once. Jobs depend on the marker file, not on
# the DB, whose mtime changes with every write.
rule init_tracking:
    output:
        marker=LAYOUT.tracking_marker(),
    log:
        LAYOUT.log("init_tracking"),
    conda:
        "../../envs/afternoon.yaml"
    params:
        uri=config["tracking"]["uri"] or "",
        experiment=config["study"],
        default_db=LAYOUT.tracking_db(),
    shell:
        "python -m afternoon.cli init-tracking --uri '{params.uri}' --experiment {params.experiment}"
        " --default-db {params.default_db} --marker {output.marker} > {log} 2>&1"


rule train:
    input:
        npz=LAYOUT.npz("{dataset}"),
        card=LAYOUT.card("{dataset}"),
        tracking=rules.init_tracking.output.marker,
    output:
        **{name: path for name, path in TRAIN.items() if name != "tensorboard"},
        tensorboard=directory(TRAIN["tensorboard"]),
    log:
        LAYOUT.log("train", "{dataset}", "{arch}"),
    conda:
        # the CPU or the GPU (CUDA) build of TensorFlow: config training.conda_env
        f"../../envs/{config['training']['conda_env']}.yaml"
    threads: config["training"]["threads"]
    resources:
        # A distributed architecture (zoo: distributed.ranks > 1) runs as one job of that many
        # tasks (processes), each with threads // ranks cores (on Slurm optionally placed by
        # training.nodes / tasks_per_node); a one-process job leaves mpi and cpus_per_task unset.
        mpi=train_mpi,
        tasks=train_tasks,
        nodes=lambda wildcards: train_placement(wildcards, "nodes"),
        tasks_per_node=lambda wildcards: train_placement(wildcards, "tasks_per_node"),
        cpus_per_task=train_cpus_per_rank,
    params:
        spec=train_spec,
        launcher=train_launcher,
        checkpoint=LAYOUT.checkpoint_dir("{dataset}", "{arch}"),
    shell:
        "{params.launcher} python -m afternoon.cli train --spec {params.spec:q} --npz {input.npz} --card {input.card}"
        " --tracking {input.tracking} --model {output.model} --history {output.history}"
        " --metrics {output.metrics} --run {output.run} --tensorboard {output.tensorboard}"
        " --checkpoint {params.checkpoint}"
        " --threads {threads} --tag snakemake_rule=train"
        " --tag snakemake_wildcards=dataset={wildcards.dataset},arch={wildcards.arch} > {log} 2>&1"


# Replicates (config replicates: N): replicate i > 0 of a dataset x architecture is the same job
# with seed + i (train_spec), its own MLflow run (tag afternoon.replicate, run name
# <arch>@<dataset>#r<i>) and folder (runs/<dataset>/<arch>@r<i>/). Replicate 0 is rule train:
# its paths, spec and command are those of a study without replicates.
use rule train as train_replicate with:
    output:
        **{name: path for name, path in TRAIN_REPLICATE.items() if name != "tensorboard"},
        tensorboard=directory(TRAIN_REPLICATE["tensorboard"]),
    log:
        LAYOUT.log("train", "{dataset}", replicate_name("{arch}", "{replicate}")),
    params:
        checkpoint=LAYOUT.checkpoint_dir("{dataset}", "{arch}", "{replicate}"),
