# tessera-pipeline: a region of interest and a year in, a 10 m grid of TESSERA embeddings out.
#
#   snakemake --profile profiles/local --configfile config/config.yaml
#   snakemake --profile profiles/slurm --configfile config/config.yaml
#
# All logic lives in the `tessera` package; every rule calls one `tessera` subcommand.
from snakemake.utils import min_version

min_version("9.0")


include: "rules/common.smk"
include: "rules/plan.smk"
include: "rules/search.smk"
include: "rules/read.smk"
include: "rules/infer.smk"
include: "rules/products.smk"
include: "rules/export.smk"
include: "rules/train.smk"


onsuccess:
    report_skipped_scenes()


rule all:
    input:
        all_targets(),
    default_target: True
