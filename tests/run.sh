#!/usr/bin/env bash
# The whole suite, as the README's test command runs it, in two parts:
#   1. most modules on two pytest-xdist workers (each with a database of its own on PostgreSQL);
#   2. the modules that time faults, outages, scale-out, the benchmark and the wire (they kill and
#      restart servers and brokers, count greenlets and sockets, or measure delays), one at a time
#      with the machine to themselves.
# Usage: bash tests/run.sh [--shared-only] [pytest arguments...]
#   --shared-only  part 1 only (.ci/run's PostgreSQL pass: part 2 does the same on either database)
# Both parts run even when the first fails; the exit status is non-zero if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."

ALONE=(
  tests/faults
  tests/live/test_scale_out.py
  tests/live/test_broker_outage.py
  tests/live/test_transport_live.py
  tests/test_bench_smoke.py
  tests/protocol
  tests/realtime/test_outbox.py
  tests/realtime/test_sequencer.py
  tests/security/test_payload_limits.py
  tests/security/test_malformed.py
  tests/security/test_origins.py
  tests/stores
  tests/test_log_client_mistakes.py
)

shared_only=false
if [ "${1:-}" = "--shared-only" ]; then
  shared_only=true
  shift
fi

deselect=()
for module in "${ALONE[@]}"; do deselect+=(--deselect "$module"); done

status=0
.venv/bin/python -m pytest -n 2 "${deselect[@]}" "$@" || status=$?
if [ "$shared_only" = false ]; then
  .venv/bin/python -m pytest "${ALONE[@]}" "$@" || status=$?
fi
exit "$status"
