# The API and the Faust worker (same image, different command) for docker-compose.yml.
# Pinned like every image of the compose file (the native stack's Python is 3.11).
FROM python:3.11.7-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY payments ./payments
COPY cdc ./cdc
COPY api ./api
COPY streams ./streams
COPY connectors ./connectors
COPY gunicorn.conf.py ./
RUN pip install --no-cache-dir -e .
EXPOSE 8000 6066
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "api:create_app()"]
