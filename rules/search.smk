rule search:
    output:
        f"{RES}/{{year}}/search/{{chunk}}/{{product}}.json",
    log:
        f"{RES}/logs/search/{{year}}/{{chunk}}/{{product}}.log",
    params:
        config=CONFIG_JSON,
    resources:
        downloads=1,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera search --config {params.config} --chunk {wildcards.chunk} --year {wildcards.year}"
        " --product {wildcards.product} --out {output} &> {log}"
