#!/usr/bin/env bash
# make test: start the local cluster where this machine allows it (root + apt), then run every test.
# Without it the cluster tests skip with a printed reason; LANDSCAPE_REQUIRE_CLUSTER=1 (CI) makes
# them required, so they can never be skipped silently there.
set -euo pipefail
cd "$(dirname "$0")/.."
if reason=$(bash cluster/available.sh); then
    bash cluster/up.sh
elif [ "${LANDSCAPE_REQUIRE_CLUSTER:-0}" = 1 ]; then
    echo "LANDSCAPE_REQUIRE_CLUSTER=1 but the cluster cannot be set up here: $reason" >&2
    exit 1
else
    echo "cluster tests will be skipped: $reason"
fi
exec .venv/bin/python -m pytest -q tests "$@"
