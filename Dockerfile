# syntax=docker/dockerfile:1
# Rotor: multi-stage build, runs as a non-root user. In a container, point it at
# your PostgreSQL with DATABASE_URL and give it ROTOR_SECRET and ROTOR_ISSUER (the
# URL clients reach it at, e.g. https://auth.example.com: not the address it binds);
# run `rotor migrate` once (e.g. as a Kubernetes Job) before the first start and
# after each upgrade.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY migrations ./migrations
RUN python -m venv /opt/rotor \
 && /opt/rotor/bin/pip install --upgrade pip \
 && /opt/rotor/bin/pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/rotor/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 rotor \
 && useradd --system --uid 10001 --gid rotor --home-dir /home/rotor --create-home rotor
COPY --from=build /opt/rotor /opt/rotor
USER rotor:rotor
WORKDIR /home/rotor
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status == 200 else 1)"]
CMD ["rotor", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
