#!/usr/bin/env bash
# Make sure a Mosquitto broker answers on 127.0.0.1:${GRUWATCH_BROKER_PORT:-1883}.
# Starts the system one if it is installed but not running; installs it with apt-get when the
# binary is absent (needs root, as on the CI machine). The tests start their own private broker
# from the same binary, so this also guarantees that binary exists.
set -euo pipefail
port="${GRUWATCH_BROKER_PORT:-1883}"

reachable() {
  python3 - "$port" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(1.0)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
sys.exit(0)
PY
}

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "ensure-broker: mosquitto not installed; installing it with apt-get" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q mosquitto mosquitto-clients >&2
fi

if reachable; then
  echo "ensure-broker: broker reachable on 127.0.0.1:$port"
  exit 0
fi

bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
if [ "$port" = "1883" ] && [ -f /etc/mosquitto/mosquitto.conf ]; then
  echo "ensure-broker: starting $bin -d -c /etc/mosquitto/mosquitto.conf" >&2
  "$bin" -d -c /etc/mosquitto/mosquitto.conf || true
else
  echo "ensure-broker: starting $bin -d -p $port" >&2
  "$bin" -d -p "$port" || true
fi
for _ in $(seq 1 50); do
  if reachable; then echo "ensure-broker: broker reachable on 127.0.0.1:$port"; exit 0; fi
  sleep 0.1
done
echo "ensure-broker: could not reach a broker on 127.0.0.1:$port; start one with 'mosquitto -d'" >&2
exit 1
