#!/usr/bin/env bash
# Install the system packages the demo and the real-component tests need: PostgreSQL 15 + PostGIS 3
# (the pgstac STAC API server) and Slurm + munge (the cluster tests). Idempotent: a no-op when
# everything is installed. Needs root (or sudo) and Debian 12 / Ubuntu package names.
set -euo pipefail
packages=(postgresql-15 postgresql-15-postgis-3 slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "install-system-deps: apt-get not found; install ${missing[*]} with your package manager" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-system-deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
