# afternoon: the "Deep Learning in an Afternoon" architecture study as a reproducible pipeline.
#   snakemake --cores all                                   embedded default (digits, offline)
#   snakemake --cores all --configfile config/workshop.yaml full study (MNIST, Fashion-MNIST, CIFAR-10)
#   snakemake --profile profiles/slurm --configfile config/workshop.yaml   on a Slurm cluster
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


wildcard_constraints:
    dataset="digits|mnist|fashion_mnist|cifar10",
    arch="[A-Za-z0-9_.-]+",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
