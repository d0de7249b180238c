#!/bin/sh
# Create the secrets docker-compose.yml reads (once, before `docker compose up`): a random
# password per file in ./secrets (mode 600). Existing files are kept, so re-running is safe.
#   device_password        what devices (and the simulator) register with at the gateways
#   <gateway>_upper_<platform>   each gateway's own credentials at each upper platform (2 x 18)
#   mqtt_gateway, mqtt_police   the broker's two users (gateways publish, police reads)
#   postgres_password      the database user kgw's password (PostgreSQL and both gateways)
#   metrics_token          the token Prometheus scrapes /metrics with (metrics-only)
#   grafana_admin          Grafana's admin password
# ./.env gets KGW_METRICS_TOKEN_SHA256: the gateways accept the metrics token by its SHA-256.
set -eu
cd "$(dirname "$0")/.."
umask 077
mkdir -p secrets
make_secret() {
    [ -s "secrets/$1" ] && return 0
    head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "secrets/$1"
    echo "created secrets/$1"
}
make_secret device_password
make_secret mqtt_gateway
make_secret mqtt_police
make_secret postgres_password
make_secret metrics_token
make_secret grafana_admin
for gateway in gateway-a gateway-b; do
    for name in municipal police district-120101 district-120102 district-120103 district-120104 \
        district-120105 district-120106 district-120110 district-120111 district-120112 district-120113 \
        district-120114 district-120115 district-120116 district-120117 district-120118 district-120119; do
        make_secret "${gateway}_upper_$name"
    done
done
digest=$(tr -d '\n' < secrets/metrics_token | sha256sum | cut -d' ' -f1)
touch .env
grep -v '^KGW_METRICS_TOKEN_SHA256=' .env > .env.new || true
echo "KGW_METRICS_TOKEN_SHA256=$digest" >> .env.new
mv .env.new .env
