#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the test suite. The real-data tests read $CONVEXLIB_DATA, defaulting to
# ../shared/data beside the checkout; they are skipped with a reason when no data root is found.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${CONVEXLIB_DATA:-}" ] && [ -d ../shared/data ]; then
  export CONVEXLIB_DATA="$(cd ../shared/data && pwd)"
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
export MPLBACKEND=Agg
# torch's OpenMP threads spin while waiting; on a busy 2-core machine that makes them 10-30x slower
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
