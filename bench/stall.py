#!/usr/bin/env python3
"""Longest processing stall while a plugin is hot-swapped under load.

Polls the input and output topics' end offsets every ~2 ms over one
keep-alive connection while producing (by wrk, started by the caller) and
while re-deploying the enricher `--swaps` times. A stall is the longest time
the output end did not move while there was lag (input end > output end).
The same figure is measured over an equally long window without swaps first
(the reference, in the same run)."""
import http.client, json, sys, threading, time, argparse

ap = argparse.ArgumentParser()
ap.add_argument("--host"); ap.add_argument("--port", type=int)
ap.add_argument("--component"); ap.add_argument("--swaps", type=int, default=20)
ap.add_argument("--window", type=float, default=6.0)
args = ap.parse_args()

def conn():
    return http.client.HTTPConnection(args.host, args.port, timeout=30)

def ends(c, topic):
    c.request("GET", f"/topics/{topic}")
    r = c.getresponse(); body = json.loads(r.read())
    return sum(p["end_offset"] for p in body["partitions"])

def manifest(v):
    return json.dumps({"name": "swap", "kind": "enricher", "inputs": ["in"], "outputs": ["out"],
                       "config": {"stamp": str(v)}, "max_batch": 256})

component = open(args.component, "rb").read()

def deploy(c, v):
    t = time.perf_counter()
    c.request("PUT", "/plugins/swap", body=component,
              headers={"content-type": "application/wasm", "weir-manifest": manifest(v)})
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
    return time.perf_counter() - t

def watch(seconds):
    c = conn(); longest = 0.0; last_move = time.perf_counter(); last_out = -1
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        out = ends(c, "out"); inp = ends(c, "in"); now = time.perf_counter()
        if out != last_out or out >= inp:
            last_out = out; last_move = now
        longest = max(longest, now - last_move)
        time.sleep(0.002)
    return longest

c = conn()
deploy(c, 1)
time.sleep(1.0)
baseline = watch(args.window)
result = {}
def swapper():
    dc = conn(); times = []
    gap = args.window / args.swaps
    for v in range(2, args.swaps + 2):
        times.append(deploy(dc, v)); time.sleep(gap)
    result["deploys"] = times
t = threading.Thread(target=swapper); t.start()
during = watch(args.window + 1.0)
t.join()
d = sorted(result["deploys"])
print(json.dumps({"stall_without_swaps_ms": round(baseline * 1000, 1),
                  "stall_with_swaps_ms": round(during * 1000, 1),
                  "swaps": args.swaps,
                  "deploy_p50_ms": round(d[len(d) // 2] * 1000, 1),
                  "deploy_max_ms": round(d[-1] * 1000, 1)}))
