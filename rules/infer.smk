rule infer:
    input:
        [f"{RES}/{{year}}/tiles/{{chunk}}/{{tile}}/{name}" for name in TILE_FILES],
    output:
        **embedding_files("{year}", "{chunk}", "{tile}"),
    log:
        f"{RES}/logs/infer/{{year}}/{{chunk}}/{{tile}}.log",
    params:
        config=CONFIG_JSON,
        tile_dir=tile_dir,
    threads: 4
    resources:
        gpu=INFER_GPUS,
    conda:
        "../envs/tessera.yaml"
    shell:
        "TESSERA_THREADS={threads} tessera infer --config {params.config} --year {wildcards.year}"
        " --tile-dir {params.tile_dir} --out {output.embedding} &> {log}"
