# One image for every CryptoLens component:
#   cryptolens serve fetch|core|alerts   and   cryptolens ui
#   docker build -t cryptolens:dev .
FROM python:3.11-slim

LABEL org.opencontainers.image.title="cryptolens" \
      org.opencontainers.image.description="CryptoLens gRPC services (Fetch, Core, Alerts) and Streamlit dashboard"

# HOME=/tmp: the only writable place once Kubernetes mounts the root filesystem read-only
# (an emptyDir at /tmp); Streamlit and pip caches go there.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY gen ./gen
COPY services ./services
COPY ui ./ui
# Install into site-packages, then drop the build tree so the image holds one copy of the code.
RUN pip install --no-cache-dir . \
    && cd / \
    && rm -rf /src \
    && groupadd --gid 10001 cryptolens \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin cryptolens

WORKDIR /tmp
USER 10001:10001
# gRPC: fetch 50051, core 50052, alerts 50053; /metrics: 9101-9103; dashboard: 8501.
EXPOSE 50051 50052 50053 9101 9102 9103 8501
ENTRYPOINT ["cryptolens"]
CMD ["--help"]
