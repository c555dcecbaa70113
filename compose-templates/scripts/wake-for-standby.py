# Runs in the leader's Patroni container while a new (or restored) cluster's replicas start:
# SECONDS. Patroni's leader picks its synchronous standby only in its HA loop, up to a
# `loop_wait` after a replica's Patroni first reports running: this watches the cluster every
# 0.1 s and wakes the leader's loop (an unchanged PATCH /config) as soon as one does, again every
# 3 s until the standby is recorded. Prints `recorded` then, or `no leader` / `limit` when it
# gives up. The basic-auth credentials are read from patroni.yml here, never passed in.
import base64, json, sys, time, urllib.request, yaml

with open('/etc/pgctl/patroni.yml') as f:
    auth = yaml.safe_load(f)['restapi']['authentication']
token = base64.b64encode(('%s:%s' % (auth['username'], auth['password'])).encode()).decode()


def call(method, path, body=None):
    req = urllib.request.Request('http://127.0.0.1:8008' + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={'Authorization': 'Basic ' + token, 'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read().decode() or 'null')


deadline = time.monotonic() + float(sys.argv[1])
woken = None
while time.monotonic() < deadline:
    try:
        members = call('GET', '/cluster').get('members', [])
    except Exception:
        time.sleep(0.1)
        continue
    roles = [m.get('role') for m in members]
    if 'sync_standby' in roles:
        print('recorded')
        sys.exit(0)
    if not any(r in ('leader', 'master', 'primary') for r in roles):
        print('no leader')
        sys.exit(0)
    ready = any(m.get('role') == 'replica' and m.get('state') in ('running', 'streaming') for m in members)
    if ready and (woken is None or time.monotonic() - woken > 3):
        try:
            call('PATCH', '/config', {'ttl': call('GET', '/config')['ttl']})
            woken = time.monotonic()
        except Exception:
            pass
    time.sleep(0.1)
print('limit')
