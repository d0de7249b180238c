#!/bin/sh
# Build Mosquitto's password file from the compose secrets, then run the broker.
# The plaintext never appears on a command line (printf is a shell builtin; -U hashes in place).
set -eu
umask 077
passwd=/mosquitto/data/passwd
printf 'kgw-gateway:%s\npolice:%s\n' "$(cat /run/secrets/mqtt_gateway)" "$(cat /run/secrets/mqtt_police)" > "$passwd"
mosquitto_passwd -U "$passwd"
chown mosquitto:mosquitto "$passwd" 2>/dev/null || true
exec mosquitto -c /mosquitto/config/mosquitto.conf
