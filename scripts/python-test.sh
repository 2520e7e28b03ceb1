#!/usr/bin/env bash
# The Python SDK's checks (clients/python): a virtual environment under build/pyenv made
# from Debian's interpreter with Debian's packages (--system-site-packages: PyPI is not
# reachable here, see clients/python/README.md), the pinned versions checked offline, the
# SDK installed into it (editable, offline), mypy --strict over the SDK, its tests and the
# FastAPI example, then pytest against the real daemon ($AGENTCAST_BIN). Skipped tests are
# listed with their reason (-rs); the run fails when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

export AGENTCAST_BIN="${AGENTCAST_BIN:-$PWD/build/agentcastd}"
PY=/usr/bin/python3
VENV=build/pyenv
REQ=clients/python/requirements-debian12.txt

if [ ! -x "$AGENTCAST_BIN" ]; then
    echo "python-test: no daemon at $AGENTCAST_BIN (run make first)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "python-test: creating $VENV from $PY (Debian's packages)" >&2
    "$PY" -m venv --system-site-packages "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# Succeeds only when every pinned version is the one installed: with --no-index pip can
# fetch nothing, so a different version is an error naming the requirement.
if ! "${pip[@]}" install --no-index --no-deps -r "$REQ"; then
    echo "python-test: the installed Debian packages differ from $REQ (scripts/deps.sh installs them)" >&2
    exit 1
fi
"${pip[@]}" install --no-index --no-deps --no-build-isolation -e clients/python

echo "python-test: mypy --strict (clients/python/pyproject.toml)" >&2
(cd clients/python && "../../$VENV/bin/python" -m mypy --cache-dir ../../build/mypy-cache)

echo "python-test: pytest against $AGENTCAST_BIN" >&2
exec timeout --kill-after=10 "${PYTHON_TEST_TIMEOUT:-600}" "$VENV/bin/python" -m pytest \
    -rs -p no:cacheprovider clients/python/tests
