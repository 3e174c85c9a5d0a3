#!/usr/bin/env bash
# Make sure headless Chromium and its chromedriver (Debian packages) exist for the dashboard's browser
# tests. Installs them with apt-get when absent and we are root (as on the CI machine) or have sudo
# without a password; otherwise says so and exits 0: the browser tests then skip with that reason
# (except under CI=true, where they fail instead, so CI can never pass without running them).
# Never downloads a browser build of its own.
set -euo pipefail

have() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }

if have; then
  echo "ensure-chromium: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) and chromedriver present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "ensure-chromium: chromium/chromium-driver missing and not root: the browser tests will skip" \
         "(install them with: sudo apt-get install -y chromium chromium-driver)" >&2
    exit 0
  fi
fi
echo "ensure-chromium: installing chromium and chromium-driver with apt-get" >&2
$SUDO apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >&2
have || { echo "ensure-chromium: chromium still missing after apt-get" >&2; exit 1; }
echo "ensure-chromium: installed $(/usr/bin/chromium --version 2>/dev/null)"
