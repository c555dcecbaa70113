#!/usr/bin/env bash
# Installs what pgctl's demo and tests need on a Debian/Ubuntu machine, and starts Docker.
# Idempotent: installs only what is missing; starts dockerd only if it does not answer.
# Must run as root (apt-get, dockerd, mmdebstrap).
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-deps.sh: run as root (it installs packages and starts the Docker engine)" >&2
  exit 1
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# The e2e tests sign S3 requests with curl (--aws-sigv4) to prove what each key may do.
command -v curl >/dev/null 2>&1 || need+=(curl)
# test.sh checks every shell script with shellcheck; demo.sh reads pgctl's JSON with jq.
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v jq >/dev/null 2>&1 || need+=(jq)
# The e2e tests check `pgctl compose export` files with docker-compose and run one.
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" ca-certificates >/dev/null
fi

# Start the engine if it does not answer: systemd where it runs, else dockerd directly
# (containers and CI runners usually have no init system).
if ! docker info >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    systemctl start docker || true
  fi
fi
if ! docker info >/dev/null 2>&1; then
  # A previous dockerd that died leaves a pid file that stops the next one from starting.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  echo "starting dockerd (log: /var/log/pgctl-dockerd.log)"
  nohup dockerd >/var/log/pgctl-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
if ! docker info >/dev/null 2>&1; then
  echo "install-deps.sh: the Docker engine did not start; last lines of its log:" >&2
  tail -n 20 /var/log/pgctl-dockerd.log >&2 || true
  exit 1
fi
echo "docker engine: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
