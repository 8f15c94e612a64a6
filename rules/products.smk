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


rule qa_report:
    input:
        stack_qa=year_stack_qa,
        embeddings=year_embeddings,
    output:
        report=f"{RES}/{{year}}/products/tessera_{{year}}_qa.md",
        counts=f"{RES}/{{year}}/products/tessera_{{year}}_qa_counts.png",
    log:
        f"{RES}/logs/qa_report/{{year}}.log",
    params:
        config=CONFIG_JSON,
        stack_dir=lambda wc: f"{RES}/{wc.year}/stack",
        embeddings_dir=lambda wc: f"{RES}/{wc.year}/embeddings",
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera qa --config {params.config} --year {wildcards.year} --stack-dir {params.stack_dir}"
        " --embeddings-dir {params.embeddings_dir} --out {output.report} &> {log}"
