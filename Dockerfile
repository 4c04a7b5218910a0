# RIX service image: slim Python, non-root, data directory as a volume, health-checked.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RIX_HOST=0.0.0.0 \
    RIX_PORT=8080 \
    RIX_DATA_DIR=/data \
    RIX_DATABASE_URL=sqlite:////data/rix.db

WORKDIR /opt/rix
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY alembic ./alembic
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home /data rix \
    && mkdir -p /data && chown rix /data

USER rix
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
ENTRYPOINT ["rix"]
CMD ["serve"]
