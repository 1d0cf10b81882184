#!/usr/bin/env bash
# Runs every test of the project, from a fresh clone:
#   1. builds the workspace once: the engine binary and the plugin libraries that the
#      end-to-end tests load (the only plugins tests build themselves are the fixtures
#      made outside the workspace, in target/external-plugins, once per checkout);
#   2. the Rust unit and end-to-end tests (PostgreSQL tests take TAGCAST_TEST_PG_URL; they
#      skip with a reason when it is unreachable, and fail instead under CI=true);
#   3. the browser client's unit tests under Node's test runner;
#   4. the demo in a real headless Chromium (skips with a reason when Chromium is missing,
#      fails instead under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace
cargo test --workspace

if [ ! -d clients/js/node_modules/playwright-core ]; then
  (cd clients/js && npm ci --no-audit --no-fund)
fi
node --test clients/js/test/
node clients/js/test-browser/demo.e2e.mjs
