# Runs in a replica's Patroni container just before the whole cluster is stopped and its
# containers removed (a restore, `remove`): tags the member nofailover and nosync in its
# patroni.yml and reloads Patroni, so that all members can stop at once. Without the tags a
# replica could take over from a leader stopping at the same moment, and a synchronous standby
# going down waits for the leader to release it (Patroni looks every 2 s). Prints `tagged` once
# the member publishes both tags (within 5 s), `not tagged` otherwise. The file dies with the
# container: a member that is only stopped (`down`) never gets here.
import base64, json, re, sys, time, urllib.request, yaml

PATH = '/etc/pgctl/patroni.yml'
with open(PATH) as f:
    text = f.read()
for tag in ('nofailover', 'nosync'):
    text, n = re.subn(r'^(  %s:).*$' % tag, r'\1 true', text, flags=re.M)
    if n == 0:
        text = re.sub(r'^tags:\n', 'tags:\n  %s: true\n' % tag, text, count=1, flags=re.M)
config = yaml.safe_load(text)
if not (config.get('tags', {}).get('nofailover') is True and config['tags'].get('nosync') is True):
    print('not tagged: no tags section in ' + PATH)
    sys.exit(0)
with open(PATH, 'w') as f:
    f.write(text)

auth = config['restapi']['authentication']
token = base64.b64encode(('%s:%s' % (auth['username'], auth['password'])).encode()).decode()


def call(method, path, body=None):
    req = urllib.request.Request('http://127.0.0.1:8008' + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={'Authorization': 'Basic ' + token, 'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()


# Patroni reloads at its next loop, which on a replica runs when the leader next writes to the
# DCS: pgctl wakes the leader's loop meanwhile.
try:
    call('POST', '/reload')
except Exception as e:
    print('not tagged: reload failed: %s' % e)
    sys.exit(0)
# The tags as the member publishes them in the DCS (once reloaded): /cluster reads the DCS only,
# where /patroni would wait on PostgreSQL.
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    try:
        members = json.loads(call('GET', '/cluster')).get('members', [])
    except Exception:
        members = []
    tags = next((m.get('tags', {}) for m in members if m.get('name') == config['name']), {})
    if tags.get('nofailover') is True and tags.get('nosync') is True:
        print('tagged')
        sys.exit(0)
    time.sleep(0.1)
print('not tagged: Patroni did not publish the tags within 5 s')
