#!/usr/bin/env python3
"""gaps.py CLIENTLOG : max gap between successful replies, and counter continuity."""
import sys
rows=[l.split(None,2) for l in open(sys.argv[1]) if l.strip()]
best=(0,None,None)
for a,b in zip(rows,rows[1:]):
    g=float(b[0])-float(a[0])
    if g>best[0]: best=(g,a,b)
g,a,b=best
print(f"replies={len(rows)} max_gap={g*1000:.0f}ms before={a} after={b}")
