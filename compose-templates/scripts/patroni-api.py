# Calls Patroni's REST API from inside the Patroni container: METHOD PATH [JSON BODY].
# Prints the HTTP status on the first line, then the body. The basic-auth credentials are read
# from patroni.yml here, so the password never appears on a command line or in pgctl's memory.
import base64, json, sys, urllib.request, urllib.error, yaml
method, path, body = sys.argv[1], sys.argv[2], sys.argv[3]
with open('/etc/pgctl/patroni.yml') as f:
    auth = yaml.safe_load(f)['restapi']['authentication']
token = base64.b64encode(('%s:%s' % (auth['username'], auth['password'])).encode()).decode()
req = urllib.request.Request('http://127.0.0.1:8008' + path, data=body.encode() if body else None, method=method,
                             headers={'Authorization': 'Basic ' + token, 'Content-Type': 'application/json'})
try:
    with urllib.request.urlopen(req, timeout=120) as r:
        print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
