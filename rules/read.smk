# Read each chunk's scenes into its stacked arrays (the reference's layout). The stacks are kept:
# inference reads them, and a changed model setting reruns inference without downloading again.
rule read_s2:
    input:
        **plan_inputs(),
        found=R.search("{year}", "{chunk}", "s2"),
    output:
        arrays=R.stack_arrays("{year}", "{chunk}", "s2"),
        counts=R.stack_file("{year}", "{chunk}", "s2", VALID_COUNT_FILE),
        qa=R.stack_file("{year}", "{chunk}", "s2", QA_FILE),
    log:
        R.log("read_s2", "{year}", "{chunk}"),
    params:
        plan_dir=plan_dir,
        settings=S.settings("read_s2"),
        version=S.version("read_s2"),
        out_dir=lambda wc, output: Path(output.qa).parent,
    threads: 2
    resources:
        downloads=1,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera read-s2 --settings {params.settings:q} --plan {params.plan_dir} --chunk {wildcards.chunk}"
        " --year {wildcards.year} --items {input.found} --out-dir {params.out_dir} &> {log}"


rule read_s1:
    input:
        **plan_inputs(),
        found=R.search("{year}", "{chunk}", "s1-{orbit}"),
    output:
        arrays=R.stack_arrays("{year}", "{chunk}", "s1-{orbit}"),
        counts=R.stack_file("{year}", "{chunk}", "s1-{orbit}", VALID_COUNT_FILE),
        qa=R.stack_file("{year}", "{chunk}", "s1-{orbit}", QA_FILE),
    log:
        R.log("read_s1", "{year}", "{chunk}-{orbit}"),
    params:
        plan_dir=plan_dir,
        settings=S.settings("read_s1"),
        version=S.version("read_s1"),
        out_dir=lambda wc, output: Path(output.qa).parent,
    threads: 2
    resources:
        downloads=1,
    conda:
        "../envs/tessera.yaml"
    shell:
        "tessera read-s1 --settings {params.settings:q} --plan {params.plan_dir} --chunk {wildcards.chunk}"
        " --year {wildcards.year} --orbit {wildcards.orbit} --items {input.found} --out-dir {params.out_dir}"
        " &> {log}"
