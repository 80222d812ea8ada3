#!/usr/bin/env python3
"""Where the bytes of idle connections go: heaptrack's peak, per connection.

Run cutover under heaptrack, open N idle connections, stop it, then:

    heaptrack_print -f heaptrack.cutover.zst --print-peaks 0 --print-allocators 0 \
        --print-temporary 0 --print-leaks 0 --print-flamegraph stacks.txt \
        --flamegraph-cost-type peak
    benches/conn_scale/heaptrack_peak.py stacks.txt N [rows]

Prints the allocation sites live at the peak, largest first, in bytes per
connection, each with its first frames outside the allocator and the
runtime's plumbing (BENCHMARKS.md, "Connection scale").
"""
import re
import sys
rows=[]
for line in open(sys.argv[1]):
    stack,_,cost=line.rstrip().rpartition(' ')
    rows.append((int(cost),stack.split(';')))
rows.sort(reverse=True)
n=int(sys.argv[2])
def short(fr):
    fr=re.sub(r'::h[0-9a-f]{16}','',fr); fr=fr.replace('$LT$','<').replace('$GT$','>').replace('$u20$',' ').replace('..','::').replace('$u7b$$u7b$closure$u7d$$u7d$','{closure}')
    return fr[:110]
skip=re.compile(r'alloc::|_rdl_|GlobalAlloc|RawVec|raw_vec|core::|__rust|std::sys|Box\$|boxed|spec_from|from_elem|hashbrown|_RNv|tokio::loom|harness|catch_unwind|panicking|unsafe_cell')
for c,st in rows[:int(sys.argv[3]) if len(sys.argv)>3 else 25]:
    frames=[short(f) for f in st[::-1] if not skip.search(f)][:5]
    print(f"{c/n:8.0f} B/conn  "+" <- ".join(frames))
