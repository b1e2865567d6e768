#!/usr/bin/env python3
"""Throughput of the Elasticsearch test server on pgfan-like bulks.

    python3 tests/es_server/load.py [--bulks 40] [--docs 1000] [--connections 1]
        [--gzip] [--url http://127.0.0.1:PORT]

Without --url it starts tests/es_server/es_server.py on a free loopback port.
It installs a strict orders template (10 fields: keyword, scaled_float,
date, unsigned_long, boolean, long), sends --bulks bulk requests of --docs
`index` actions with external versions over keep-alive connections, checks
that every item succeeded and prints docs/s. Traffic goes to loopback only;
the run is bounded by --bulks.
"""

import argparse
import gzip
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))

TEMPLATE = {
    "index_patterns": ["loadorders-*"], "priority": 300,
    "template": {
        "settings": {"number_of_shards": 1, "number_of_replicas": 1, "refresh_interval": "1s"},
        "mappings": {"dynamic": "strict", "properties": {
            "order_id": {"type": "keyword"}, "customer_id": {"type": "keyword"},
            "status": {"type": "keyword"}, "amount": {"type": "scaled_float", "scaling_factor": 100},
            "currency": {"type": "keyword"}, "created_at": {"type": "date"},
            "updated_at": {"type": "date"}, "lsn": {"type": "unsigned_long"},
            "items": {"type": "long"}, "deleted": {"type": "boolean"}}},
        "aliases": {"loadorders": {}}}}


def make_bulk(start, n):
    lines = []
    for i in range(start, start + n):
        lsn = 1000000 + i
        lines.append('{"index":{"_index":"loadorders-2024.05.%02d","_id":"%d","version":%d,'
                     '"version_type":"external"}}' % (1 + i % 28, i, lsn))
        lines.append('{"order_id":"%d","customer_id":"c%d","status":"paid","amount":%d.%02d,'
                     '"currency":"EUR","created_at":"2024-05-%02dT10:00:00.123456Z",'
                     '"updated_at":"2024-05-%02dT11:30:00Z","lsn":%d,"items":%d,'
                     '"deleted":false}' % (i, i % 997, i % 500, i % 100, 1 + i % 28, 1 + i % 28,
                                           lsn, i % 7))
    return ("\n".join(lines) + "\n").encode()


def start_server():
    port_file = tempfile.mktemp(prefix="es-load-port-")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "es_server.py"), "--port", "0",
                             "--port-file", port_file])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(port_file):
            with open(port_file) as f:
                port = int(f.read())
            os.unlink(port_file)
            return proc, "127.0.0.1", port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("load: could not start es_server.py")


def cpu_seconds(pid):
    """User+system CPU time of a process (Linux /proc), None elsewhere."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def request(conn, method, path, body=None, ctype="application/json", gz=False):
    headers = {"Content-Type": ctype} if body is not None else {}
    if gz and body is not None:
        body = gzip.compress(body, 1)
        headers["Content-Encoding"] = "gzip"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, data


def worker(host, port, bodies, gz, errors):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    for body in bodies:
        status, data = request(conn, "POST", "/_bulk?filter_path=errors,items.*.status", body,
                               "application/x-ndjson", gz)
        doc = json.loads(data)
        if status != 200 or doc.get("errors"):
            errors.append((status, data[:300]))
    conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bulks", type=int, default=40)
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--url")
    args = p.parse_args()
    proc = None
    if args.url:
        u = urllib.parse.urlsplit(args.url)
        host, port = u.hostname, u.port
    else:
        proc, host, port = start_server()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        status, data = request(conn, "PUT", "/_index_template/loadorders",
                               json.dumps(TEMPLATE).encode())
        if status != 200:
            raise SystemExit("load: template: %d %s" % (status, data))
        bodies = [make_bulk(b * args.docs, args.docs) for b in range(args.bulks)]
        per = [bodies[i::args.connections] for i in range(args.connections)]
        errors = []
        cpu_before = cpu_seconds(proc.pid) if proc is not None else None
        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(host, port, chunk, args.gzip, errors))
                   for chunk in per]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        cpu_after = cpu_seconds(proc.pid) if proc is not None else None
        total = args.bulks * args.docs
        status, data = request(conn, "GET", "/loadorders/_count")
        if errors:
            raise SystemExit("load: %d failed bulks, first: %s" % (len(errors), errors[0]))
        print("load: %d docs in %d bulks of %d over %d connection(s)%s: %.2f s, %.0f docs/s"
              % (total, args.bulks, args.docs, args.connections, " gzip" if args.gzip else "",
                 elapsed, total / elapsed))
        if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
            # what one core of the server can do, whatever else runs on the machine
            print("load: server CPU %.2f s: %.0f docs per server CPU second"
                  % (cpu_after - cpu_before, total / (cpu_after - cpu_before)))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
