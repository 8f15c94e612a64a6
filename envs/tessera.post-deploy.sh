#!/usr/bin/env bash
# Runs once, inside the new conda environment, after Snakemake created it from tessera.yaml.
# Installs tessera-pipeline itself from the checkout the workflow runs from: the Snakefile exports
# TESSERA_PROJECT_ROOT when it parses (Snakemake runs this script from a copy, so the script's own
# location says nothing about the checkout). Dependencies are already pinned in tessera.yaml.
# Editable: Snakemake rebuilds the environment only when tessera.yaml changes, so a copy of the
# package would stay at the version of the first run and every job after a `git pull` would run old
# code under the new Snakefile; an editable install always runs the checkout's code.
# From an installed wheel there is no checkout: the Snakefile exports the release instead
# (tessera-pipeline==<version>), which is installed as such.
set -euo pipefail
root=${TESSERA_PROJECT_ROOT:?the Snakefile sets TESSERA_PROJECT_ROOT; run this through snakemake --sdm conda}
if [ -d "$root" ]; then
    python -m pip install --no-deps --quiet --editable "$root"
else
    python -m pip install --no-deps --quiet "$root"
fi
