#!/usr/bin/env bash
# An emulated arm64 (Jetson-class) device: Debian's aarch64 Python 3.11 run by qemu-user, with
# PyPI's aarch64 wheels of numpy, onnxruntime (older than the workstation's) and edgekit's other
# device-side dependencies. Everything comes from Debian's packages and PyPI, built once and
# cached (keyed by the package versions); nothing is downloaded when the device runs.
#
#   scripts/arm64-device.sh [--prefix DIR] [--onnxruntime VERSION] [--edgekit DIR]
#                           [--edgekit-wheel WHL] [--profile-out FILE] [--host USER@HOST] [--port N]
#
# Writes DIR/python (default DIR: ~/.edgekit-arm64), a wrapper that runs
#   qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11
# with the device's site folder (and the edgekit source it runs, --edgekit, default this checkout)
# on PYTHONPATH, and prints a device profile (devices/emulated-arm64.yaml with host and python
# filled in). The build lives under $EDGEKIT_CACHE/arm64-device (default .cache/arm64-device).
# With --edgekit-wheel, the device runs that built wheel instead of a source tree: it is installed
# into DIR/edgekit-site (no dependencies: the device's own packages must already meet the wheel's
# requirements, which scripts/wheel_requires.py checks first, as a device install would need).
#
# onnxruntime: 1.19.2 by default (a JetPack-6-era runtime, older than edgekit's workstation one).
# Under Debian 12's qemu-user 7.2, onnxruntime 1.19.2 to 1.26 run; 1.28 and later crash in the
# emulator (not on real aarch64 hardware).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${HOME}/.edgekit-arm64"
ort_version="1.19.2"
edgekit_src="$here"
edgekit_wheel=""
profile_out=""
host="${USER:-$(id -un)}@localhost"
port=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --onnxruntime) ort_version="$2"; shift 2 ;;
    --edgekit) edgekit_src="$2"; shift 2 ;;
    --edgekit-wheel) edgekit_wheel="$2"; shift 2 ;;
    --profile-out) profile_out="$2"; shift 2 ;;
    --host) host="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "arm64-device: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
cache="${EDGEKIT_CACHE:-$here/.cache}/arm64-device"
say() { echo "arm64-device: $*" >&2; }
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"

# Debian arm64 packages: the interpreter, its standard library and the C/C++ libraries that
# Python's extension modules and the manylinux wheels (numpy, onnxruntime) load.
DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6
      zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libcrypt1 libuuid1 libsqlite3-0
      libncursesw6 libtinfo6 libreadline8 libdb5.3 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3
      libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1)
# PyPI aarch64 wheels: what edgekit's torch-free validator (and its CLI) imports on the device, which
# are the wheel's own requirements (--edgekit-wheel checks them; pillow reads image folders). pydantic and
# pydantic-core are a matched pair.
WHEELS=(numpy==2.4.6 "onnxruntime==$ort_version" onnx==1.23.2 protobuf==7.36.2 ml_dtypes==0.6.0
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-extensions==4.16.0
        typing-inspection==0.4.5 pyyaml==6.0.4 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2
        pygments==2.21.0 click==8.5.1 pillow==13.0.0)

# 1. The emulator and the arm64 package lists (once per machine).
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  command -v apt-get >/dev/null || { say "qemu-aarch64-static is missing and apt-get is not available: install qemu-user-static"; exit 2; }
  say "installing qemu-user-static (Debian)"
  $sudo apt-get install -y -qq qemu-user-static >/dev/null
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  say "adding the arm64 architecture to apt"
  $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
fi
uris="$(apt-get download --print-uris "${DEBS[@]/%/:arm64}" 2>/dev/null || true)"
if [ "$(grep -c . <<<"$uris")" -ne "${#DEBS[@]}" ]; then
  say "refreshing apt's arm64 package lists"
  $sudo apt-get update -qq
  uris="$(apt-get download --print-uris "${DEBS[@]/%/:arm64}")"
fi

# 2. The cache key: the exact .deb files and wheel pins (and this script's layout version).
key="$( (echo layout=1; awk '{print $2}' <<<"$uris" | sort; printf '%s\n' "${WHEELS[@]}") \
        | sha256sum | cut -c1-16)"
