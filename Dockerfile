# tokensmith: one uvicorn worker per container; scale with replicas (deploy/ has Kubernetes manifests).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/tokensmith --create-home tokensmith
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENV TOKENSMITH_DATA_DIR=/var/lib/tokensmith \
    TOKENSMITH_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8000
# /healthz: the process is up; /readyz: the database answers and is migrated.
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
ENTRYPOINT ["tokensmith"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
