#!/usr/bin/env bash
# Set up everything kgw needs on a fresh Debian/Ubuntu machine with Python 3.11+:
# Debian packages (as root or with sudo) and a virtualenv in .venv with pinned
# Python packages. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)       # sipp: independent SIP peer in the tests
command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)         # ffmpeg/ffprobe: independent MPEG-PS writer/reader in the tests
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need_apt+=(fonts-wqy-microhei)  # Chinese names on simulated video
[ -x /usr/bin/chromium ] || need_apt+=(chromium)               # headless browser for the web-console test
[ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)           # MQTT broker: alarm tests start their own on a loopback port
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)  # PostgreSQL: store tests and `kgw demo --gateways N` start their own
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)  # promtool: the tests validate the alerting rules with it
# GStreamer's RTSP server (system Python + gi): the tests' and simulators' RTSP cameras (simulators/rtsp_server.py)
/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" >/dev/null 2>&1 \
  || need_apt+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"kgw needs Python 3.11 or newer, found {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.kgw-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,fast]'
  touch "$stamp"
fi
