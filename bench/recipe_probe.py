"""Try a change to one architecture's fast recipe on real Fashion-MNIST: its test accuracy.

    .venv/bin/python bench/recipe_probe.py NAME ARCH 'YAML' [--seed 42] [--threads 1]
        [--recipes fast|seed]

YAML: a mapping of changes to ARCH's `recipes.fast` in a copy of config/zoo.yaml; a key
`fm.<field>` changes the set's `datasets.fashion_mnist.<field>` instead, e.g.

    bench/recipe_probe.py d66_16 fm_dropout66_40 '{epochs: 16, fm.augmentation: {}}'

One `snakemake` study of ARCH alone (`training.recipes: fast`, the data as bench/fast_vs_seed.py
finds it) in /tmp/recipe-probe/NAME, then one line: the change, the seed, the test accuracy and
the training job's wall time. For tuning: with --threads 1 two probes share 2 cores, so their
times are not benchmark figures (bench/fast_vs_seed.py measures the recipes that result).
--recipes seed trains ARCH's seed recipe in full instead (YAML then '{}'): what the slide's own
recipe reaches on this pipeline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fast_vs_seed import REPO, job, run_study  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name")
    parser.add_argument("arch")
    parser.add_argument("changes", type=yaml.safe_load)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipes", choices=["fast", "seed"], default="fast")
    args = parser.parse_args()
    if args.recipes == "seed" and args.changes:
        parser.error("--recipes seed trains the seed recipe as it is: give '{}' as YAML")
    workdir = Path("/tmp/recipe-probe") / args.name
    workdir.mkdir(parents=True, exist_ok=True)
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    fast = zoo[args.arch]["recipes"]["fast"]
    for key, value in args.changes.items():
        if key.startswith("fm."):
            fast.setdefault("datasets", {}).setdefault("fashion_mnist", {})[key[3:]] = value
        else:
            fast[key] = value
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    training = {"recipes": args.recipes, "threads": args.threads}
    run_study(workdir, "fashion_mnist", [args.arch], training, seed=args.seed,
              zoo=workdir / "zoo.yaml", cores=args.threads)  # fmt: skip
    result = job(workdir / "results", "fashion_mnist", args.arch)
    wall = result["metrics"]["job_wall_s"]
    print(f"{args.name} {args.arch} {args.changes} seed {args.seed}: test "
          f"{result['accuracy']:.2f} %, train job {wall:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
