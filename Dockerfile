# syntax=docker/dockerfile:1
# The app image: the worker (`python worker.py`), the agent (`python -m agent start`) and the
# sandbox (`python -m sandbox`) all run from it; docker-compose.yml picks the command.
ARG PYTHON_VERSION=3.11

# --- build: a virtualenv with the dependencies from pyproject.toml ------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install -r requirements.txt

# --- runtime: the venv, the code, a non-root user, the agent's model files ----------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# libportaudio2: sounddevice, which livekit-agents imports for its console mode.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libportaudio2 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
    && mkdir -p /data \
    && chown app:app /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    HF_HOME=/home/app/.cache/huggingface \
    DATA_DIR=/data
WORKDIR /app
COPY --chown=app:app contracts ./contracts
COPY --chown=app:app integrations ./integrations
COPY --chown=app:app activities ./activities
COPY --chown=app:app workflows ./workflows
COPY --chown=app:app handoff ./handoff
COPY --chown=app:app agent ./agent
COPY --chown=app:app sandbox ./sandbox
COPY --chown=app:app config ./config
COPY --chown=app:app operators ./operators
COPY --chown=app:app devtools ./devtools
COPY --chown=app:app worker.py ./
USER app
# Bytecode now, as PYTHONDONTWRITEBYTECODE stops imports writing it: Temporal's workflow sandbox
# re-imports the workflow module on every run and would otherwise compile it each time.
RUN python -m compileall -q contracts integrations activities workflows handoff agent sandbox \
        config operators devtools worker.py
# Models (VAD, turn detection) are fetched now, so nothing downloads when a call starts.
RUN python -m agent download-files
VOLUME ["/data"]
# 8081: the agent's health endpoint; 9464: worker metrics; 8900: the sandbox.
EXPOSE 8081 9464 8900
CMD ["python", "worker.py"]
