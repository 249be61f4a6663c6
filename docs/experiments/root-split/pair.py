import json, glob, statistics, sys
pool = {}
for f in sorted(glob.glob("/tmp/rx5/x/res-*.json")):
    res = json.load(open(f))
    for t, tests in res.items():
        if t == "direct":
            continue
        for k, xs in tests.items():
            for i, x in enumerate(xs):
                d = res["direct"][k][i]
                if x and d:
                    pool.setdefault(t, {}).setdefault(k, []).append(x / d)
ks = ["up1", "down1", "up8", "down8"]
print("| topology | " + " | ".join(ks) + " | pairs |")
print("|---|" + "---|" * (len(ks) + 1))
for t in ["root", "rootg", "b", "e", "c", "d1", "d2"]:
    if t in pool:
        cells = []
        for k in ks:
            r = pool[t].get(k, [])
            cells.append(f"×{statistics.median(r):.2f} ({min(r):.2f}–{max(r):.2f})" if r else "-")
        print(f"| {t} | " + " | ".join(cells) + f" | {len(pool[t]['up1'])} |")
