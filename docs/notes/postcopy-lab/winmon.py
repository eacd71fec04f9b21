#!/usr/bin/env python3
"""winmon.py IMGDIR HOSTPID : poll /proc/PID/pagemap until every lazy page of the image is present;
print (time, missing) samples and the time the last page arrived."""
import sys, struct, time
sys.path.insert(0, '/tmp/postcopy-lab'); import pmap
_, ents = pmap.read_pagemap(pmap.task_pagemaps(sys.argv[1])[0])
lazy = [e for e in ents if e['flags'] & pmap.PE_LAZY]
pm = open(f"/proc/{sys.argv[2]}/pagemap", "rb")
t0 = time.time(); last = None
while time.time() - t0 < 60:
    miss = 0
    for e in lazy:
        pm.seek(e['vaddr'] // 4096 * 8); raw = pm.read(8 * e['nr'])
        miss += sum(1 for i in range(e['nr']) if not raw[8*i+7] & 0x80)
    if miss != last: print(f"{time.time():.3f} missing={miss}", flush=True); last = miss
    if miss == 0: break
    time.sleep(0.01)
