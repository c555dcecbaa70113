# Consul's ACLs for a pgctl cluster, made idempotently on a server (run by `pgctl up` in the
# consul container): policies, the agent and Patroni tokens with the secret ids from
# secrets.toml, and the anonymous token limited to what DNS needs. Default deny stays for
# everything else (the cluster's KV prefix above all). Secrets are read from files that only
# root in the container can read, never from arguments or the environment.
#
#   python3 consul-acl.py MANAGEMENT_TOKEN_FILE ACL_FILE
#   ACL_FILE: {"scope": ..., "agent": SECRET_ID, "patroni": SECRET_ID}
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

API = "http://" + os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500") + "/v1"
ANONYMOUS = "00000000-0000-0000-0000-000000000002"


def call(method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method, headers={"X-Consul-Token": token})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace").strip()


def policy(token, name, description, rules):
    """Creates or updates the policy `name`."""
    body = {"Name": name, "Description": description, "Rules": rules}
    status, found = call("GET", "/acl/policy/name/" + name, token)
    if status == 200:
        status, out = call("PUT", "/acl/policy/" + found["ID"], token, body)
    else:
        status, out = call("PUT", "/acl/policy", token, body)
    if status != 200:
        sys.exit(f"consul: policy {name}: HTTP {status}: {out}")


def accessor_of(secret):
    """A stable accessor id for a secret id, so a re-run finds the token it made."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, "pgctl-consul-token:" + secret))


def token(mgmt, secret, description, policies):
    """Creates (or updates the policies of) the token whose secret id is `secret`."""
    accessor = accessor_of(secret)
    body = {
        "AccessorID": accessor,
        "SecretID": secret,
        "Description": description,
        "Policies": [{"Name": p} for p in policies],
    }
    status, _ = call("GET", "/acl/token/" + accessor, mgmt)
    if status == 200:
        status, out = call("PUT", "/acl/token/" + accessor, mgmt, body)
    else:
        status, out = call("PUT", "/acl/token", mgmt, body)
    if status != 200:
        sys.exit(f"consul: token '{description}': HTTP {status}: {out}")


def main():
    with open(sys.argv[1]) as f:
        mgmt = f.read().strip()
    with open(sys.argv[2]) as f:
        acl = json.load(f)
    scope = acl["scope"]

    # The leader writes the management token into the ACL store shortly after it is elected.
    deadline = time.monotonic() + 60
    while True:
        status, out = call("GET", "/acl/token/self", mgmt)
        if status == 200:
            break
        if time.monotonic() > deadline:
            sys.exit(f"consul: the management token is not accepted after 60 s: HTTP {status}: {out}")
        time.sleep(1)

    policy(mgmt, "pgctl-agent", "Consul agents: register their node, read services",
           'node_prefix "" { policy = "write" }\nservice_prefix "" { policy = "read" }\n')
    # DNS (master.<scope>.service.consul) and `consul members` work without a token; KV does not.
    policy(mgmt, "pgctl-dns", "Anonymous: what DNS lookups need, nothing of the KV store",
           'node_prefix "" { policy = "read" }\nservice_prefix "" { policy = "read" }\n')
    policy(mgmt, f"pgctl-patroni-{scope}", f"Patroni of cluster {scope}: its KV prefix, service and sessions",
           f'key_prefix "service/{scope}/" {{ policy = "write" }}\n'
           f'service "{scope}" {{ policy = "write" }}\n'
           'session_prefix "" { policy = "write" }\n'
           'node_prefix "" { policy = "read" }\n'
           'agent_prefix "" { policy = "read" }\n')
    token(mgmt, acl["agent"], "pgctl: agent token", ["pgctl-agent"])
    token(mgmt, acl["patroni"], f"pgctl: Patroni of {scope}", [f"pgctl-patroni-{scope}"])
    status, out = call("PUT", "/acl/token/" + ANONYMOUS, mgmt,
                       {"Description": "Anonymous Token", "Policies": [{"Name": "pgctl-dns"}]})
    if status != 200:
        sys.exit(f"consul: anonymous token: HTTP {status}: {out}")
    print(f"consul: ACLs default-deny; tokens for agents and Patroni of {scope} in place")


main()
