#!/bin/bash
# Garage on 127.0.0.1:3900 and nginx terminating TLS on 443; the container ends when either does.
set -euo pipefail
mkdir -p /var/lib/garage/meta /var/lib/garage/data
garage -c /etc/garage.toml server &
nginx -c /etc/nginx/pgctl-s3.conf -g 'daemon off;' &
wait -n
echo "lab s3: a service exited" >&2
exit 1