build="$cache/$key"
if [ ! -f "$build/.complete" ]; then
  started=$(date +%s)
  rm -rf "$build.tmp"; mkdir -p "$build.tmp/debs" "$build.tmp/wheels" "$build.tmp/sysroot" "$build.tmp/site"
  say "downloading ${#DEBS[@]} Debian arm64 packages"
  (cd "$build.tmp/debs" && apt-get download -qq "${DEBS[@]/%/:arm64}" 2>/dev/null)
  for deb in "$build.tmp"/debs/*.deb; do dpkg -x "$deb" "$build.tmp/sysroot"; done
  say "downloading ${#WHEELS[@]} aarch64 wheels from PyPI (onnxruntime $ort_version)"
  pip_cmd=(python3 -m pip)
  [ -x "$here/.venv/bin/pip" ] && pip_cmd=("$here/.venv/bin/pip")
  "${pip_cmd[@]}" download -q --no-deps --only-binary=:all: --implementation cp --python-version 3.11 \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_26_aarch64 \
    --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    -d "$build.tmp/wheels" "${WHEELS[@]}" 2> >(grep -v "^WARNING: Location" >&2)
  for wheel in "$build.tmp"/wheels/*.whl; do
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$build.tmp/site"
  done
  rm -rf "$build.tmp/debs" "$build.tmp/wheels"
  (cd "$build.tmp" && { printf '%s\n' "${WHEELS[@]}"; awk '{print $2}' <<<"$uris" | sort; } > versions.txt)
  touch "$build.tmp/.complete"
  rm -rf "$build"; mv "$build.tmp" "$build"
  say "built $build in $(( $(date +%s) - started ))s ($(du -sh "$build" | cut -f1))"
fi

# 3. The device's python: a wrapper that names what is missing before it starts the emulator.
mkdir -p "$prefix"
if [ -n "$edgekit_wheel" ]; then
  py=python3; [ -x "$here/.venv/bin/python" ] && py="$here/.venv/bin/python"
  "$py" "$here/scripts/wheel_requires.py" "$edgekit_wheel" "$build/site" \
    || { say "the wheel's requirements are not met by the device's packages (above)"; exit 2; }
  rm -rf "$prefix/edgekit-site"
  "$py" -m pip install -q --no-deps --no-compile --target "$prefix/edgekit-site" "$edgekit_wheel" \
    2> >(grep -v "^WARNING: Location" >&2)
  edgekit_src="$prefix/edgekit-site"
  say "edgekit from the wheel $(basename "$edgekit_wheel") (not a source tree)"
fi
cat > "$prefix/python.tmp" <<WRAPPER
#!/bin/sh
# edgekit's emulated arm64 device (scripts/arm64-device.sh): aarch64 Python 3.11 under qemu-user.
sysroot='$build/sysroot'
site='$build/site'
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  echo "edgekit-arm64: the emulator qemu-aarch64-static is missing (apt-get install qemu-user-static)" >&2; exit 127
fi
for need in lib/ld-linux-aarch64.so.1 usr/bin/python3.11 usr/lib/python3.11/os.py; do
  [ -e "\$sysroot/\$need" ] || { echo "edgekit-arm64: the sysroot \$sysroot is incomplete: \$need is missing (rerun scripts/arm64-device.sh)" >&2; exit 127; }
done
EDGEKIT_DEVICE_SITE="\$site" PYTHONPATH="\$site:$edgekit_src\${PYTHONPATH:+:\$PYTHONPATH}" exec qemu-aarch64-static -L "\$sysroot" "\$sysroot/usr/bin/python3.11" "\$@"
WRAPPER
chmod +x "$prefix/python.tmp"; mv "$prefix/python.tmp" "$prefix/python"

# 4. Check it runs, and print the profile.
versions="$("$prefix/python" -c 'import platform, numpy, onnxruntime; print(platform.machine(), platform.python_version(), numpy.__version__, onnxruntime.__version__)')"
say "device python: $prefix/python (machine, Python, numpy, onnxruntime: $versions)"
profile="$(sed -e "s|^host: .*|host: $host|" -e "s|^python: .*|python: $prefix/python|" \
  "$here/edgekit/_data/devices/emulated-arm64.yaml")"
[ -n "$port" ] && profile="$profile"$'\n'"port: $port"
if [ -n "$profile_out" ]; then printf '%s\n' "$profile" > "$profile_out"; say "wrote $profile_out"; else printf '%s\n' "$profile"; fi
