#!/usr/bin/env python3
"""Minimal CRIU pagemap-*.img reader (no crit needed) + destination image builder.
  pmap.py dump DIR            -> print entries of every task pagemap
  pmap.py mkdest FULL DEST    -> copy FULL image dir to DEST, but each task's pages-N.img
                                 is written SPARSE: only non-lazy (eagerly restored) pages
                                 are copied; lazy pages become holes (served later by
                                 `criu page-server --lazy-pages -D FULL`)."""
import os, re, struct, sys, shutil, glob
PE_PARENT, PE_LAZY, PE_PRESENT = 1, 2, 4
PAGE = 4096

def varint(b, i):
    r = s = 0
    while True:
        x = b[i]; i += 1
        r |= (x & 0x7f) << s; s += 7
        if x < 0x80: return r, i

def pb(msg):
    f, i = {}, 0
    while i < len(msg):
        k, i = varint(msg, i); fn, wt = k >> 3, k & 7
        if wt == 0: v, i = varint(msg, i)
        elif wt == 1: v = struct.unpack_from('<Q', msg, i)[0]; i += 8
        elif wt == 5: v = struct.unpack_from('<I', msg, i)[0]; i += 4
        elif wt == 2: l, i = varint(msg, i); v = msg[i:i+l]; i += l
        else: raise ValueError(wt)
        f[fn] = v
    return f

def read_pagemap(path):
    b = open(path, 'rb').read()
    i = 8  # IMG_COMMON_MAGIC + PAGEMAP_MAGIC
    recs = []
    while i < len(b):
        l = struct.unpack_from('<I', b, i)[0]; i += 4
        recs.append(pb(b[i:i+l])); i += l
    pages_id = recs[0][1]
    ents, off = [], 0
    for r in recs[1:]:
        nr = r.get(5, r.get(2)); fl = r.get(4, PE_PRESENT)
        e = dict(vaddr=r[1], nr=nr, flags=fl, off=None)
        if fl & PE_PRESENT:
            e['off'] = off; off += nr * PAGE
        ents.append(e)
    return pages_id, ents

def task_pagemaps(d):
    return [p for p in glob.glob(os.path.join(d, 'pagemap-*.img')) if re.search(r'pagemap-\d+\.img$', p)]

def main():
    if sys.argv[1] == 'dump':
        for p in task_pagemaps(sys.argv[2]):
            pid, ents = read_pagemap(p)
            lazy = sum(e['nr'] for e in ents if e['flags'] & PE_LAZY)
            tot = sum(e['nr'] for e in ents if e['flags'] & PE_PRESENT)
            print(f"{p}: pages-{pid}.img entries={len(ents)} present={tot} lazy={lazy}")
    elif sys.argv[1] == 'mkdest':
        full, dest = sys.argv[2], sys.argv[3]
        os.makedirs(dest, exist_ok=True)
        sparse = {}
        for p in task_pagemaps(full):
            pid, ents = read_pagemap(p)
            sparse[f'pages-{pid}.img'] = ents
        copied = 0
        for n in os.listdir(full):
            src, dst = os.path.join(full, n), os.path.join(dest, n)
            if n in sparse:
                size = os.path.getsize(src)
                with open(src, 'rb') as fi, open(dst, 'wb') as fo:
                    fo.truncate(size)
                    for e in sparse[n]:
                        if e['off'] is None or e['flags'] & PE_LAZY: continue
                        fi.seek(e['off']); fo.seek(e['off'])
                        fo.write(fi.read(e['nr'] * PAGE)); copied += e['nr'] * PAGE
            elif os.path.isfile(src):
                shutil.copy2(src, dst); copied += os.path.getsize(src)
        print(f"mkdest: copied {copied} bytes (lazy pages left as holes)")
main()
