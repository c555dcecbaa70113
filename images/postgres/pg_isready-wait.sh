#!/bin/sh
# The pg_isready of Patroni's bin_dir (/usr/lib/pgctl/postgresql/<major>/bin, where every other
# program is a link to Debian's). While PostgreSQL starts, Patroni runs pg_isready and, if the
# server still rejects connections, looks again only a second later: each member's start was
# seen up to a second late. This one looks every 50 ms for up to a second while the server
# is starting, then answers as pg_isready does: while it rejects connections (starting, or
# replaying toward consistency), or gives no answer while a postmaster runs (it does not listen
# yet). An accepting server, or no answer with no postmaster, is reported at once.
# (@PG_MAJOR@ is written in by the image build.)
real=/usr/lib/postgresql/@PG_MAJOR@/bin/pg_isready
end=$(($(date +%s%N) + 1000000000))
while [ "$(date +%s%N)" -lt "$end" ]; do
  "$real" -q -t 1 "$@"
  case $? in
    1) ;;
    2) pgrep -x postgres >/dev/null || break ;;
    *) break ;;
  esac
  sleep 0.05
done
exec "$real" "$@"
