# Inference: one job per chunk (or per infer_tiles_per_job tiles), reading tile windows straight
# from the chunk stacks; the model is loaded once per job. A failed job's finished tiles are kept
# and only the rest are embedded when it runs again.
rule infer:
    input:
        **plan_inputs(tiles=True),
        stacks=chunk_stacks,
        checkpoint=checkpoint_input,
    output:
        directory(R.embeddings("{year}", "{chunk}", "{part}")),
    log:
        R.log("infer", "{year}", "{chunk}", "{part}"),
    params:
        plan_dir=plan_dir,
        # machine settings: params computed from resources are not provenance, so changing them reruns nothing
        device=lambda wc, resources: DEVICE,
        batch_size=lambda wc, resources: BATCH_SIZE,
        settings=S.settings("infer"),
        version=S.version("infer"),
        stack_dir=lambda wc: R.chunk_stack_dir(wc.year, wc.chunk),
    threads: 4
    resources:
        gpu=INFER_GPUS,
    conda:
        "../envs/tessera.yaml"
    shell:
        "TESSERA_THREADS={threads} tessera infer --settings {params.settings:q} --plan {params.plan_dir}"
        " --chunk {wildcards.chunk} --part {wildcards.part} --year {wildcards.year} --stack-dir {params.stack_dir}"
        " --device {params.device} --batch-size {params.batch_size} --out {output} &> {log}"
