# Evaluation: test metrics, confusion matrix, per-class scores, misclassified examples, throughput;
# logged to the same MLflow run as the training job.


rule evaluate:
    input:
        model=rules.train.output.model,
        run=rules.train.output.run,
        npz=f"{RESULTS}/data/{{dataset}}.npz",
        card=f"{RESULTS}/data/{{dataset}}.card.json",
    output:
        metrics=f"{RESULTS}/eval/{{dataset}}/{{arch}}/metrics.json",
        confusion_csv=f"{RESULTS}/eval/{{dataset}}/{{arch}}/confusion_matrix.csv",
        confusion_png=f"{RESULTS}/eval/{{dataset}}/{{arch}}/confusion_matrix.png",
        per_class=f"{RESULTS}/eval/{{dataset}}/{{arch}}/per_class.csv",
        misclassified=f"{RESULTS}/eval/{{dataset}}/{{arch}}/misclassified.png",
    params:
        misclassified=config["evaluation"]["misclassified"],
    threads: 2
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}/{{arch}}.log",
    conda:
        "../../envs/afternoon.yaml"
    shell:
        "python -m afternoon.cli evaluate --model {input.model} --run {input.run} --npz {input.npz}"
        " --card {input.card} --out-dir $(dirname {output.metrics})"
        " --misclassified {params.misclassified} --threads {threads} > {log} 2>&1"
