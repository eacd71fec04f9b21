#!/usr/bin/env bash
# The test command: set up everything (idempotent), lint, then the fast tests and the end-to-end tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
printf '\n\033[1m==> lint (eslint + TypeScript strict)\033[0m\n'
npx tsc --build
npx eslint .
printf '\n\033[1m==> tests (mocha)\033[0m\n'
npx mocha --reporter dist/test/summary-reporter.js --timeout 300000 'dist/test/unit/**/*.test.js' 'dist/test/e2e/**/*.test.js'
