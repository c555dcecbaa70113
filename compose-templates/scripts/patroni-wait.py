# Runs in a Patroni container: waits until its Patroni reports PostgreSQL running (`running`),
# holds the leader lock with PostgreSQL running (`leader`), or has left its HA loop (`stopped`:
# its REST API refuses connections, soon after SIGTERM; a synchronous standby's only once its
# leader has released it), looking every
# 0.1 s (0.02 s for `stopped`) for up to SECONDS. Prints `ready`, or `limit` when the time runs
# out. One exec instead of one per look: a look from outside costs an exec (0.1-0.3 s on a busy
# engine), and a start was seen that late.
# The leader is read from /cluster (the DCS: the lock, and the state the member published):
# /patroni asks PostgreSQL itself, which right after a bootstrap answers only a second or two
# later, and reports a primary before it holds the lock.
import json, socket, sys, time, urllib.request, yaml

seconds, want = float(sys.argv[1]), sys.argv[2]
with open('/etc/pgctl/patroni.yml') as f:
    name = yaml.safe_load(f)['name']
# As member::is_leader_role; a standby leader's state is `streaming` in newer Patroni releases.
LEADER_ROLES = ('leader', 'master', 'primary', 'standby_leader')
RUNNING = ('running', 'streaming')


def get(path):
    try:
        with urllib.request.urlopen('http://127.0.0.1:8008' + path, timeout=5) as r:
            return json.loads(r.read().decode())
    except Exception as e:
        # /patroni answers 503, with the same body, while PostgreSQL is not running.
        try:
            return json.loads(e.read().decode()) if hasattr(e, 'read') else {}
        except Exception:
            return {}


def api_down():
    try:
        socket.create_connection(('127.0.0.1', 8008), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def ready():
    if want == 'stopped':
        return api_down()
    if want == 'leader':
        me = [m for m in get('/cluster').get('members', []) if m.get('name') == name]
        return bool(me) and me[0].get('role') in LEADER_ROLES and me[0].get('state') in RUNNING
    return get('/patroni').get('state') == 'running'


deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    if ready():
        print('ready')
        sys.exit(0)
    time.sleep(0.02 if want == 'stopped' else 0.1)
print('limit')
