rule tile:
    input:
        s2=multiext(f"{RES}/{{year}}/stack/{{chunk}}/s2/", "bands.npy", "masks.npy", "doys.npy"),
        asc=multiext(f"{RES}/{{year}}/stack/{{chunk}}/s1-ascending/sar_ascending", ".npy", "_doy.npy"),
        desc=multiext(f"{RES}/{{year}}/stack/{{chunk}}/s1-descending/sar_descending", ".npy", "_doy.npy"),
    output:
        [maybe_temp(f"{RES}/{{year}}/tiles/{{chunk}}/{{tile}}/{name}") for name in TILE_FILES],
    log:
        f"{RES}/logs/tile/{{year}}/{{chunk}}/{{tile}}.log",
    params:
        config=CONFIG_JSON,
        s2_dir=lambda wc, input: Path(input.s2[0]).parent,
        asc_dir=lambda wc, input: Path(input.asc[0]).parent,
        desc_dir=lambda wc, input: Path(input.desc[0]).parent,
        out_dir=tile_dir,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera tile --config {params.config} --chunk {wildcards.chunk} --tile {wildcards.tile}"
        " --s2-dir {params.s2_dir} --s1-ascending-dir {params.asc_dir} --s1-descending-dir {params.desc_dir}"
        " --out-dir {params.out_dir} &> {log}"
