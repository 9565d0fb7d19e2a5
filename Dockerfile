# research-agent. With no chat-platform adapter configured it opens the terminal chat.
#   docker build -t research-agent .
#   docker run --rm -it --add-host=host.docker.internal:host-gateway \
#       -e OLLAMA_HOST=http://host.docker.internal:11434 -v research-data:/app/data research-agent
# SIGTERM (docker stop) drains background saves before exiting.
FROM python:3.11-slim

# HF_HOME on the volume: the embedding model is downloaded once, not on every run.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/app/data/huggingface

WORKDIR /app
RUN useradd --create-home --uid 10001 bot

# A CPU build of torch first, pinned, so sentence-transformers does not pull CUDA wheels.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY bot/ bot/
COPY config.toml .
RUN mkdir -p /app/data && chown bot:bot /app/data
USER bot
VOLUME ["/app/data"]

ENTRYPOINT ["python", "-m", "bot"]
