#!/usr/bin/env bash
# Build (or refresh) the emulated aarch64 environment that `make test-arm` runs the agent in.
#
# No root filesystem and no emulated pip: the host's pip installs the aarch64 wheels of
# `gruwatch[agent]` with --target (the versions come from pyproject.toml, resolved by pip), and
# Debian's arm64 python3.11 is fetched with a throw-away apt state (the host's apt is untouched)
# and unpacked with dpkg-deb -x into a sysroot. `.arm/python` runs that interpreter under
# qemu-aarch64-static with the settings it needs (docs/deploy-gateway.md, "Emulated check").
#
# Idempotent and cached under .arm/ (git-ignored): the sysroot is rebuilt only when the Debian
# package list changes, the wheels only when the core or agent dependencies in pyproject.toml
# change; the gruwatch wheel itself is rebuilt and reinstalled on every run (a few seconds).
#
# Usage: scripts/build-arm-env.sh [ARM_DIR]   (default .arm; PYTHON = the host python with pip)
# Needs: Debian/Ubuntu host with apt (root, or qemu-user-static already installed), network to the
# Debian mirror and PyPI on the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
ARM="$(realpath -m "${1:-.arm}")"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
# The Debian packages the sysroot needs: the interpreter and its stdlib (whose dependency closure
# brings libc, libssl, sqlite, ...) plus libstdc++ for onnxruntime. apt resolves the closure.
DEBS=(python3.11-minimal libpython3.11-stdlib libstdc++6)
PY_VERSION=3.11
t_start=$(date +%s.%N)
log() { printf 'build-arm-env: %s\n' "$*" >&2; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }

# ------------------------------------------------------------------------------------ qemu
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  log "qemu-aarch64-static not found; installing qemu-user-static with apt-get"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends qemu-user-static >&2; then
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends qemu-user-static >&2
  fi
fi
QEMU="$(command -v qemu-aarch64-static)"

# --------------------------------------------------------------------------------- sysroot
SYSROOT="$ARM/sysroot"
APTDIR="$ARM/apt"
# Bump LAYOUT when the steps below change, so cached sysroots get rebuilt.
LAYOUT=2
deb_key="layout$LAYOUT $(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}") ${DEBS[*]}"
if [ "$(cat "$SYSROOT/.stamp" 2>/dev/null)" != "$deb_key" ]; then
  t0=$(date +%s.%N)
  log "building the arm64 sysroot from Debian packages: ${DEBS[*]}"
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
  : >"$APTDIR/status"  # an empty dpkg database: apt fetches the whole dependency closure
  APT=(apt-get -q
    -o APT::Architecture=arm64 -o APT::Architectures::=arm64
    -o Dir::State="$APTDIR" -o Dir::State::Lists="$APTDIR/lists" -o Dir::State::status="$APTDIR/status"
    -o Dir::Cache="$APTDIR/cache" -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache=""
    -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o Acquire::Languages=none
    -o APT::Install-Recommends=false -o APT::Get::List-Cleanup=false)
  "${APT[@]}" update >&2
  "${APT[@]}" install -y --download-only "${DEBS[@]}" >&2
  rm -rf "$SYSROOT.new"
  mkdir -p "$SYSROOT.new"
  for deb in "$APTDIR"/cache/archives/*.deb; do
    dpkg-deb -x "$deb" "$SYSROOT.new"
  done
  # onnxruntime reads the CPU topology from sysfs at import; under qemu the host's topology makes it
  # segfault. Empty files inside the sysroot (qemu -L looks there first) hide it.
  mkdir -p "$SYSROOT.new/sys/devices/system/cpu"
  : >"$SYSROOT.new/sys/devices/system/cpu/possible"
  : >"$SYSROOT.new/sys/devices/system/cpu/present"
  # qemu -L falls back to the host's path when a file is absent from the sysroot: empty folders
  # shadow the host's Python package folders, so nothing of the host's is importable.
  for d in usr/lib/python3/dist-packages usr/lib/python$PY_VERSION/dist-packages \
    usr/local/lib/python$PY_VERSION/dist-packages usr/local/lib/python$PY_VERSION/site-packages; do
    mkdir -p "$SYSROOT.new/$d"
  done
  # Byte-compile the stdlib here (same bytecode within 3.11): the emulated interpreter would
  # otherwise recompile what it imports on every start, at emulated speed.
  "$PYTHON" -m compileall -q -j 0 -s "$SYSROOT.new" -p / "$SYSROOT.new/usr/lib/python$PY_VERSION" >/dev/null || true
  dpkg-deb -f "$APTDIR"/cache/archives/libc6_*.deb Version >"$SYSROOT.new/.glibc"
  echo "$deb_key" >"$SYSROOT.new/.stamp"
  rm -rf "$SYSROOT"
  mv "$SYSROOT.new" "$SYSROOT"
  log "sysroot ready in $(elapsed "$t0") s ($(ls "$APTDIR"/cache/archives/*.deb | wc -l) packages)"
fi
[ -x "$SYSROOT/usr/bin/python$PY_VERSION" ] || { log "no python$PY_VERSION in $SYSROOT"; exit 1; }
# manylinux tags this sysroot can load: 2014 and 2_17 .. 2_<its glibc minor version>.
glibc_minor="$(sed -n 's/^2\.\([0-9]*\).*/\1/p' "$SYSROOT/.glibc")"
PLATFORMS=(--platform manylinux2014_aarch64)
for m in $(seq 17 "$glibc_minor"); do PLATFORMS+=(--platform "manylinux_2_${m}_aarch64"); done

