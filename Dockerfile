# research-agent: the bot with the terminal chat as the default when no platform token is set.
#   docker build -t research-agent .
#   docker run --rm -it -e OLLAMA_HOST=http://host.docker.internal:11434 \
#       -e DISCORD_TOKEN -v research-data:/app/data research-agent
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

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
