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
"$PGCTL" up --hosts "$LAB_DIR/hosts.toml"
"$PGCTL" backup now --hosts "$LAB_DIR/hosts.toml" >/dev/null
"$PGCTL" backup list --hosts "$LAB_DIR/hosts.toml"

# The lab's hosts are hostN at 172.30.77.(10+N); the leader's name is in the status line.
leader=$("$PGCTL" status --hosts "$LAB_DIR/hosts.toml" | sed -n 's/.*leader: host\([0-9]\).*/\1/p' | head -n1)
password=$(sed -n 's/^superuser_password = "\(.*\)"$/\1/p' "$LAB_DIR/secrets.toml")
cat <<TXT

A 3-node PostgreSQL cluster (Patroni + etcd, WAL archived to S3 with pgBackRest) runs in the lab.
Connect to the leader:
  PGPASSWORD='$password' psql -h 172.30.77.1$leader -U postgres
Try:
  $PGCTL status --hosts $LAB_DIR/hosts.toml
  $PGCTL switchover --hosts $LAB_DIR/hosts.toml
  docker stop pgctl-lab-host$leader     # lose the leader's host, watch the failover with status
  docker start pgctl-lab-host$leader    # it rejoins as a replica
Remove it all with: ansible-free-scripts/demo.sh down
TXT
