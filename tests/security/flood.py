#!/usr/bin/env python3
"""flood.py: hostile HTTP clients on one unix socket, for tests/security.

  flood.py idle SOCKET N SECONDS    open N connections at once and send nothing
  flood.py slow SOCKET N SECONDS    open N connections that each send a request one
                                    byte every second, never finishing it
  flood.py raw SOCKET               send stdin's bytes, print the status line answered

For idle and slow, connections run for at most SECONDS, then the client closes what is
left. Prints one JSON line: how many connects succeeded and failed, the most that were
open at once, how many the server closed, and after how long (min, median, max).
"""
import errno
import json
import selectors
import socket
import sys
import time

REQUEST = (b"POST /v1/volumes HTTP/1.1\r\nHost: localhost\r\n"
           b"Content-Type: application/json\r\nContent-Length: 65536\r\n\r\n{\"name\":")


def flood(path, n, seconds, slow):
    sel = selectors.DefaultSelector()
    start = time.monotonic()
    opened, failed, closed, most, errors = 0, 0, [], 0, {}
    conns = {}
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except OSError as e:
            errors[errno.errorcode.get(e.errno, str(e.errno))] = errors.get(
                errno.errorcode.get(e.errno, str(e.errno)), 0) + 1
            failed += 1
            s.close()
            continue
        opened += 1
        conns[s] = [time.monotonic(), 0]
        sel.register(s, selectors.EVENT_READ)
        most = max(most, len(conns))
    next_byte = time.monotonic()
    while conns and time.monotonic() - start < seconds:
        if slow and time.monotonic() >= next_byte:
            for s, st in list(conns.items()):
                if st[1] < len(REQUEST):
                    try:
                        s.send(REQUEST[st[1]:st[1] + 1])
                        st[1] += 1
                    except OSError:
                        pass
            next_byte += 1.0
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                closed.append(time.monotonic() - conns[s][0])
                sel.unregister(s)
                s.close()
                del conns[s]
    for s in conns:
        s.close()
    closed.sort()
    pick = (lambda i: round(closed[i], 2)) if closed else (lambda i: None)
    print(json.dumps({
        "opened": opened, "failed": failed, "errors": errors, "most_open": most,
        "closed_by_server": len(closed), "left_open": len(conns),
        "closed_after_min": pick(0), "closed_after_median": pick(len(closed) // 2),
        "closed_after_max": pick(-1)}))


def raw(path):
    data = sys.stdin.buffer.read()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    answer = b""
    try:
        while b"\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    except OSError:
        pass
    line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    print(line if line else "closed")


def main():
    if len(sys.argv) == 5 and sys.argv[1] in ("idle", "slow"):
        flood(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[1] == "slow")
    elif len(sys.argv) == 3 and sys.argv[1] == "raw":
        raw(sys.argv[2])
    else:
        sys.exit(__doc__)


main()
