# pgctl's backup exporter (role `monitoring`): lists the cluster's backups in S3 with the backup
# engine and the read-only key, and serves what Prometheus needs to alert on their age. It reads
# S3, not the cluster, so it answers with every database host down.
#   python3 backup-exporter.py PORT ENGINE -- LIST-COMMAND...
# ENGINE is walg (`wal-g backup-list --detail --json`) or pgbackrest (`pgbackrest info
# --output=json`). A listing is reused for 30 s, so scrapes never pile up on S3.
import datetime, http.server, json, subprocess, sys, threading, time

PORT, ENGINE, COMMAND = int(sys.argv[1]), sys.argv[2], sys.argv[4:]
CACHE = {"at": 0.0, "text": ""}
LOCK = threading.Lock()


def epoch(text):
    # WAL-G: RFC 3339 with nanoseconds; cut to microseconds for fromisoformat.
    text = text.replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.datetime.fromisoformat(text).timestamp()


def backups(out):
    """[(finish unix time, is_full)] from the engine's listing."""
    if ENGINE == "walg":
        items = json.loads(out) if out.strip() else []
        return [(epoch(b.get("finish_time") or b["time"]), "_D_" not in b["backup_name"]) for b in items]
    stanzas = json.loads(out)
    return [(b["timestamp"]["stop"], b["type"] == "full") for s in stanzas for b in s.get("backup", [])]


def metrics():
    started = time.time()
    try:
        run = subprocess.run(COMMAND, capture_output=True, text=True, timeout=40)
        if run.returncode != 0:
            raise RuntimeError(run.stderr.strip()[-300:])
        found = backups(run.stdout)
        ok = 1
    except Exception as e:  # any failure is what the alert is for
        print(f"backup-exporter: listing failed: {e}", file=sys.stderr, flush=True)
        found, ok = [], 0
    lines = [
        "# HELP pgctl_backup_list_success Whether the last listing of the backups in S3 worked.",
        "# TYPE pgctl_backup_list_success gauge",
        f"pgctl_backup_list_success {ok}",
        "# TYPE pgctl_backup_list_duration_seconds gauge",
        f"pgctl_backup_list_duration_seconds {time.time() - started:.3f}",
    ]
    if ok:
        lines += ["# TYPE pgctl_backup_count gauge", f"pgctl_backup_count {len(found)}"]
        full = [t for t, is_full in found if is_full]
        if full:
            lines += [
                "# HELP pgctl_backup_newest_full_timestamp_seconds When the newest full backup finished.",
                "# TYPE pgctl_backup_newest_full_timestamp_seconds gauge",
                f"pgctl_backup_newest_full_timestamp_seconds {max(full):.0f}",
            ]
    return "\n".join(lines) + "\n"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/metrics":
            self.send_error(404)
            return
        with LOCK:
            if time.time() - CACHE["at"] > 30:
                CACHE["text"], CACHE["at"] = metrics(), time.time()
            body = CACHE["text"].encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", PORT), Handler).serve_forever()
