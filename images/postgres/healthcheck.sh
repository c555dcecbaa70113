#!/bin/sh
# Docker HEALTHCHECK: healthy when Patroni's REST API answers and PostgreSQL is running.
exec python3 - <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen("http://127.0.0.1:8008/health", timeout=4) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
