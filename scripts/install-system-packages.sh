#!/usr/bin/env bash
# Installs the Debian packages the project needs at run and test time, only when missing.
#   libportaudio2   sounddevice, imported by livekit-agents' console mode
#   docker-compose  validates docker-compose.yml without a Docker engine
#   redis-server    shared breaker state: tests start it as a child process (never a service)
#   chromium        takes the Temporal UI screenshot in docs/ (only with --with-browser)
set -euo pipefail
packages=(libportaudio2 docker-compose redis-server)
if [[ "${1:-}" == "--with-browser" ]]; then packages+=(chromium); fi
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing system packages: ${missing[*]} (no apt-get here; install them by hand)" >&2
  exit 1
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
