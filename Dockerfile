# kgw: the gateway, the platforms and the simulators share one image (docker-compose.yml).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-wqy-microhei \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kgw
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY simulators ./simulators
COPY platform ./platform
RUN pip install --no-cache-dir '.[fast]'
RUN useradd --system --home /var/lib/kgw kgw && mkdir -p /var/lib/kgw && chown kgw /var/lib/kgw
USER kgw
WORKDIR /var/lib/kgw
ENTRYPOINT ["kgw"]
