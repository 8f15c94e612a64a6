# Self-supervised training on the run's own tiles (`tessera train`, Barlow Twins). Not part of `all`:
#
#   snakemake --profile profiles/local train --configfile my-run.yaml
#
# Its input is the `tiles` export of every year, which it makes if keep_tiles is off. Settings:
# config/train.yaml beside the Snakefile, or the file named by TESSERA_TRAIN_CONFIG; built-in
# defaults if neither exists. A killed or failed job resumes from {results_dir}/train/checkpoint.pt
# when rerun, and so does one that max_seconds stopped: it fails
# with TrainingStoppedError (--require-complete) rather than pass a half-trained encoder.pt on as done.
# After the tiles or the learned settings changed, that checkpoint (with its encoder.pt and train.json)
# is moved to <name>.stale-<time> and training starts afresh (--restart-if-changed). Then set
# model.checkpoint to {results_dir}/train/encoder.pt and run the workflow again to embed with the
# trained model.
TRAIN_SETTINGS = train_settings_file(Path(workflow.basedir))


rule train:
    input:
        # every chunk's tile directories of every year: training reads them all
        tiles=tile_exports(),
        settings=TRAIN_SETTINGS,
    output:
        encoder=R.train("encoder.pt"),
    log:
        R.log("train", "train"),
    params:
        data=lambda wc: R.root,
        years=" ".join(YEARS),
        settings=lambda wc, input: f"--train-config {input.settings}" if input.settings else "",
        out_dir=lambda wc: R.train_dir(),
    threads: 4
    resources:
        gpu=INFER_GPUS,
    conda:
        "../envs/tessera.yaml"
    shell:
        "TESSERA_THREADS={threads} tessera train --data {params.data} --years {params.years} {params.settings}"
        " --out-dir {params.out_dir} --restart-if-changed --require-complete &> {log}"
