# syntax=docker/dockerfile:1
# The adapter sidecar (`tpa run --cluster`). Build from the repository root:
#   docker build -f k8s/images/adapter.Dockerfile -t tpa-adapter:0.1.0 .
# It needs the model configs (config.pbtxt, not the weights) and each pipeline's accuracy and
# profiles; the pipeline spec itself is mounted from a ConfigMap over ensembles/<P>/pipeline.yaml.
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app
WORKDIR /app
COPY requirements.lock /app/requirements.lock
RUN pip install -r requirements.lock
COPY adapter/ /app/adapter/
COPY model_repository/ /app/model_repository/
COPY ensembles/ /app/ensembles/

USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["python", "-m", "adapter"]
CMD ["run", "--help"]
