# One image for every CryptoLens component:
#   cryptolens serve fetch|core|alerts   and   cryptolens ui
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY gen ./gen
COPY services ./services
COPY ui ./ui
RUN pip install --no-cache-dir . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin cryptolens

USER 10001
EXPOSE 50051 50052 50053 9101 9102 9103 8501
ENTRYPOINT ["cryptolens"]
CMD ["--help"]
