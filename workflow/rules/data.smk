# Data stages: download (verified against published sha256) and preprocess (one npz + card).

# Downloads run where Snakemake runs (the login node on a cluster): compute nodes often have no
# internet. Without internet anywhere, point data.mirror at a copy.
localrules:
    download,


rule download:
    output:
        manifest=f"{RESULTS}/raw/{{dataset}}/MANIFEST.json",
    params:
        mirror=mirror_option,
        retries=config["data"]["retries"],
    log:
        f"{RESULTS}/logs/download/{{dataset}}.log",
    conda:
        "../../envs/afternoon.yaml"
    shell:
        "python -m afternoon.cli download {wildcards.dataset}"
        " --dest $(dirname {output.manifest}) --manifest {output.manifest}"
        " --retries {params.retries} {params.mirror} > {log} 2>&1"


rule preprocess:
    input:
        manifest=raw_manifest,
    output:
        npz=f"{RESULTS}/data/{{dataset}}.npz",
        card=f"{RESULTS}/data/{{dataset}}.card.json",
    params:
        validation_fraction=config["data"]["validation_fraction"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/preprocess/{{dataset}}.log",
    conda:
        "../../envs/afternoon.yaml"
    shell:
        "python -m afternoon.cli preprocess {wildcards.dataset}"
        " --manifest '{input.manifest}' --npz {output.npz} --card {output.card}"
        " --validation-fraction {params.validation_fraction} --seed {params.seed} > {log} 2>&1"
