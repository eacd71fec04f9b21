#!/usr/bin/env bash
# The benchmark: set up everything (idempotent), then MigraVI against the floor and Podman on the
# same containers over the same shaped link. Options: see bench/bench.ts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" --bench
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec node dist/bench/bench.js "$@"
