#!/usr/bin/env bash
# The main job: set up (or reuse) .venv, then execute every notebook with the default (offline) profile and
# write all figures and tables to figures/<profile>/. Extra arguments go to the runner, e.g.
#   bash scripts/run.sh --profile tiny
#   bash scripts/run.sh --profile paper --data-root /data/things --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${CONVEXLIB_DATA:-}" ] && [ -d ../shared/data ]; then
  export CONVEXLIB_DATA="$(cd ../shared/data && pwd)"
fi
export MPLBACKEND=Agg
# torch's OpenMP threads spin while waiting; on a busy 2-core machine that makes them 10-30x slower
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/python -m convexlib.runner "$@"
