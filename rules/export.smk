# Exports: formats other tools read. Targets: `snakemake tiles` (reference-layout tile directories;
# also part of `all` with keep_tiles: true).
rule export_tiles:
    input:
        **plan_inputs(tiles=True),
        stacks=chunk_stacks,
    output:
        directory(R.tiles("{year}", "{chunk}")),
    log:
        R.log("export_tiles", "{year}", "{chunk}"),
    params:
        plan_dir=plan_dir,
        tile_size=TILE_SIZE,
        version=S.version("tiles"),
        stack_dir=lambda wc, input: Path(input.stacks[0]).parents[1],
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera tiles --plan {params.plan_dir} --tile-size {params.tile_size} --chunk {wildcards.chunk}"
        " --stack-dir {params.stack_dir} --out-dir {output} &> {log}"


rule tiles:
    input:
        tile_exports(),
