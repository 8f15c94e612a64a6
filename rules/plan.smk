# The plan (chunks, ROI mask, tiles), written once under its content address. Quick: run where
# Snakemake runs, never submitted.
localrules:
    plan,
    plan_tiles,


rule plan:
    output:
        chunks=R.plan_chunks(S.key),
        mask=R.plan_mask(S.key),
    log:
        R.log("plan", S.key),
    params:
        version=S.version("plan"),
        # derived from the output (so not recorded): the output's path is the plan's content address,
        # and the ROI's path and max_roi_area_km2 change nothing in it
        settings=lambda wc, output: S.settings("plan"),
        plan_dir=lambda wc, output: Path(output.chunks).parent,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera plan-chunks --settings {params.settings:q} --out-dir {params.plan_dir} &> {log}"


rule plan_tiles:
    input:
        **plan_inputs(),
    output:
        R.plan_tiles(S.key, TILE_SIZE),
    log:
        R.log("plan_tiles", S.key, str(TILE_SIZE)),
    params:
        version=S.version("plan"),
        plan_dir=plan_dir,
        tile_size=TILE_SIZE,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera plan-tiles --plan {params.plan_dir} --tile-size {params.tile_size} --out {output} &> {log}"
