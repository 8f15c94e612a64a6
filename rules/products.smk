rule stitch:
    input:
        embeddings=year_embeddings,
        searches=year_searches,
    output:
        **product_files("{year}"),
    log:
        f"{RES}/logs/stitch/{{year}}.log",
    params:
        config=CONFIG_JSON,
        embeddings_dir=lambda wc: f"{RES}/{wc.year}/embeddings",
        search_dir=lambda wc: f"{RES}/{wc.year}/search",
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera stitch --config {params.config} --year {wildcards.year} --embeddings-dir {params.embeddings_dir}"
        " --search-dir {params.search_dir} --out {output.cog} &> {log}"
