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
# The interactive view's test renders its page in Debian's headless chromium: installed once where root + apt
# allow it (a second run only checks); elsewhere that test skips with its reason.
if ! command -v chromium >/dev/null && [[ $(id -u) = 0 ]] && command -v apt-get >/dev/null; then
    echo "installing chromium for the browser test"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq chromium >/dev/null; } || echo "chromium could not be installed: the browser test will skip"
fi
# Two test processes, each test file in one (its module fixtures shared, its cluster tests in order): about
# half the suite waits on schedulers or worker start-ups, so a second process fills the other core.
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile tests "$@"
