#!/usr/bin/env bash
# Builds the sandbox image (grader-harness:latest) from the project's Dockerfile on a machine
# that reaches package registries but no image registry: the base image is a Debian 12 root
# filesystem made here by debootstrap, and the packages are wheels downloaded here at the
# versions of requirements.lock, which pip inside the build fetches from a web server on this
# machine's loopback (so gigabytes of wheels never enter the build context or a layer).
# With a registry, plain `docker build -t grader-harness:latest .` builds on python:3.11-slim.
#   --fresh  first remove the image, the base image, the root filesystem and the wheels, and
#            build without Docker's layer cache: the whole path from nothing, as on a new machine.
#   --rubric FILE  also install the rubric's `packages:` (repeat for several rubrics).
# IMAGE, BASE_IMAGE, ROOTFS and WHEELS say where each goes.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-grader-harness:latest}
BASE_IMAGE=${BASE_IMAGE:-grader-base:bookworm}
ROOTFS=${ROOTFS:-$PWD/build/rootfs}
WHEELS=${WHEELS:-$PWD/build/wheels}
# The wheel server's port: a fixed one keeps the build's cache key (the URL is a build argument).
WHEELS_PORT=${WHEELS_PORT:-47813}
fresh=0
rubrics=()
while [ $# -gt 0 ]; do
    case "$1" in
        --fresh) fresh=1 ;;
        --rubric) rubrics+=("${2:?--rubric needs a rubric file}"); shift ;;
        *) echo "usage: bash scripts/build_image.sh [--fresh] [--rubric FILE]..." >&2; exit 2 ;;
    esac
    shift
done
PYTHON=python3
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
# The rubrics' extra packages (their `packages:`), as pip requirements.
extra=()
if [ ${#rubrics[@]} -gt 0 ]; then
    mapfile -t extra < <("$PYTHON" -m grader.packages "${rubrics[@]}")
fi

step() { echo "build_image: $(date +%T) $*"; }

if [ $fresh = 1 ]; then
    step "removing what earlier builds left: $IMAGE, $BASE_IMAGE, $ROOTFS, $WHEELS"
    for image in "$IMAGE" "$BASE_IMAGE"; do
        if docker image inspect "$image" >/dev/null 2>&1; then docker image rm --force "$image"; fi
    done
    rm -rf "$ROOTFS" "$WHEELS"
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
        step "debootstrap: a Debian 12 root filesystem with Python 3.11 in $ROOTFS"
        rm -rf "$ROOTFS"
        mkdir -p "$(dirname "$ROOTFS")"
        debootstrap --variant=minbase --include=python3,python3-venv bookworm "$ROOTFS"
    fi
    step "docker import: $ROOTFS as $BASE_IMAGE"
    tar -C "$ROOTFS" -c . | docker import - "$BASE_IMAGE"
fi

step "pip download: image/requirements-harness.txt at the versions of requirements.lock into $WHEELS"
"$PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all: -d "$WHEELS" \
    -c requirements.lock -r image/requirements-harness.txt "${extra[@]}"

# Serves $WHEELS on the loopback for as long as the build runs; prints the port it listens on.
port_file=$(mktemp)
"$PYTHON" - "$WHEELS" "$WHEELS_PORT" >"$port_file" 2>/dev/null <<'PY' &
import functools, http.server, sys

handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
try:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), handler)
except OSError:  # the port is taken: any free one (the build then misses its cache)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$port_file"' EXIT
for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.1; done
port=$(cat "$port_file")

step "docker build: $IMAGE on $BASE_IMAGE"
cache=()
[ $fresh = 1 ] && cache=(--no-cache)
DOCKER_BUILDKIT=0 docker build "${cache[@]}" --network host --build-arg BASE="$BASE_IMAGE" \
    --build-arg WHEELS_URL="http://127.0.0.1:$port/" --build-arg EXTRA_PACKAGES="${extra[*]}" -t "$IMAGE" .
step "built $IMAGE"
