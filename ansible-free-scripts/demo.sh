#!/usr/bin/env bash
# The demo: builds pgctl, brings up a lab of 3 simulated hosts (each its own Docker engine)
# and an S3 server, builds the database image offline from Debian packages, delivers it to
# every host, deploys the cluster and takes a backup. Safe to re-run: each step completes what
# an earlier run left (each run takes one more backup).
#
#   ansible-free-scripts/demo.sh         the demo (installs what it needs first)
#   ansible-free-scripts/demo.sh down    removes the demo's lab; installs nothing
#
# LAB_DIR (default demo-lab) and LAB_NAME (default pgctl-lab) choose the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB_DIR=${LAB_DIR:-demo-lab}
LAB_NAME=${LAB_NAME:-pgctl-lab}
PGCTL=${CARGO_TARGET_DIR:-$PWD/target}/release/pgctl
HOSTS=$LAB_DIR/hosts.toml

case ${1:-up} in
  up) ;;
  down)
    # Only the lab goes: no package is installed, no engine started. pgctl is built if it
    # is not there (a `cargo clean` since the demo ran).
    [ -x "$PGCTL" ] || cargo build --release --quiet -p pgctl
    "$PGCTL" lab down --name "$LAB_NAME" --dir "$LAB_DIR"
    exit 0
    ;;
  *)
    echo "usage: $0 [up|down]" >&2
    exit 2
    ;;
esac

ansible-free-scripts/install-deps.sh
ansible-free-scripts/build-garage.sh
ansible-free-scripts/build-go-tools.sh
ARTIFACTS=${PGCTL_ARTIFACTS:-${PGCTL_CACHE:-/var/cache/pgctl}/artifacts}
cargo build --release --quiet -p pgctl

# The lab's stack is Consul + WAL-G with an application host (their binaries are in the
# artifacts directory); the image is built with what its hosts.toml names.
"$PGCTL" lab up --name "$LAB_NAME" --dir "$LAB_DIR" --artifacts "$ARTIFACTS"
dcs=$(sed -n 's/^dcs = "\(.*\)"$/\1/p' "$HOSTS")
engine=$(sed -n 's/^backup_engine = "\(.*\)"$/\1/p' "$HOSTS")
without=timescaledb
[ "$engine" = walg ] || without=$without,walg
[ "$dcs" = consul ] || without=$without,consul
"$PGCTL" image build --source debian --base pgctl/debian:bookworm --artifacts "$ARTIFACTS" --without "$without" --hosts "$HOSTS"
"$PGCTL" image push --hosts "$HOSTS"
"$PGCTL" lab status --name "$LAB_NAME" --dir "$LAB_DIR"
"$PGCTL" up --hosts "$HOSTS"
"$PGCTL" backup now --hosts "$HOSTS" >/dev/null
"$PGCTL" backup list --hosts "$HOSTS"

# The leader's host, then that host's address and container in the lab, as pgctl reports them.
leader_host=$("$PGCTL" status --hosts "$HOSTS" --output json |
  jq -r '. as $s | $s.members[] | select(.name == $s.leader) | .host')
read -r address container < <("$PGCTL" lab status --name "$LAB_NAME" --dir "$LAB_DIR" --output json |
  jq -r --arg h "$leader_host" '.hosts[] | select(.name == $h) | "\(.address) \(.container)"') || true
if [ -z "$leader_host" ] || [ -z "${address:-}" ] || [ -z "${container:-}" ]; then
  echo "demo.sh: no leader's address in \`pgctl status\` and \`pgctl lab status\`; see above" >&2
  exit 1
fi
password=$(sed -n 's/^superuser_password = "\(.*\)"$/\1/p' "$LAB_DIR/secrets.toml")
cat <<TXT

A 3-node PostgreSQL cluster (Patroni + $dcs, WAL archived to S3 with $engine) runs in the lab.
Connect to the leader ($leader_host):
  PGPASSWORD='$password' psql -h $address -U postgres
Try:
  $PGCTL status --hosts $HOSTS
  $PGCTL switchover --hosts $HOSTS
  docker stop $container     # lose the leader's host, watch the failover with status
  docker start $container    # it rejoins as a replica
Remove it all with: ansible-free-scripts/demo.sh down
TXT
