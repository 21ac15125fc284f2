# alzmri serve in a container: CPU only, pinned, runs as a non-root user, with a health check.
#   docker build -t alzmri .
#   docker run --rm -p 8000:8000 -e ALZMRI_TOKEN=$(openssl rand -hex 16) \
#       -v $PWD/runs/RUN/checkpoints:/models:ro alzmri /models/best-loss.ckpt --host 0.0.0.0
# See README.md, "Docker". Not built in this project's CI (no Docker there): the test suite checks
# this file's pins and runs its health-check command against a live server instead.
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/alzmri
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# torch first, from PyTorch's CPU index: PyPI's Linux wheel of torch would bring GBs of CUDA libraries.
RUN /opt/alzmri/bin/pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && /opt/alzmri/bin/pip install -c constraints.txt . \
 && /opt/alzmri/bin/pip install --no-deps -c constraints.txt "deepbet==1.0.2" \
 && if /opt/alzmri/bin/pip list | grep -qiE '^(nvidia-|triton )'; then echo "CUDA packages were pulled in; check the pins" >&2; exit 1; fi

FROM python:3.11.7-slim-bookworm
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin alzmri
COPY --from=build /opt/alzmri /opt/alzmri
ENV PATH=/opt/alzmri/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001
WORKDIR /home/alzmri
EXPOSE 8000
# /api/health needs no token; the port is the one CMD listens on (change both together).
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["alzmri", "serve"]
CMD ["/models/model.ckpt", "--host", "0.0.0.0", "--port", "8000"]
