"""Where v2 decode time goes: binary decisions (bins) per arithmetic-coded tensor and ns per bin.

    python benchmarks/bench_decode_bins.py FILE.dcz

Per ac_shared tensor: its bins (row flags and significance flags of non-empty rows in
sparse mode, then per value a sign bin and the magnitude tree's depth), the median time
of the C++ decoder alone over the payload (no Python or file overhead), ns per bin and
per element; then torch.load of the same dense state_dict from memory for scale.
"""
import sys, time, json, zlib, numpy as np, torch, io
from deepcomp.codec.reader import open_dcz
from deepcomp.codec import arith
f = open_dcz(sys.argv[1]); sd = f.state_dict(); RAW = open(sys.argv[1], "rb").read()
tot_bins = tot_t = 0
for r in f._p.tensors:
    if r.encoding != "ac_shared": continue
    p = r.fields; rows = r.shape[0]; cols = int(np.prod(r.shape[1:]))
    w = sd[r.name].reshape(rows, cols)
    nz = int((w != 0).sum()); k = p["k"]; nn = p["neg"]
    depth = int(np.ceil(np.log2(max(nn, k - nn, 1))))
    nonempty = int(((w != 0).any(1)).sum())
    bins = (rows + nonempty * cols if p["sp"] else 0) + nz * (depth + (1 if nn and k - nn else 0)) if p["sp"] else rows*cols*(depth+1)
    payload = RAW[r.offset:r.offset + r.length]
    ts = []
    for _ in range(15):
        t = time.perf_counter(); arith.decode_shared(payload, rows, cols, p, r.name); ts.append(time.perf_counter() - t)
    t = sorted(ts)[7]; tot_bins += bins; tot_t += t
    print(f"{r.name} {rows}x{cols} nz={nz} bins={bins:,} {1e3*t:.2f} ms {1e9*t/bins:.1f} ns/bin {1e9*t/(rows*cols):.1f} ns/elem")
buf = io.BytesIO(); torch.save(sd, buf); b = buf.getvalue(); ts=[]
for _ in range(15):
    t = time.perf_counter(); torch.load(io.BytesIO(b), weights_only=True); ts.append(time.perf_counter() - t)
print(f"total {tot_bins:,} bins {1e3*tot_t:.2f} ms ({1e9*tot_t/tot_bins:.1f} ns/bin); torch.load {1e3*sorted(ts)[7]:.2f} ms")
