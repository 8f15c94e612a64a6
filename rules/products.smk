# Per-year products: the stitched COG(s), STAC Item and quicklook, and the QA report.
rule stitch:
    input:
        **plan_inputs(tiles=True),
        parts=year_parts,
        searches=year_searches,
        stack_qa=year_stack_qa,
    output:
        **product_files("{year}"),
    log:
        R.log("stitch", "{year}"),
    params:
        plan_dir=plan_dir,
        tile_size=TILE_SIZE,
        version=S.version("stitch"),
        search_dir=lambda wc: R.search_dir(wc.year),
        stack_dir=lambda wc: R.stack_root(wc.year),
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera stitch --plan {params.plan_dir} --tile-size {params.tile_size} --year {wildcards.year} --parts {input.parts}"
        " --search-dir {params.search_dir} --stack-dir {params.stack_dir} --out {output.cog} &> {log}"


rule qa_report:
    input:
        **plan_inputs(),
        stack_qa=year_stack_qa,
        parts=year_parts,
    output:
        report=R.product("{year}", "_qa.md"),
        counts=R.product("{year}", "_qa_counts.png"),
    log:
        R.log("qa_report", "{year}"),
    params:
        plan_dir=plan_dir,
        version=S.version("qa"),
        stack_dir=lambda wc: R.stack_root(wc.year),
        roi=CFG.roi,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera qa --plan {params.plan_dir} --roi {params.roi:q} --year {wildcards.year} --stack-dir {params.stack_dir}"
        " --parts {input.parts} --out {output.report} &> {log}"
