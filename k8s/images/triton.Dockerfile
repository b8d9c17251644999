# syntax=docker/dockerfile:1
# Triton serving the text_search variants and ensemble (python backend), on NVIDIA's image.
# Build from the repository root, after `make models` has fetched and verified the weights:
#   docker build -f k8s/images/triton.Dockerfile -t tpa-triton:0.1.0 .
# The same image runs on CPU and GPU nodes (the python-backend models run on the CPU either way;
# GPU nodes matter once GPU variants are added). Triton 25.01 is 2.54; the local default is
# 2.51 (nvidia-pytriton), and the repository API and flags used here are the same in both.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3
FROM ${TRITON_IMAGE}

# The backends run on the image's own Python: the stub is built for it. Fail the build, not
# the pods, if a different base brings another Python than the wheels below were checked for.
RUN python3 -c "import sys; v = sys.version_info[:2]; assert v == (3, 12), f'expected Python 3.12 in the Triton image, got {v}'"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONPATH=/opt/tpa \
    OMP_NUM_THREADS=1
COPY k8s/images/triton-requirements.txt /opt/tpa/requirements.txt
RUN python3 -m pip install -r /opt/tpa/requirements.txt

# model.py files import the engine code from the adapter package (adapter/serving/backends).
COPY adapter/ /opt/tpa/adapter/
COPY model_repository/ /opt/tpa/model_repository/
COPY ensembles/ /opt/tpa/ensembles/
RUN test -n "$(find /opt/tpa/model_repository -path '*/weights/*' -type f | head -1)" \
    || { echo "no weights under model_repository/: run 'make models' before building"; exit 1; }
# Bytecode now, not at first load: a stub writing __pycache__ into a version folder makes Triton
# take the model for modified and reload it from disk, dropping the adapter's config override.
RUN python3 -m compileall -q /opt/tpa/model_repository /opt/tpa/adapter

EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/opt/tpa/model_repository", \
     "--model-repository=/opt/tpa/ensembles", "--model-control-mode=explicit", "--load-model=*"]
