#!/bin/sh
# dockerd with mutual TLS on 2376; the certificates are uploaded by `pgctl lab up` before start.
set -eu
for f in ca.pem server-cert.pem server-key.pem; do
  [ -f "/etc/docker/tls/$f" ] || { echo "lab host: /etc/docker/tls/$f missing" >&2; exit 1; }
done
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
exec dockerd \
  --host=unix:///var/run/docker.sock \
  --host=tcp://0.0.0.0:2376 \
  --tlsverify \
  --tlscacert=/etc/docker/tls/ca.pem \
  --tlscert=/etc/docker/tls/server-cert.pem \
  --tlskey=/etc/docker/tls/server-key.pem \
  --storage-driver=overlay2
