# One image, both entry points: `memoryguard agent` (the DaemonSet) and `memoryguard operator`
# (the Deployment), plus the CLI (`top`, `explain`, ...). Build from the repository root:
#   docker build -t <registry>/memoryguard:0.1.0 .
# Dependencies are pinned exactly (docker/constraints.txt, scripts/lock_image_deps.py); the
# base image by tag here, and by digest too if you add @sha256:... for reproducible rebuilds.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY docker/constraints.txt docker/constraints.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
# A virtualenv at a fixed path, copied whole into the final stage: no compiler, pip cache or
# source tree reaches the image. Bytecode is compiled here because the root filesystem is
# read-only at run time.
ENV PIP_CONSTRAINT=/src/docker/constraints.txt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/memoryguard \
    && /opt/memoryguard/bin/pip install --no-compile . \
    && /opt/memoryguard/bin/python -m compileall -q /opt/memoryguard/lib \
    && /opt/memoryguard/bin/memoryguard --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="memoryguard" \
      org.opencontainers.image.description="Prevents OOM kills: node agent and Kopf operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/memoryguard /opt/memoryguard
ENV PATH=/opt/memoryguard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root by default: the operator needs no privilege. The agent's pod sets runAsUser: 0
# because writing memory.reclaim needs the owner of host cgroup files (see the chart's values).
USER 65532:65532
EXPOSE 9732 9733
ENTRYPOINT ["memoryguard"]
CMD ["--help"]
