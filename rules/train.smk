# Self-supervised training on the run's own tiles (`tessera train`, Barlow Twins). Not part of `all`:
#
#   snakemake --profile profiles/local --configfile my-run.yaml train
#
# Needs the tiles kept (keep_tiles: true). Settings: config/train.yaml beside the Snakefile, or the file
# named by TESSERA_TRAIN_CONFIG; built-in defaults if neither exists. A killed or failed job resumes
# from {results_dir}/train/checkpoint.pt when rerun. Then set model.checkpoint to
# {results_dir}/train/encoder.pt and run the workflow again to embed with the trained model.
import os

TRAIN_CONFIG = os.environ.get("TESSERA_TRAIN_CONFIG", str(Path(workflow.basedir) / "config" / "train.yaml"))
TRAIN_SETTINGS = [TRAIN_CONFIG] if Path(TRAIN_CONFIG).is_file() else []


rule train:
    input:
        # every tile file of every year: training reads them all
        tiles=[
            f"{RES}/{year}/tiles/{cid}/{tile}/{name}"
            for year in YEARS
            for cid, tiles in TILES.items()
            for tile in tiles
            for name in TILE_FILES
        ],
        settings=TRAIN_SETTINGS,
    output:
        encoder=f"{RES}/train/encoder.pt",
    log:
        f"{RES}/logs/train.log",
    params:
        data=lambda wc, output: Path(output.encoder).parent.parent,
        years=" ".join(YEARS),
        settings=lambda wc, input: f"--train-config {input.settings}" if input.settings else "",
        out_dir=lambda wc, output: Path(output.encoder).parent,
    threads: workflow.cores
    resources:
        gpu=INFER_GPUS,
    conda:
        "../envs/tessera.yaml"
    shell:
        "TESSERA_THREADS={threads} tessera train --data {params.data} --years {params.years} {params.settings}"
        " --out-dir {params.out_dir} &> {log}"
