#!/usr/bin/env python3
"""name-battery.py SOCKET NAMES-FILE OTHER: every naming trick against one tenant socket.

NAMES-FILE holds names separated by NUL bytes (so that a name may hold a newline). For
each name, over raw HTTP/1.1 (nothing normalizes the path): GET, DELETE, POST .../commit
and POST .../resize of /v1/volumes/NAME, with NAME percent-encoded and as raw bytes;
POST /v1/volumes with NAME as the parent of a snapshot, and as the name of a new volume.
Every answer must be a refusal: 400, 404 or 405 with an error body (or libmicrohttpd's
own 400 for a raw request line that is not HTTP), or the connection closed on such a
line. Two exceptions: creating a volume whose name the rules allow may answer 201 (it
is removed again at once), and a GET that lands on a listing of the tenant's own
volumes (e.g. "/v1/volumes//") may answer 200 if it names nothing of OTHER's, the
tenant given as the third argument. Prints a summary line; exits 1 after printing each
answer that broke the rules.
"""
import json
import socket
import sys
import urllib.parse


def request(path, method, target, body=None):
    """One request on a fresh connection: (status, body) or (None, reason)."""
    data = b"" if body is None else json.dumps(body).encode()
    head = b"%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (
        method.encode(), target)
    if body is not None:
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    s.sendall(head + b"\r\n" + data)
    answer = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        answer += chunk
    s.close()
    top, _, rest = answer.partition(b"\r\n\r\n")
    parts = top.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None, "closed without an answer" if not answer else repr(answer[:80])
    return int(parts[1]), rest


def refused(status, body, raw):
    if status not in (400, 404, 405):
        return False
    try:
        return isinstance(json.loads(body)["error"]["code"], str)
    except (ValueError, KeyError, TypeError):
        return raw and status == 400 and body.startswith(b"<html>")


def main():
    path, names_file, other = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    with open(names_file, "rb") as f:
        names = [n for n in f.read().split(b"\0") if n]
    bad, count, created = [], 0, []

    def check(what, status, body, allow_created=False):
        nonlocal count
        count += 1
        if allow_created and status == 201:
            return True
        raw = what.startswith("raw ")
        if status is None and raw:
            return False  # the server closed a request that was not HTTP: nothing done
        if status == 200 and " GET " in " " + what and other not in body:
            return False  # a listing of the tenant's own
        if not refused(status, body, raw):
            bad.append("%s: %s %r" % (what, status, body[:200]))
        return False

    for name in names:
        encoded = urllib.parse.quote(name, safe="").encode()
        for form, seg in (("encoded", encoded), ("raw", name)):
            base = b"/v1/volumes/" + seg
            for method, target, body in (("GET", base, None), ("DELETE", base, None),
                                         ("POST", base + b"/commit", None),
                                         ("POST", base + b"/resize", {"size": 8 << 20})):
                status, answer = request(path, method, target, body)
                check("%s %s %r" % (form, method, target), status, answer)
        text = name.decode("utf-8", "surrogateescape")
        try:
            json.dumps(text)
        except UnicodeEncodeError:
            continue  # not UTF-8: JSON cannot carry it
        status, answer = request(path, "POST", b"/v1/volumes",
                                 {"name": "stolen", "parent": text})
        check("snapshot from %r" % name, status, answer)
        status, answer = request(path, "POST", b"/v1/volumes", {"name": text, "size": 65536})
        if check("create %r" % name, status, answer, allow_created=True):
            created.append(encoded)
            status, answer = request(path, "DELETE", b"/v1/volumes/" + encoded)
            if status != 204:
                bad.append("removing what was created: %s %r" % (status, answer[:200]))
    for line in bad:
        print("  " + line)
    print("%d requests for %d names: %d refused or listing only the tenant's own, %d "
          "created under names the rules allow (%s)" % (count, len(names), count - len(bad) - len(created),
                                    len(created), b" ".join(created).decode()))
    sys.exit(1 if bad else 0)


main()
