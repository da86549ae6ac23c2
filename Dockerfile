# The image student code runs in (grader's Docker sandbox backend).
#
# Production: a public CUDA PyTorch image, which already holds torch and torchvision:
#   docker build -t grader-harness:latest .
# Machines without a registry: a local base without torch, wheels from the build context:
#   scripts/build_image.sh   (builds a Debian base, downloads wheels once, then builds this file)
ARG BASE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

FROM ${BASE} AS venv
# "1" when the base has no torch: install the pinned torch + torchvision wheels too.
ARG WITH_TORCH=0
COPY image/requirements-harness.txt image/requirements-torch.txt /tmp/req/
# Wheels in image/wheels (scripts/build_image.sh fills it) are used instead of downloading.
COPY image/wheels/ /tmp/wheels/
RUN python3 -m venv --system-site-packages /opt/venv \
 && reqs="-r /tmp/req/requirements-harness.txt" \
 && if [ "$WITH_TORCH" = "1" ]; then reqs="$reqs -r /tmp/req/requirements-torch.txt"; fi \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --find-links /tmp/wheels $reqs

FROM ${BASE}
COPY --from=venv /opt/venv /opt/venv
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
