# Parse-time setup (tessera.parsetime): validate the config, plan the ROI or read the stored plan,
# check the checkpoint. Every problem stops here, before any job runs; nothing is written. A job's
# own parse (cluster or subprocess job) skips the checks that import PyTorch: the main process made them.
# Input functions only; no numeric code here.
import sys
from pathlib import Path

from tessera.layout import ORBITS, PRODUCTS
from tessera.parsetime import default_config, export_project_root, or_exit, setup, train_settings
from tessera.results import QA_FILE, VALID_COUNT_FILE

if not config:
    config.update(or_exit(default_config, Path(workflow.basedir)))

S = or_exit(setup, config, check=workflow.is_main_process)
CFG = S.cfg
R = S.results
YEARS = [str(y) for y in CFG.years]
CHUNKS = [c.id for c in S.plan.chunks]
INT8 = CFG.model.output == "int8"
TILE_SIZE = CFG.tile_size
# One GPU per inference job unless the config pins inference to the CPU.
INFER_GPUS = 0 if CFG.model.device == "cpu" else 1
# Machine settings: the infer rule passes them as params derived from its resources, which Snakemake
# does not record as provenance, so changing them reruns nothing.
DEVICE = CFG.model.device
BATCH_SIZE = CFG.model.batch_size or 0

print(S.summary(), file=sys.stderr)
if workflow.is_main_process and (note := S.alignment_note()):
    print(note, file=sys.stderr)
# For envs/tessera.post-deploy.sh (conda deployment): where to install the package from.
export_project_root(Path(workflow.current_basedir).parent)  # rules/ -> the checkout


wildcard_constraints:
    year=r"\d{4}",
    chunk=r"[0-9]+m_E-?[0-9.]+_N-?[0-9.]+",
    part=r"all|n\d+-\d+",
    product=r"s2|s1-ascending|s1-descending",
    orbit=r"ascending|descending",


def plan_inputs(tiles=False):
    """The stored plan as inputs. ancient(): its path is its content's address, so only a new path matters."""
    files = {"plan": ancient(R.plan_chunks(S.key)), "mask": ancient(R.plan_mask(S.key))}
    if tiles:
        files["tiles"] = ancient(R.plan_tiles(S.key, TILE_SIZE))
    return files


def plan_dir(wildcards, input):
    """The plan directory, from the plan input (a derived param: its path is not provenance)."""
    return str(Path(input.plan).parent)


def chunk_stacks(wildcards):
    """Every stacked array of one chunk and year."""
    return R.chunk_stacks(wildcards.year, wildcards.chunk)


def checkpoint_input(wildcards):
    """The checkpoint file: an input, so replacing it in place reruns inference."""
    return [CFG.model.checkpoint] if CFG.model.checkpoint else []


def year_parts(wildcards):
    """Every inference job's output directory of one year."""
    return [R.embeddings(wildcards.year, c, part) for c in CHUNKS for part in S.parts(c)]


def year_searches(wildcards):
    return [R.search(wildcards.year, c, product) for c in CHUNKS for product in PRODUCTS]


def year_stack_qa(wildcards):
    """qa.json and valid-count map of every read step of one year."""
    return [R.stack_file(wildcards.year, c, p, n) for c in CHUNKS for p in PRODUCTS for n in (QA_FILE, VALID_COUNT_FILE)]


def product_files(year):
    """Named products of one year: COG, STAC Item and Collection, quicklook, observation counts and (int8) the
    scales COG."""
    files = {
        "cog": R.product(year),
        "item": R.product(year, ".json"),
        "collection": R.product(year, "_collection.json"),
        "quicklook": R.product(year, "_quicklook.png"),
        "counts": R.product(year, "_counts.tif"),
    }
    return {**files, "scales": R.product(year, "_scales.tif")} if INT8 else files


def tile_exports():
    """Every chunk's reference-layout tile directories, every year."""
    return [R.tiles(year, c) for year in YEARS for c in CHUNKS]


def geotessera_exports():
    """Every year's geotessera export directory."""
    return [R.geotessera(year) for year in YEARS]


def all_targets():
    qa = [R.product(year, "_qa.md") for year in YEARS]
    products = [f for year in YEARS for f in product_files(year).values()]
    return products + qa + (tile_exports() if CFG.keep_tiles else [])


def train_settings_file(basedir):
    """The training settings file (config/train.yaml, or TESSERA_TRAIN_CONFIG), checked now; [] for the defaults."""
    return or_exit(train_settings, basedir, check=workflow.is_main_process)


def report_skipped_scenes():
    """At the end of a run, say which scenes were skipped (never silently)."""
    from tessera.qa import load_stack_qa, skipped_scenes

    for year in YEARS:
        if not all(Path(R.stack_file(year, cid, p, QA_FILE)).exists() for cid in CHUNKS for p in PRODUCTS):
            continue
        rows = skipped_scenes(load_stack_qa(Path(R.stack_root(year)), CHUNKS))
        if rows:
            qa_md = R.product(year, "_qa.md")
            print(f"tessera: {year}: {len(rows)} scene(s) skipped (details in {qa_md}):", file=sys.stderr)
            for cid, product, scene, reason in rows:
                print(f"  {cid} {product} {scene}: {reason}", file=sys.stderr)
