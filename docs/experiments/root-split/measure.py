#!/usr/bin/python3
"""Side-by-side iperf3 over the experiment's topologies (rx5 world). Experiment only."""
import json, subprocess, sys, time, statistics, os
CF = "/work/rootexp5/build/childflow"
TOPO = {
    "direct": ["ip", "netns", "exec", "rx5-host"],
    "root": ["ip", "netns", "exec", "rx5-host", CF, "--root", "--"],
    "rootg": ["ip", "netns", "exec", "rx5-host", CF, "--root", "--", "sh", "-c", 'sleep 1; exec "$@"', "x"],
    "e": ["ip", "netns", "exec", "rx5-kid2"],
    "b": ["ip", "netns", "exec", "rx5-kid"],
    "c": ["ip", "netns", "exec", "rx5-kid"],
    "d1": ["ip", "netns", "exec", "rx5-kid"],
    "d2": ["ip", "netns", "exec", "rx5-kid"],
}
HOOK = {"e": ("/tmp/rx5/x/e.sh rules", "/tmp/rx5/x/e.sh norules"),
        "rootg": ("(/tmp/rx5/x/gro-watch.sh > /tmp/rx5/x/gro-watch.log 2>&1 &)", "true"),
        "b": ("/tmp/rx5/x/b.sh rules", "/tmp/rx5/x/b.sh norules"),
        "c": ("/tmp/rx5/x/c.sh on", "/tmp/rx5/x/c.sh off"),
        "d1": ("/tmp/rx5/x/d.sh on d1", "/tmp/rx5/x/d.sh off"),
        "d2": ("/tmp/rx5/x/d.sh on d2", "/tmp/rx5/x/d.sh off")}
TESTS = {"up1": [], "down1": ["-R"], "up8": ["-P", "8"], "down8": ["-R", "-P", "8"]}
topos = sys.argv[1].split(",")
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
secs = sys.argv[3] if len(sys.argv) > 3 else "4"
res = {t: {k: [] for k in TESTS} for t in topos}
loads = []
for r in range(reps):
    loads.append(os.getloadavg()[0])
    order = topos[r % len(topos):] + topos[:r % len(topos)]
    for k, extra in TESTS.items():
        for t in order:
            if t in HOOK:
                subprocess.run(HOOK[t][0], shell=True, check=True)
            for attempt in range(3):
                p = subprocess.run(TOPO[t] + ["iperf3", "-c", "198.18.0.1", "-p", "5201", "-J", "-t", secs, "-O", "1"] + extra,
                                   capture_output=True, text=True, timeout=60)
                try:
                    bps = json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
                    break
                except Exception:
                    time.sleep(1)
                    bps = None
            if t in HOOK:
                subprocess.run(HOOK[t][1], shell=True, check=True)
            res[t][k].append(bps)
    print(f"rep {r} load {loads[-1]:.2f}", json.dumps({t: {k: v[-1] for k, v in res[t].items()} for t in topos}), flush=True)
loads.append(os.getloadavg()[0])
print("load", " ".join(f"{l:.2f}" for l in loads))
print("| test | " + " | ".join(topos) + " |")
print("|---|" + "---|" * len(topos))
for k in TESTS:
    d = statistics.median([x for x in res["direct"][k] if x]) if "direct" in res else None
    cells = []
    for t in topos:
        xs = [x for x in res[t][k] if x]
        m = statistics.median(xs) if xs else float("nan")
        rat = f" ×{m/d:.2f}" if d and t != "direct" else ""
        cells.append(f"{m:.2f} ({min(xs):.2f}–{max(xs):.2f}){rat}")
    print(f"| {k} | " + " | ".join(cells) + " |")
json.dump(res, open(f"/tmp/rx5/x/res-{'-'.join(topos)}-{int(time.time())}.json", "w"))
