#!/bin/sh
# The pg_isready of Patroni's bin_dir (/usr/lib/pgctl/postgresql/<major>/bin, where every other
# program is a link to Debian's). While PostgreSQL starts, Patroni runs pg_isready and, if the
# server still rejects connections, looks again only a second later: each member's start was
# seen up to a second late. This one looks every 50 ms for up to a second while the server
# is starting, then answers as pg_isready does: while it rejects connections (starting, or
# replaying toward consistency), or gives no answer while a postmaster runs (it does not listen
# yet). An accepting server, or no answer with no postmaster, is reported at once.
real=/usr/lib/postgresql/$(basename "$(dirname "$(dirname "$0")")")/bin/pg_isready
n=0
while [ "$n" -lt 20 ]; do
  "$real" -q "$@"
  case $? in
    1) ;;
    2) pgrep -x postgres >/dev/null || break ;;
    *) break ;;
  esac
  sleep 0.05
  n=$((n + 1))
done
exec "$real" "$@"
