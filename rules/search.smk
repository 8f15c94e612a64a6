# STAC searches: small HTTP requests, run where Snakemake runs (the login node on a cluster).
localrules:
    search,


rule search:
    input:
        **plan_inputs(),
    output:
        R.search("{year}", "{chunk}", "{product}"),
    log:
        R.log("search", "{year}", "{chunk}", "{product}"),
    params:
        plan_dir=plan_dir,
        settings=lambda wc: S.settings("search-s2" if wc.product == "s2" else "search-s1"),
        version=S.version("search"),
    resources:
        downloads=1,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera search --settings {params.settings:q} --plan {params.plan_dir} --chunk {wildcards.chunk}"
        " --year {wildcards.year} --product {wildcards.product} --out {output} &> {log}"
