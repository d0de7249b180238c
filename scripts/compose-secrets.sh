#!/bin/sh
# Create the secrets docker-compose.yml reads (once, before `docker compose up`): a random
# password per file in ./secrets (mode 600). Existing files are kept, so re-running is safe.
#   device_password        what devices (and the simulator) register with at the gateway
#   upper_<platform>       the gateway's own credentials at each upper platform (18 of them)
#   mqtt_gateway, mqtt_police   the broker's two users (gateway publishes, police reads)
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
for name in municipal police district-120101 district-120102 district-120103 district-120104 \
    district-120105 district-120106 district-120110 district-120111 district-120112 district-120113 \
    district-120114 district-120115 district-120116 district-120117 district-120118 district-120119; do
    make_secret "upper_$name"
done
