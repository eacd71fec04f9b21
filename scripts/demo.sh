#!/usr/bin/env bash
# The main job: set up everything (idempotent), then live-migrate the demo VI and print the report.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec node dist/scripts/demo.js "$@"
