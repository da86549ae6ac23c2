#!/usr/bin/env bash
# Regenerates requirements.lock from pyproject.toml: the project's dependencies with the ray
# and dev extras, every package pinned exactly, resolved for Python 3.11 on x86_64 Linux (the
# Python of Debian 12 and of the sandbox image). scripts/setup.sh, the Dockerfile, action.yml
# and examples/gitlab-ci.yml all install through this one file.
#   bash scripts/lock.sh                          keep the current pins that pyproject.toml still allows
#   bash scripts/lock.sh --upgrade                take the newest releases pyproject.toml allows
#   bash scripts/lock.sh --upgrade-package numpy  the same for one package
# pip-tools runs in a throwaway virtualenv and resolves with this machine's pip configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PIP_TOOLS=pip-tools==7.6.2
if ! "$PYTHON" -c 'import platform, sys; sys.exit(sys.version_info[:2] != (3, 11) or sys.platform != "linux" or platform.machine() != "x86_64")'; then
    echo "requirements.lock is resolved for Python 3.11 on x86_64 Linux; $PYTHON is not that: set PYTHON=" >&2
    exit 1
fi

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools"
"$tools/bin/pip" install -q --disable-pip-version-check "$PIP_TOOLS"
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$tools/bin/pip-compile" --quiet --extra ray --extra dev \
    --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
    --output-file requirements.lock "$@" pyproject.toml
echo "wrote requirements.lock ($(grep -c '^[A-Za-z0-9]' requirements.lock) packages)"
