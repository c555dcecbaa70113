# pgctl's virtual-IP follower for Consul clusters (role `vip`): Debian's vip-manager is built
# without Consul (Debian bug #1017982) and no other build can be had here, so this does what
# vip-manager does, for the same leader key. Every second it reads Patroni's leader key from the
# local Consul agent; while the key names this member the address is on the interface (and
# announced with gratuitous ARP, so neighbours learn the move at once), otherwise it is removed.
# When the DCS cannot be read three times in a row the address is released too: a leader cut
# off from the DCS is about to be demoted. Stopping the container releases it.
#   python3 vip-follow.py CONFIG.json   {consul, token, key, member, ip, prefix, interface}
import json, signal, socket, struct, subprocess, sys, time, urllib.request

conf = json.load(open(sys.argv[1]))
ADDR = f"{conf['ip']}/{conf['prefix']}"


def log(msg):
    print(f"vip-follow: {msg}", flush=True)


def leader():
    req = urllib.request.Request(f"{conf['consul']}/v1/kv/{conf['key']}?raw")
    req.add_header("X-Consul-Token", conf["token"])
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.read().decode().strip()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return ""  # no leader key: nobody leads
        raise


def held():
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", conf["interface"]],
                         capture_output=True, text=True, check=True).stdout
    return any(w == ADDR for line in out.splitlines() for w in line.split())


def gratuitous_arp():
    """Announces ADDR at this interface's MAC (an ARP request for itself, sent to everyone)."""
    mac = open(f"/sys/class/net/{conf['interface']}/address").read().strip()
    hw = bytes.fromhex(mac.replace(":", ""))
    ip = socket.inet_aton(conf["ip"])
    frame = b"\xff" * 6 + hw + b"\x08\x06"
    frame += struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + hw + ip + b"\x00" * 6 + ip
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((conf["interface"], 0))
        for _ in range(3):
            s.send(frame)
            time.sleep(0.1)


def set_held(want):
    if want and not held():
        subprocess.run(["ip", "addr", "add", ADDR, "dev", conf["interface"]], check=True)
        gratuitous_arp()
        log(f"{ADDR} added on {conf['interface']}: {conf['member']} leads")
    elif not want and held():
        subprocess.run(["ip", "addr", "del", ADDR, "dev", conf["interface"]], check=True)
        log(f"{ADDR} removed from {conf['interface']}")


def stop(*_):
    set_held(False)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
failures = 0
log(f"watching {conf['key']} for {conf['member']} ({ADDR} on {conf['interface']})")
while True:
    try:
        set_held(leader() == conf["member"])
        failures = 0
    except Exception as e:  # the DCS or `ip` failed: after 3 in a row, let go
        failures += 1
        log(f"{e}")
        if failures >= 3:
            try:
                set_held(False)
            except Exception as e2:
                log(f"releasing failed: {e2}")
    time.sleep(1)
