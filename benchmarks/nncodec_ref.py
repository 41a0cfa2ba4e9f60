"""NNCodec (MPEG NNC, ISO/IEC 15938-17) on deepcomp's quantized weights, run in its own venv.

    .venv-nnc/bin/python benchmarks/nncodec_ref.py IN.npz OUT.json   # `make nncodec` makes .venv-nnc/

nncodec pins numpy < 2, so bench_codec.py does not import it: it writes the weights to
an .npz and runs this script with the interpreter named by --nnc-python. Arrays whose
key starts with "int:" are integer indices (0 for a zero weight, the signed rank of the
centroid otherwise); NNCodec codes them losslessly (DeepCABAC, row skipping on), and
every decode is compared bit for bit. Arrays with "f32:" (codebooks, biases) are counted
as raw fp32 bytes, the lossless baseline. "blob" (optional) is compressed with brotli -11.

Arrays with "flt:" are every tensor of the model as float32 (shared weights as their
values): NNCodec's own near-lossless modes code them, its codebook mode
(`codebook_mode=1`) and its default uniform mode, each at the coarsest step (QP) whose
decoded tensors all stay within `--max-rel-err` (1e-3) of their range, the error found
by decoding. Prints nothing but errors; writes JSON.
"""
import json
import sys
import tempfile
import time

import numpy as np

MAX_REL_ERR = 1e-3
# QP (qp_density 2: the step doubles every 4) from coarse to fine; the first that passes
# is the coarsest passing one (error grows with the step)
# (uniform mode's dependent quantization needs ~3 steps finer than codebook mode for the
# same error, so its search starts there)
QPS = {1: tuple(range(-30, -67, -4)), 0: tuple(range(-38, -75, -4))}
# Codebook mode costs a full encode of a tensor per codebook entry (its zero-offset search,
# get_codebook_offset), ~K x the lossless encode: on models this big each QP trial takes
# minutes, so the search starts near where it passed on MiniLM / AlexNet (2026-12-03:
# AlexNet codebook -54; -34..-50 failed) and a coarser QP than the first tried might pass
# too (then NNCodec's figure is an upper bound; RESULTS.md says which were tried).
BIG_NUMEL = 5_000_000
QPS_BIG = {1: (-46, -50, -54, -58), 0: (-54, -58, -62, -66)}


def max_rel_err(dec: dict, ref: dict) -> float:
    worst = 0.0
    for k, v in ref.items():
        d = np.asarray(dec[k], np.float64).reshape(v.shape)
        span = float(v.max() - v.min()) if v.size else 0.0
        span = span if span > 0 else max(float(np.abs(v).max()), 1e-30)
        worst = max(worst, float(np.abs(d - v).max()) / span)
    return worst


def near_lossless(nnc, flts: dict, td: str, codebook_mode: int) -> dict:
    tried = []
    big = sum(v.size for v in flts.values()) > BIG_NUMEL
    for qp in (QPS_BIG if big else QPS)[codebook_mode]:
        t0 = time.perf_counter()
        bs = nnc.compress(dict(flts), bitstream_path=f"{td}/c.nnc", return_bitstream=True, row_skipping=True,
                          verbose=False, codebook_mode=codebook_mode, qp=qp, use_dq=True)
        enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        dec = nnc.decompress(bs)
        dec_s = time.perf_counter() - t0
        err = max_rel_err(dec, flts)
        tried.append({"qp": qp, "bytes": len(bs), "max_rel_err": err, "encode_s": enc, "decode_s": dec_s})
        if err <= MAX_REL_ERR:
            return {**tried[-1], "tried": tried, "search_from": tried[0]["qp"]}
    return {"bytes": None, "tried": tried}


def fast_zero_offset() -> None:
    """NNCodec's codebook mode picks the index coded as 0 by encoding each tensor once
    per codebook entry (get_codebook_offset); on MiniLM / AlexNet that is hours. This
    tries only the five entries around the value nearest zero (DeepCABAC's significance
    flag wants the most common value, here zero, at 0), so the figure can only be a
    little larger than NNCodec's full search would give."""
    from nncodec.nnc_core.approximator import codebook as cbm

    full = cbm.get_codebook_offset

    def near_zero(codebook, indices, unary):
        if indices.dtype != np.int32 or len(codebook) <= 5:
            return full(codebook, indices, unary)
        z = int(np.argmin(np.abs(np.asarray(codebook, np.float64))))
        best, off = None, z
        for cb in range(max(0, z - 2), min(len(codebook), z + 3)):
            enc = cbm.deepCABAC.Encoder()
            enc.initCtxModels(unary, 1)
            enc.encodeLayer(indices - cb, 0, 0, 0, 0, 0, np.zeros(indices.shape[0], dtype=np.int32),
                            *cbm.HDSP_OPTS_OFF(), 0, 0)
            n = len(enc.finish().tobytes())
            if best is None or n < best:
                best, off = n, cb
        return codebook, indices - off, off

    cbm.get_codebook_offset = near_zero


def main(inp: str, out: str) -> int:
    from nncodec import nnc

    data = np.load(inp)
    ints = {k[4:]: np.ascontiguousarray(data[k].astype(np.int32)) for k in data.files if k.startswith("int:")}
    flts = {k[4:]: np.ascontiguousarray(data[k].astype(np.float32)) for k in data.files if k.startswith("flt:")}
    raw = sum(data[k].size * 4 for k in data.files if k.startswith("f32:"))
    res = {"raw_f32_bytes": int(raw)}
    if sum(v.size for v in flts.values()) > BIG_NUMEL or "--fast-offset" in sys.argv:
        fast_zero_offset()
        res["fast_offset"] = True
    with tempfile.TemporaryDirectory() as td:
        t0 = time.perf_counter()
        bs = nnc.compress(dict(ints), bitstream_path=f"{td}/b.nnc", return_bitstream=True, row_skipping=True,
                          verbose=False, codebook_mode=0, use_dq=True)
        res["encode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dec = nnc.decompress(bs)
        res["decode_s"] = time.perf_counter() - t0
        res["bitstream_bytes"] = len(bs)
        res["lossless_bytes"] = len(bs) + int(raw)
        res["exact"] = all(np.array_equal(np.asarray(dec[k]).astype(np.int64).reshape(v.shape), v)
                           for k, v in ints.items())
        if "blob" in data.files:  # brotli lives in this venv too (not in the project's)
            import brotli

            blob = data["blob"].tobytes()
            res["brotli11"] = len(brotli.compress(blob, quality=11, lgwin=24))
        with open(out, "w") as f:  # partial results first: the near-lossless searches are long
            json.dump(res, f)
        if flts:
            res["codebook"] = near_lossless(nnc, flts, td, 1)
            res["uniform"] = near_lossless(nnc, flts, td, 0)
    with open(out, "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    # --fast-offset: see fast_zero_offset (always on for models over BIG_NUMEL)
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sys.exit(main(args[0], args[1]))
