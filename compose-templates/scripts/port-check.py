# Prints each of the given TCP ports that something on this host already listens on (run with
# host networking, before pgctl creates containers that need them).
import socket
import sys

for port in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        print(port)
    finally:
        s.close()
