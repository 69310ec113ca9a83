#!/usr/bin/env bash
# System packages the book needs: Fashion-MNIST (offline data for the fast profile),
# MathJax 2 (copied into the site so that formulas render offline; see
# book/_ext/mathjax_offline.py) and Chromium (the site check). Installs them with apt-get when it can; otherwise
# says what to run.
set -euo pipefail
pkgs=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || pkgs+=(dataset-fashion-mnist)
[ -e /usr/share/javascript/mathjax/MathJax.js ] || pkgs+=(libjs-mathjax)
[ -d /usr/share/javascript/mathjax/fonts/HTML-CSS/TeX/woff ] || pkgs+=(fonts-mathjax)
command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
[ ${#pkgs[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Not a Debian/Ubuntu machine: install ${pkgs[*]} by hand (Fashion-MNIST can also be downloaded by torchvision)." >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Installing system packages: ${pkgs[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${pkgs[@]}"