# ---------------------------------------------------------------------------------- wheels
SITE="$ARM/site"
DIST="$ARM/dist"
# The cache key: the core and agent dependencies as pyproject.toml states them (pip resolves versions).
dep_key="$("$PYTHON" - <<'PY'
import hashlib, json, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = {"core": project.get("dependencies", []), "agent": project["optional-dependencies"]["agent"]}
print(hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest())
PY
) py$PY_VERSION glibc2.$glibc_minor"
rm -rf "$DIST"
mkdir -p "$DIST"
t0=$(date +%s.%N)
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$DIST" . >&2 2>/dev/null ||
  "$PYTHON" -m pip wheel -q --no-deps -w "$DIST" . >&2
WHEEL="$(ls "$DIST"/gruwatch-*.whl)"
PIP=("$PYTHON" -m pip install -q --disable-pip-version-check --only-binary=:all: "${PLATFORMS[@]}"
  --python-version "$PY_VERSION" --implementation cp --abi "cp${PY_VERSION/./}" --abi abi3 --abi none)
if [ "$(cat "$SITE/.stamp" 2>/dev/null)" != "$dep_key" ]; then
  log "installing gruwatch[agent] for aarch64 into $SITE"
  rm -rf "$SITE.new"
  "${PIP[@]}" --target "$SITE.new" "$WHEEL[agent]" >&2
  echo "$dep_key" >"$SITE.new/.stamp"
  rm -rf "$SITE"
  mv "$SITE.new" "$SITE"
else
  "${PIP[@]}" --no-deps --upgrade --target "$SITE" "$WHEEL" >&2
fi
rm -rf "$SITE/bin"  # console scripts with the host's interpreter in their shebang; use `python -m gruwatch`
log "wheels ready in $(elapsed "$t0") s"

# ---------------------------------------------------------------------------------- runner
cat >"$ARM/python.new" <<SH
#!/bin/sh
# Debian arm64 python$PY_VERSION under qemu with gruwatch[agent] (built by scripts/build-arm-env.sh).
# QEMU_CPU=cortex-a72: qemu's default CPU model makes onnxruntime ~12x slower and numpy warn falsely.
QEMU_CPU=cortex-a72 PYTHONPATH="$SITE" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \\
  exec "$QEMU" -L "$SYSROOT" "$SYSROOT/usr/bin/python$PY_VERSION" "\$@"
SH
chmod +x "$ARM/python.new"
mv "$ARM/python.new" "$ARM/python"
read -r machine version < <("$ARM/python" -c 'import platform; print(platform.machine(), platform.python_version())')
[ "$machine" = "aarch64" ] || { log "the emulated python says machine=$machine"; exit 1; }
log "ready: $ARM/python ($machine, Python $version) in $(elapsed "$t_start") s, $(du -sh "$ARM" | cut -f1)"
