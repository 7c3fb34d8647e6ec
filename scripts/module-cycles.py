#!/usr/bin/env python3
"""Import cycles between top-level modules and between sibling submodules of src/."""
import os, re, sys, itertools
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
mods = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p = os.path.relpath(os.path.join(d, f), root)
        if p in ('lib.rs', 'main.rs'): continue
        parts = p[:-3].split('/')
        if parts[-1] == 'mod': parts = parts[:-1]
        if 'tests' in parts or p.startswith('progress'): continue
        mods[tuple(parts)] = os.path.join(d, f)
def code(path):
    s = open(path).read()
    m = re.search(r'#\[cfg\(test\)\]\s*mod tests\s*\{', s)
    if m: s = s[:m.start()]
    s = re.sub(r'#\[cfg\(test\)\]\s*mod tests;', '', s)
    return '\n'.join(l for l in s.split('\n') if not l.strip().startswith('//'))
def resolve(me, path):
    parts = path.split('::')
    if parts[0] == 'crate': base = []; parts = parts[1:]
    elif parts[0] == 'super':
        base = list(me[:-1]) if me in mods and not mods[me].endswith('mod.rs') else list(me)
        base = list(me[:-1]); parts = parts[1:]
        while parts and parts[0] == 'super': base = base[:-1]; parts = parts[1:]
    else: return None
    best = None
    for i in range(len(parts)+1):
        cand = tuple(base + parts[:i])
        if cand in mods: best = cand
    return best
edges = {}
for me, path in mods.items():
    src = code(path)
    # expand `use crate::a::{b, c::{d}}` roughly: collect crate::/super:: paths and brace groups
    refs = set()
    for m in re.finditer(r'\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)(::\{([^;]*?)\})?', src, re.S):
        refs.add(m.group(1))
        if m.group(3):
            for item in re.split(r'[,\s{}]+', m.group(3)):
                item = item.split('::')[0]
                if item and item != 'self': refs.add(m.group(1) + '::' + item)
    # bare paths to a child module from its parent (`use child::x`, `child::f()`)
    for child in [m for m in mods if len(m) == len(me) + 1 and m[:len(me)] == me]:
        if re.search(r'(?<![:\w])' + child[-1] + r'::', src):
            refs.add('crate::' + '::'.join(child))
    for r in refs:
        t = resolve(me, r)
        if t and t != me: edges.setdefault(me, set()).add(t)
# project edges to levels: top-level, and siblings
graph = {}
up = []
for a, ts in edges.items():
    for b in ts:
        # common prefix
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]: k += 1
        if k < len(a) and k < len(b):
            x, y = a[:k+1], b[:k+1]
            graph.setdefault(x, set()).add(y)
        elif k == len(b):
            up.append((a, b))
def sccs(g):
    idx, low, st, on, out, c = {}, {}, [], set(), [], [0]
    nodes = set(g) | {y for v in g.values() for y in v}
    def visit(v):
        idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in g.get(v, ()):
            if w not in idx: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(comp)
    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in idx: visit(v)
    return out
cyc = sccs(graph)
for comp in cyc:
    names = sorted('::'.join(x) for x in comp)
    print('cycle:', ', '.join(names))
    for x in comp:
        for y in sorted(graph.get(x, ())):
            if y in comp: print('   ', '::'.join(x), '->', '::'.join(y))
if '-v' in sys.argv:
    for x in sorted(graph): print('::'.join(x), '->', ', '.join(sorted('::'.join(y) for y in graph[x])))
up = [(a, b) for a, b in up if any(t[:len(b)+1] == a[:len(b)+1] for t in edges.get(b, ()))]
for a, b in sorted(up): print('cycle with parent:', '::'.join(a), '<->', '::'.join(b))
sys.exit(1 if cyc or up else 0)
