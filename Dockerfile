# The tunetext prediction service for one finished run, on CPU.
#
#   docker build -t tunetext .
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/runs/spam:/model:ro" tunetext
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/runs/spam:/model:ro" -e TUNETEXT_API_KEY=... tunetext --workers 2
#
# The run directory is mounted at /model (or copied in, see docs/serving.md). Arguments after the image
# name go to `tunetext serve`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

# The CPU build of the torch that pyproject.toml pins, first and on its own layer: the default wheel
# brings gigabytes of CUDA libraries.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY tunetext ./tunetext
RUN pip install . && useradd --create-home --uid 10001 tunetext

USER tunetext
EXPOSE 8000
# Inside the container the service must listen on every interface for `-p` to reach it; publish it on
# the host's loopback (as above) unless it is meant to be reachable from elsewhere.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["tunetext", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
