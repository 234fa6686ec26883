#!/usr/bin/env bash
# Refreshes the README's screenshots (docs/img/*.png) from a real demo show in Chromium.
# The test suite writes its screenshots to test-artifacts/screenshots/ instead, so that
# running the tests changes no tracked file.
set -euo pipefail
cd "$(dirname "$0")/.."
LIVECART_SCREENSHOTS_DIR="$PWD/docs/img" exec ./dev test tests/browser/test_screenshots.py -q "$@"
