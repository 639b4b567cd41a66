#!/usr/bin/env bash
# Make sure the Fashion-MNIST IDX files are there: the Debian package when apt is available,
# otherwise say how to point edgekit at the files.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -n "${EDGEKIT_DATA:-}" ] && ls "$EDGEKIT_DATA"/t10k-images-idx3-ubyte* >/dev/null 2>&1; then
  echo "Fashion-MNIST: using \$EDGEKIT_DATA=$EDGEKIT_DATA"; exit 0
fi
if ls "$dir"/t10k-images-idx3-ubyte* >/dev/null 2>&1; then
  echo "Fashion-MNIST: $dir"; exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Fashion-MNIST: installing the Debian package dataset-fashion-mnist"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  exit 0
fi
cat >&2 <<MSG
Fashion-MNIST is not installed and apt-get is not available.
Download the four IDX files (train/t10k images and labels, .gz is fine) into a folder and run:
  export EDGEKIT_DATA=/path/to/that/folder
MSG
exit 2
