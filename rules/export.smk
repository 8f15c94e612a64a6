# Exports: formats other tools read. Targets: `snakemake tiles` (reference-layout tile directories;
# also part of `all` with keep_tiles: true) and `snakemake geotessera` (geotessera's layout; not part
# of `all`: it holds whole 0.1-degree tiles, about 100 MB each at 52 N, however small the ROI).
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
        stack_dir=lambda wc: R.chunk_stack_dir(wc.year, wc.chunk),
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera tiles --plan {params.plan_dir} --tile-size {params.tile_size} --chunk {wildcards.chunk}"
        " --stack-dir {params.stack_dir} --out-dir {output} &> {log}"


rule tiles:
    input:
        tile_exports(),


rule export_geotessera:
    input:
        **plan_inputs(),
        **product_files("{year}"),
    output:
        directory(R.geotessera("{year}")),
    log:
        R.log("export_geotessera", "{year}"),
    params:
        plan_dir=plan_dir,
        version=S.version("export_geotessera"),
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera export geotessera --plan {params.plan_dir} --year {wildcards.year} --cog {input.cog}"
        " --out {output} &> {log}"


rule geotessera:
    """Target: every year's products in geotessera's layout (`snakemake geotessera`)."""
    input:
        geotessera_exports(),
