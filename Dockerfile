# The image student code runs in (grader's Docker sandbox backend): Python 3.11 and the packages
# of image/requirements-harness.txt at exactly the versions of requirements.lock, the ones the
# host's virtualenv holds (tests/sandbox/test_image.py compares them).
#
# Production, with an image registry: a plain Python base, and pip takes the packages from its
# index, PyTorch's CUDA build included (its CUDA libraries come as pip packages, so a GPU needs
# only the NVIDIA container toolkit on the host):
#   docker build -t grader-harness:latest .
# Machines without an image registry: scripts/build_image.sh builds this file on a Debian 12 base
# it makes with debootstrap (Python 3.11 too), and pip installs the wheels the script downloaded
# and serves at WHEELS_URL, on the host's loopback, for the build.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# A folder of wheels served over HTTP; pip then installs from it alone. Empty: pip's own index.
ARG WHEELS_URL=
# Rubrics' `packages:` (pip requirements, space-separated): what a course adds for its models.
ARG EXTRA_PACKAGES=
COPY requirements.lock image/requirements-harness.txt /tmp/req/
# No --system-site-packages: nothing of the base's Python leaks into the harness's versions.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      ${WHEELS_URL:+--no-index --find-links $WHEELS_URL} \
      -c /tmp/req/requirements.lock -r /tmp/req/requirements-harness.txt ${EXTRA_PACKAGES}

# The harness and the modules it shares with the host (jobs mount the checkout's own copy over it).
COPY grader/__init__.py grader/protocol.py grader/files.py /opt/grader/grader/
COPY grader/inside/ /opt/grader/grader/inside/
# Written directly: minimal bases have no useradd.
RUN echo "student:x:10001:10001::/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "student:x:10001:" >> /etc/group \
 && mkdir -p /submission /data /job /out
ENV PYTHONPATH=/opt/grader PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 10001:10001
WORKDIR /submission
CMD ["/opt/venv/bin/python", "-m", "grader.inside", "/job/job.json"]
