# Runs in a replica's Patroni container just before the whole cluster is stopped and its
# containers removed (a restore, `remove`): tags the member nofailover and nosync in its
# patroni.yml and reloads Patroni, so that all members can stop at once. Without the tags a
# replica could take over from a leader stopping at the same moment, and a synchronous standby
# going down waits for the leader to release it (Patroni looks every 2 s). Prints `tagged` once
# Patroni reports both tags (within 3 s), `not tagged` otherwise. The file dies with the
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
req = urllib.request.Request('http://127.0.0.1:8008/reload', method='POST', headers={'Authorization': 'Basic ' + token})
try:
    urllib.request.urlopen(req, timeout=5).read()
except Exception as e:
    print('not tagged: reload failed: %s' % e)
    sys.exit(0)
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen('http://127.0.0.1:8008/patroni', timeout=2) as r:
            tags = json.loads(r.read().decode()).get('tags', {})
    except Exception as e:
        tags = json.loads(e.read().decode()).get('tags', {}) if hasattr(e, 'read') else {}
    if tags.get('nofailover') is True and tags.get('nosync') is True:
        print('tagged')
        sys.exit(0)
    time.sleep(0.1)
print('not tagged: Patroni did not report the tags within 3 s')
