#!/usr/bin/env bash
# Prepares a real host for pgctl (what the Compose deployment's Ansible playbooks did), run on
# the host as root, once or again (idempotent: nothing is restarted when nothing changed):
#   1. installs Docker Engine from the distribution (Debian/Ubuntu `docker.io`) if missing;
#   2. turns on mutual TLS on tcp port 2376 with the certificates `pgctl init --host-certs HOST`
#      wrote (ca.pem, server-cert.pem, server-key.pem): only clients with a certificate of that
#      CA (pgctl's) reach the engine over the network; the unix socket stays;
#   3. puts the cluster's names into /etc/hosts (the `hosts` file next to the certificates),
#      between `# BEGIN pgctl` and `# END pgctl`.
#
#   prepare-host.sh --certs DIR [--port 2376]
#
# DIR is certs/HOST/server from the machine that runs pgctl (copy it with scp -r). The daemon's
# existing /etc/docker/daemon.json keys are kept (merged with python3, refused without it).
set -euo pipefail

CERTS="" PORT=2376
while [ $# -gt 0 ]; do
  case $1 in
    --certs) CERTS=${2:?--certs needs a directory}; shift 2 ;;
    --port) PORT=${2:?--port needs a number}; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "prepare-host.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "prepare-host.sh: run as root" >&2; exit 1; }
[ -n "$CERTS" ] || { echo "prepare-host.sh: --certs DIR is required (from \`pgctl init --host-certs HOST\`)" >&2; exit 2; }
for f in ca.pem server-cert.pem server-key.pem; do
  [ -s "$CERTS/$f" ] || { echo "prepare-host.sh: $CERTS/$f is missing: run \`pgctl init --host-certs HOST\` and copy certs/HOST/server here" >&2; exit 2; }
done

# 1. Docker Engine from the distribution.
if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io ca-certificates >/dev/null
fi

# 2. The certificates and the daemon configuration.
TLS=/etc/docker/pgctl-tls
changed=0
install -d -m 0700 "$TLS"
for f in ca.pem server-cert.pem server-key.pem; do
  mode=0644
  [ "$f" = server-key.pem ] && mode=0600
  if ! cmp -s "$CERTS/$f" "$TLS/$f"; then
    install -m "$mode" "$CERTS/$f" "$TLS/$f"
    changed=1
  fi
done
DAEMON=/etc/docker/daemon.json
mkdir -p /etc/docker
want='{"hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:'"$PORT"'"], "tls": true, "tlscacert": "'"$TLS"'/ca.pem", "tlscert": "'"$TLS"'/server-cert.pem", "tlskey": "'"$TLS"'/server-key.pem", "tlsverify": true}'
current=$(cat "$DAEMON" 2>/dev/null || true)
if [ -z "$current" ]; then
  merged=$want
elif [ "$current" = "$want" ]; then
  merged=$current
else
  # Someone else's settings too: keep them, ours on top (python3 merges JSON; no guessing).
  command -v python3 >/dev/null 2>&1 || { echo "prepare-host.sh: $DAEMON has other settings and python3 is missing to merge them; add these keys by hand: $want" >&2; exit 1; }
  merged=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.update(json.loads(sys.argv[2])); print(json.dumps(d, sort_keys=True))' "$DAEMON" "$want")
fi
if [ "$merged" != "$current" ]; then
  [ -n "$current" ] && cp "$DAEMON" "$DAEMON.before-pgctl"
  printf '%s\n' "$merged" >"$DAEMON"
  changed=1
fi

# The distribution's unit starts dockerd with `-H fd://`, which conflicts with "hosts" above:
# a drop-in starts it without -H, keeping the unit's /etc/default/docker and $DOCKER_OPTS.
if [ -d /run/systemd/system ]; then
  DROPIN=/etc/systemd/system/docker.service.d/pgctl.conf
  unit="[Service]
EnvironmentFile=-/etc/default/docker
ExecStart=
ExecStart=$(command -v dockerd) --containerd=/run/containerd/containerd.sock \$DOCKER_OPTS"
  if [ "$unit" != "$(cat "$DROPIN" 2>/dev/null)" ]; then
    mkdir -p "$(dirname "$DROPIN")"
    printf '%s\n' "$unit" >"$DROPIN"
    systemctl daemon-reload
    changed=1
  fi
fi

running() { [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; }
if [ "$changed" = 1 ] || ! running; then
  echo "starting dockerd with mutual TLS on port $PORT"
  if [ -d /run/systemd/system ]; then
    systemctl enable docker >/dev/null 2>&1 || true
    systemctl restart docker
  else
    # No init system (a container): stop the running dockerd and start it again.
    if running; then
      kill "$(cat /var/run/docker.pid)"
      for _ in $(seq 1 30); do running || break; sleep 1; done
    fi
    rm -f /var/run/docker.pid
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "prepare-host.sh: dockerd did not start; see /var/log/dockerd.log or journalctl -u docker" >&2; exit 1; }
else
  echo "dockerd: mutual TLS on port $PORT already configured; nothing restarted"
fi

# 3. The cluster's names in /etc/hosts, replacing an earlier pgctl block.
if [ -s "$CERTS/hosts" ]; then
  block=$(printf '# BEGIN pgctl\n%s\n# END pgctl' "$(cat "$CERTS/hosts")")
  current=$(sed -n '/^# BEGIN pgctl$/,/^# END pgctl$/p' /etc/hosts)
  if [ "$current" != "$block" ]; then
    rest=$(sed '/^# BEGIN pgctl$/,/^# END pgctl$/d' /etc/hosts)
    # /etc/hosts may be a bind mount (containers): rewrite it in place, never replace it.
    printf '%s\n%s\n' "$rest" "$block" >/etc/hosts
    echo "/etc/hosts: the cluster's names written"
  fi
fi
echo "ready: pgctl reaches this engine at tcp://<address>:$PORT with the client certificate in certs/HOST"
