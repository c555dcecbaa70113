# Runs in the leader's Patroni container while a new (or restored) cluster's replicas start,
# for up to SECONDS. Patroni's leader picks its synchronous standby only in its HA loop, from
# the replicas whose Patroni reports running and that stream from it (pg_stat_replication), up
# to a `loop_wait` after one does: this looks every 0.1 s and wakes the leader's loop (a PATCH
# /config that changes nothing) whenever one more does. A replica that stops streaming and
# starts again counts again: a restored cluster's replica streams the old timeline up to the
# leader's promotion, then reconnects on the new one, and a loop woken in between finds no
# standby (pgctl's own reads wake it later on, if need be). Prints `recorded` once a synchronous
# standby is recorded, or `no leader` / `limit` when it gives up. The basic-auth credentials
# are read from patroni.yml here, never passed in; PostgreSQL is read over its socket as
# postgres (peer authentication).
import base64, json, sys, time, urllib.request, yaml
import psycopg2

with open('/etc/pgctl/patroni.yml') as f:
    auth = yaml.safe_load(f)['restapi']['authentication']
token = base64.b64encode(('%s:%s' % (auth['username'], auth['password'])).encode()).decode()
# As member::is_leader_role (a standby cluster has no synchronous standby to watch for).
LEADER_ROLES = ('leader', 'master', 'primary')


def call(method, path, body=None):
    req = urllib.request.Request('http://127.0.0.1:8008' + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={'Authorization': 'Basic ' + token, 'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read().decode() or 'null')


conn = None


def streaming():
    """The replicas streaming from this leader (None when PostgreSQL cannot be read)."""
    global conn
    try:
        if conn is None:
            conn = psycopg2.connect(host='/var/run/postgresql', dbname='postgres', user='postgres', connect_timeout=2)
            conn.autocommit = True
        with conn.cursor() as c:
            # As Patroni reads it: only a walsender in state `streaming` offers a candidate.
            c.execute("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' AND flush_lsn IS NOT NULL")
            return {r[0] for r in c.fetchall()}
    except Exception:
        conn = None
        return None


deadline = time.monotonic() + float(sys.argv[1])
# The replicas running and streaming at the last look.
ready_before = set()
while time.monotonic() < deadline:
    try:
        members = call('GET', '/cluster').get('members', [])
    except Exception:
        time.sleep(0.1)
        continue
    roles = [m.get('role') for m in members]
    if 'sync_standby' in roles or 'quorum_standby' in roles:
        print('recorded')
        sys.exit(0)
    if not any(r in LEADER_ROLES for r in roles):
        print('no leader')
        sys.exit(0)
    running = {m.get('name') for m in members if m.get('role') == 'replica' and m.get('state') in ('running', 'streaming')}
    streams = streaming()
    if streams is not None:
        running &= streams
    if running - ready_before:
        try:
            call('PATCH', '/config', {'pgctl_wakeup': None})
        except Exception:
            time.sleep(0.1)
            continue
    ready_before = running
    time.sleep(0.1)
print('limit')
