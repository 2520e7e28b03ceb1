#!/usr/bin/env bash
# Installs what agentcast needs on Debian 12: the -dev libraries, the test tools, and the
# npm packages of the tests (from the committed package-lock.json). Only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential pkg-config libuv1-dev libjansson-dev libssl-dev libhttp-parser-dev
      libcmocka-dev libhiredis-dev redis-server nodejs npm curl openssl clang libclang-rt-14-dev
      chromium valgrind libcurl4-openssl-dev
      libsystemd-dev python3 man-db systemd)
missing=()
# The Python SDK's tests (scripts/python-test.sh) use Debian's Python packages: no PyPI here.
pkgs+=(python3 python3-venv python3-pip python3-setuptools python3-wheel python3-httpx
       python3-websockets python3-pytest python3-fastapi python3-uvicorn mypy)
for p in "${pkgs[@]}"; do
    if [ "$p" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
    if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "agentcast needs: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -f tests/package-lock.json ] && [ ! -d tests/node_modules ]; then
    echo "deps: npm ci (tests/)" >&2
    (cd tests && npm ci --no-audit --no-fund --loglevel=error)
fi
