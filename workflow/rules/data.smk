# Data stages: download (verified against published sha256) and preprocess (one npz + card).


# Downloads run where Snakemake runs (the login node on a cluster): compute nodes often have no
# internet. Without internet anywhere, point data.mirror at a copy.
localrules:
    download,


rule download:
    output:
        manifest=LAYOUT.raw_manifest("{dataset}"),
    log:
        LAYOUT.log("download", "{dataset}"),
    conda:
        "../../envs/afternoon.yaml"
    params:
        mirror=mirror_option,
        retries=config["data"]["retries"],
    shell:
        "python -m afternoon.cli download {wildcards.dataset} --manifest {output.manifest}"
        " --retries {params.retries} {params.mirror} > {log} 2>&1"


rule preprocess:
    input:
        manifest=raw_manifest,
    output:
        npz=LAYOUT.npz("{dataset}"),
        card=LAYOUT.card("{dataset}"),
    log:
        LAYOUT.log("preprocess", "{dataset}"),
    conda:
        "../../envs/afternoon.yaml"
    params:
        validation_fraction=config["data"]["validation_fraction"],
        seed=config["seed"],
    shell:
        "python -m afternoon.cli preprocess {wildcards.dataset}"
        " --manifest '{input.manifest}' --npz {output.npz} --card {output.card}"
        " --validation-fraction {params.validation_fraction} --seed {params.seed} > {log} 2>&1"
