# Exports of a year's products into other tools' layouts. Not part of `all`: a geotessera export
# holds whole 0.1-degree tiles (about 100 MB each at 52 N), however small the ROI.


rule export_geotessera:
    input:
        **product_files("{year}"),
    output:
        directory(f"{RES}/{{year}}/geotessera"),
    log:
        f"{RES}/logs/export_geotessera/{{year}}.log",
    params:
        config=CONFIG_JSON,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera export geotessera --config {params.config} --year {wildcards.year} --cog {input.cog}"
        " --out {output} &> {log}"


rule geotessera:
    """Target: every year's products in geotessera's layout (`snakemake geotessera`)."""
    input:
        expand(f"{RES}/{{year}}/geotessera", year=YEARS),
