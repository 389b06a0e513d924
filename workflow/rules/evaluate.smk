# Evaluation: test metrics, confusion matrix, per-class scores, misclassified examples, throughput;
# logged to the same MLflow run as the training job.


rule evaluate:
    input:
        model=rules.train.output.model,
        run=rules.train.output.run,
        npz=LAYOUT.npz("{dataset}"),
        card=LAYOUT.card("{dataset}"),
        tracking=rules.init_tracking.output.marker,
    output:
        **EVAL,
    log:
        LAYOUT.log("evaluate", "{dataset}", "{arch}"),
    conda:
        "../../envs/afternoon.yaml"
    threads: config["evaluation"]["threads"]
    params:
        misclassified=config["evaluation"]["misclassified"],
    shell:
        "python -m afternoon.cli evaluate --model {input.model} --run {input.run} --npz {input.npz}"
        " --card {input.card} --tracking {input.tracking} --metrics {output.metrics}"
        " --confusion-csv {output.confusion_csv} --confusion-png {output.confusion_png}"
        " --per-class {output.per_class} --misclassified-png {output.misclassified_png}"
        " --misclassified-csv {output.misclassified_csv}"
        " --misclassified {params.misclassified} --threads {threads} > {log} 2>&1"


# Each replicate i > 0 (config replicates) is evaluated as replicate 0 is, from its own folder.
use rule evaluate as evaluate_replicate with:
    input:
        model=rules.train_replicate.output.model,
        run=rules.train_replicate.output.run,
        npz=LAYOUT.npz("{dataset}"),
        card=LAYOUT.card("{dataset}"),
        tracking=rules.init_tracking.output.marker,
    output:
        **EVAL_REPLICATE,
    log:
        LAYOUT.log("evaluate", "{dataset}", replicate_name("{arch}", "{replicate}")),
