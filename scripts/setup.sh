#!/usr/bin/env bash
# Installs what the grader needs on Debian 12 (as root, or with sudo): the system packages of
# the bubblewrap sandbox and of PDF rendering, then a virtualenv in .venv holding the grader and
# its dependencies at exactly the versions of requirements.lock.
#   --data PATH  records where CIFAR-10 is (`grader config data_dir PATH`), so that
#             `grader run SUBMISSION` needs no --data-dir.
#   --dev     also what the tests need: their Python tools (the lock's dev and ray extras),
#             chromium (the browser test of index.html), poppler-utils (PDF text) and the JUnit
#             schema the tests check junit.xml against.
#   --docker  also installs and starts a Docker daemon and builds the sandbox image
#             (scripts/build_image.sh), for the Docker backend and its tests, and sudo,
#             which the GitHub Action's steps call as written (tests/test_ci.py).
#   --fresh   with --docker: first remove what an earlier image build left (the images, the
#             Debian root filesystem, the downloaded wheels), so the image is built from
#             nothing, as on a new machine (.ci/run does this on every run).
#   --rubric FILE  also install the rubric's `packages:` for student models, into .venv (the
#             bubblewrap sandbox runs it) and, with --docker, into the image.
set -euo pipefail
cd "$(dirname "$0")/.."

with_docker=0
with_dev=0
data=""
build_args=()
rubrics=()
while [ $# -gt 0 ]; do
    case "$1" in
        --docker) with_docker=1 ;;
        --dev) with_dev=1 ;;
        --data) data="${2:?--data needs the path of CIFAR-10}"; shift ;;
        --fresh) build_args+=(--fresh) ;;
        --rubric) rubrics+=("${2:?--rubric needs a rubric file}"); build_args+=(--rubric "$2"); shift ;;
        *) echo "usage: bash scripts/setup.sh [--data PATH] [--dev] [--docker [--fresh]] [--rubric FILE]..." >&2
           exit 2 ;;
    esac
    shift
done
if [ -n "$data" ] && [ ! -e "$data" ]; then
    echo "--data $data: no such file or folder; give CIFAR-10's tarball or folder" >&2
    exit 2
fi
if [[ " ${build_args[*]-} " == *" --fresh "* ]] && [ $with_docker = 0 ]; then
    echo "--fresh rebuilds the Docker image: give --docker too" >&2
    exit 2
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
step() { echo "setup: $(date +%T) $*"; }

APT_PACKAGES=(bubblewrap libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core)
[ $with_dev = 1 ] && APT_PACKAGES+=(poppler-utils chromium)
[ $with_docker = 1 ] && APT_PACKAGES+=(docker.io debootstrap sudo)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
extras=""
[ $with_dev = 1 ] && extras="[dev,ray]"
step "pip install the grader$extras into .venv, at the versions of requirements.lock"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The grader itself, editable, with its dependencies constrained to the lock's exact versions
# (bash scripts/lock.sh regenerates the lock).
.venv/bin/pip install -q --disable-pip-version-check -c requirements.lock -e ".$extras"
if [ ${#rubrics[@]} -gt 0 ]; then
    mapfile -t extra < <(.venv/bin/python -m grader.packages "${rubrics[@]}")
    if [ ${#extra[@]} -gt 0 ]; then
        step "pip install the rubrics' packages: ${extra[*]}"
        .venv/bin/pip install -q --disable-pip-version-check -c requirements.lock "${extra[@]}"
    fi
fi
if [ -n "$data" ]; then
    .venv/bin/grader config data_dir "$(realpath "$data")"
fi

# Jenkins xUnit's JUnit schema, the one pytest checks its own junit.xml against: taken from
# pytest's source release on PyPI (the wheel leaves it out).
JUNIT_XSD=.venv/share/junit/junit-10.xsd
PYTEST_SDIST=pytest-$(sed -n 's/^pytest==//p' requirements.lock)
if [ $with_dev = 1 ] && [ ! -s "$JUNIT_XSD" ]; then
    tmp=$(mktemp -d)
    .venv/bin/pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" "${PYTEST_SDIST/-/==}"
    mkdir -p "$(dirname "$JUNIT_XSD")"
    tar -xzf "$tmp/$PYTEST_SDIST.tar.gz" -O "$PYTEST_SDIST/testing/example_scripts/junit-10.xsd" > "$JUNIT_XSD.part"
    mv "$JUNIT_XSD.part" "$JUNIT_XSD"
    rm -rf "$tmp"
fi

if [ $with_docker = 1 ]; then
    if ! $sudo_cmd docker info >/dev/null 2>&1; then
        step "starting dockerd"
        $sudo_cmd sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
        for _ in $(seq 60); do $sudo_cmd docker info >/dev/null 2>&1 && break; sleep 1; done
        $sudo_cmd docker info >/dev/null || { echo "dockerd did not start: see /var/log/dockerd.log"; exit 1; }
    fi
    $sudo_cmd bash scripts/build_image.sh "${build_args[@]}"
fi
step "done: .venv/bin/grader --help"
