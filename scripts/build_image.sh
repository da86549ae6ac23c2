#!/usr/bin/env bash
# Builds the sandbox image (grader-harness:latest) from the project's Dockerfile on a machine
# that reaches package registries but no image registry: the base image is a Debian root
# filesystem made here by debootstrap, and torch comes from wheels passed in the build context.
# With a registry, plain `docker build -t grader-harness:latest .` uses the CUDA PyTorch base.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-grader-harness:latest}
BASE_IMAGE=${BASE_IMAGE:-grader-base:bookworm}
ROOTFS=${ROOTFS:-$PWD/build/rootfs}

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
        rm -rf "$ROOTFS"
        mkdir -p "$(dirname "$ROOTFS")"
        debootstrap --variant=minbase --include=python3,python3-venv bookworm "$ROOTFS"
    fi
    tar -C "$ROOTFS" -c . | docker import - "$BASE_IMAGE"
fi

# pip takes torch from this machine's wheel cache when it has one; the wheels then enter
# the image through the build context instead of being downloaded inside the build.
python3 -m pip download -q --disable-pip-version-check --only-binary=:all: -d image/wheels \
    -r image/requirements-harness.txt -r image/requirements-torch.txt

DOCKER_BUILDKIT=0 docker build -q --network host --build-arg BASE="$BASE_IMAGE" --build-arg WITH_TORCH=1 \
    -t "$IMAGE" .
echo "built $IMAGE"
