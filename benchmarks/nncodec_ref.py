"""NNCodec (MPEG NNC, ISO/IEC 15938-17) on deepcomp's quantized weights, run in its own venv.

    /work/venv-nnc/bin/python benchmarks/nncodec_ref.py IN.npz OUT.json

nncodec pins numpy < 2, so bench_codec.py does not import it: it writes the weights to
an .npz and runs this script with the interpreter named by --nnc-python. Arrays whose
key starts with "int:" are integer indices (0 for a zero weight, the signed rank of the
centroid otherwise); NNCodec codes them losslessly (DeepCABAC, row skipping on), and
every decode is compared bit for bit. Arrays with "f32:" (codebooks, biases) are counted
as raw fp32 bytes, the lossless baseline. "blob" (optional) is compressed with brotli -11.
Prints nothing but errors; writes JSON.
"""
import json
import sys
import tempfile
import time

import numpy as np


def main(inp: str, out: str) -> int:
    from nncodec import nnc

    data = np.load(inp)
    ints = {k[4:]: np.ascontiguousarray(data[k].astype(np.int32)) for k in data.files if k.startswith("int:")}
    raw = sum(data[k].size * 4 for k in data.files if k.startswith("f32:"))
    res = {"raw_f32_bytes": int(raw)}
    with tempfile.TemporaryDirectory() as td:
        t0 = time.perf_counter()
        bs = nnc.compress(dict(ints), bitstream_path=f"{td}/b.nnc", return_bitstream=True, row_skipping=True,
                          verbose=False, codebook_mode=0, use_dq=True)
        res["encode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dec = nnc.decompress(bs)
        res["decode_s"] = time.perf_counter() - t0
    res["bitstream_bytes"] = len(bs)
    res["exact"] = all(np.array_equal(np.asarray(dec[k]).astype(np.int64).reshape(v.shape), v) for k, v in ints.items())
    res["lossless_bytes"] = len(bs) + int(raw)
    if "blob" in data.files:  # brotli lives in this venv too (not in the project's)
        import brotli

        blob = data["blob"].tobytes()
        res["brotli11"] = len(brotli.compress(blob, quality=11, lgwin=24))
    with open(out, "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
