# Groups the rows the models run in a `shoal bench ops --peer torch` table (its second table, after the
# `ops_peer.py:` line) by kind of op and prints, per group, the count, the geometric mean of the
# shoal / torch ratios, the lowest row and how many are under 1.0x. The op name and shape decide the group:
# attention by "self"/"cross" in the name, convolutions by a 3x3 or 1x1 kernel in the shape, norms by "norm".
#   python3 scripts/gpu/op_groups.py TABLE.md [TABLE.md ...]
import math, sys

for f in sys.argv[1:]:
    rows, peer = [], False
    for line in open(f, encoding="utf-8"):
        if line.startswith("ops_peer.py"):
            peer = True
        if not peer or not line.startswith("| ") or line.startswith("| op") or line.startswith("| ---"):
            continue
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) < 6 or "not run by the models" in c[4] or not c[5].endswith("×"):
            continue
        name, shape, ratio = c[0], c[1], float(c[5].rstrip("×"))
        if " self" in name or " cross" in name:
            kind = "attention"
        elif "→" in shape and ("3×3" in shape or "1×1" in shape):
            kind = "convolutions"
        elif "norm" in name:
            kind = "norms"
        else:
            kind = "linear, GEGLU, copies"
        rows.append((kind, ratio, f"{name} {shape}"))
    print(f)
    for kind in ["convolutions", "attention", "norms", "linear, GEGLU, copies"]:
        rs = [r for r in rows if r[0] == kind]
        if rs:
            geo = math.exp(sum(math.log(r[1]) for r in rs) / len(rs))
            low = min(rs, key=lambda r: r[1])
            under = sum(1 for r in rs if r[1] < 1.0)
            print(f"  {kind}: {len(rs)} rows, geometric mean {geo:.2f}x, lowest {low[1]:.2f}x ({low[2]}), {under} under 1.0x")
