# afternoon: the "Deep Learning in an Afternoon" architecture study as a reproducible pipeline.
#   snakemake --cores all                                   embedded default (digits, offline)
#   snakemake --cores all --configfile config/workshop.yaml full study (MNIST, Fashion-MNIST, CIFAR-10)
#   snakemake --profile slurm --configfile config/workshop.yaml   on a Slurm cluster (make slurm-profile once)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# Validation, the zoo, the results layout and the rules' input functions (no rules).
include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset=dataset_pattern(),
    arch=ARCHITECTURE_PATTERN,
    replicate="[1-9][0-9]*",  # replicate 0 is rule train's own path (layout.replicate_name)
    search=ARCHITECTURE_PATTERN,


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
