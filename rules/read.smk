rule read_s2:
    input:
        f"{RES}/{{year}}/search/{{chunk}}/s2.json",
    output:
        bands=temp(f"{RES}/{{year}}/stack/{{chunk}}/s2/bands.npy"),
        masks=temp(f"{RES}/{{year}}/stack/{{chunk}}/s2/masks.npy"),
        doys=temp(f"{RES}/{{year}}/stack/{{chunk}}/s2/doys.npy"),
        counts=f"{RES}/{{year}}/stack/{{chunk}}/s2/valid_count.npy",
        qa=f"{RES}/{{year}}/stack/{{chunk}}/s2/qa.json",
    log:
        f"{RES}/logs/read_s2/{{year}}/{{chunk}}.log",
    params:
        config=CONFIG_JSON,
        out_dir=lambda wc, output: Path(output.qa).parent,
    threads: 2
    resources:
        downloads=1,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera read-s2 --config {params.config} --chunk {wildcards.chunk} --year {wildcards.year}"
        " --items {input} --out-dir {params.out_dir} &> {log}"


rule read_s1:
    input:
        f"{RES}/{{year}}/search/{{chunk}}/s1-{{orbit}}.json",
    output:
        sar=temp(f"{RES}/{{year}}/stack/{{chunk}}/s1-{{orbit}}/sar_{{orbit}}.npy"),
        doy=temp(f"{RES}/{{year}}/stack/{{chunk}}/s1-{{orbit}}/sar_{{orbit}}_doy.npy"),
        counts=f"{RES}/{{year}}/stack/{{chunk}}/s1-{{orbit}}/valid_count.npy",
        qa=f"{RES}/{{year}}/stack/{{chunk}}/s1-{{orbit}}/qa.json",
    log:
        f"{RES}/logs/read_s1/{{year}}/{{chunk}}-{{orbit}}.log",
    params:
        config=CONFIG_JSON,
        out_dir=lambda wc, output: Path(output.qa).parent,
    threads: 2
    resources:
        downloads=1,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera read-s1 --config {params.config} --chunk {wildcards.chunk} --year {wildcards.year}"
        " --orbit {wildcards.orbit} --items {input} --out-dir {params.out_dir} &> {log}"
