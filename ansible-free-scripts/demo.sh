#!/usr/bin/env bash
# The demo: builds pgctl, brings up a lab of 3 simulated hosts (each its own Docker engine)
# and an S3 server, builds the database image offline from Debian packages, and delivers it
# to every host. Re-running continues from whatever an earlier run left.
# `ansible-free-scripts/demo.sh down` removes the lab again.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB_DIR=${LAB_DIR:-demo-lab}

ansible-free-scripts/install-deps.sh
ansible-free-scripts/build-garage.sh
cargo build --release --quiet -p pgctl
PGCTL=$PWD/target/release/pgctl

if [ "${1:-}" = down ]; then
  "$PGCTL" lab down --dir "$LAB_DIR"
  exit 0
fi

"$PGCTL" lab up --dir "$LAB_DIR"
"$PGCTL" image build --source debian --base pgctl/debian:bookworm --without timescaledb,walg,consul --hosts "$LAB_DIR/hosts.toml"
"$PGCTL" image push --hosts "$LAB_DIR/hosts.toml"
"$PGCTL" lab status --dir "$LAB_DIR"
cat <<TXT

The lab is up and every host has the image. Try:
  $PGCTL check --hosts $LAB_DIR/hosts.toml
  $PGCTL image list
  docker --tlsverify -H tcp://172.30.77.11:2376 --tlscacert $LAB_DIR/certs/host1/ca.pem \\
         --tlscert $LAB_DIR/certs/host1/cert.pem --tlskey $LAB_DIR/certs/host1/key.pem images
Remove it all with: ansible-free-scripts/demo.sh down
TXT
