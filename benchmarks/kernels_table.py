"""Render bench_kernels.py --json output as the Markdown table used in RESULTS.md.

    .venv/bin/python benchmarks/kernels_table.py kernels.json

One row per (shape, batch, sparsity, threads): median ms of every implementation and the
speed-ups of deepcomp's codebook kernel (and its int8 GEMM) over each baseline, all from
the same run.
"""
import json
import sys

COLS = [("torch_dense", "dense"), ("torch_csr", "t.CSR"), ("scipy_csr", "SciPy"),
        ("fbgemm_int8", "FBGEMM"), ("deepcomp_codebook", "dc cb"), ("deepcomp_csr", "dc csr"),
        ("deepcomp_int8", "dc int8")]


def main(path: str) -> None:
    doc = json.load(open(path))
    rows: dict[tuple, dict] = {}
    for r in doc["records"]:
        key = (tuple(r["shape"]), r["batch"], r["sparsity"], r["threads"])
        rows.setdefault(key, {})[r["implementation"]] = r
    print("| shape | batch | sparsity | threads | " + " | ".join(c for _, c in COLS)
          + " | cb vs dense | cb vs t.CSR | cb vs SciPy | cb vs FBGEMM | int8 vs FBGEMM | cb roofline ms |")
    print("|---" * (4 + len(COLS) + 6) + "|")

    def ratio(impls, base, ours):
        if base in impls and ours in impls:
            return f"{impls[base]['median_ms'] / impls[ours]['median_ms']:.2f}x"
        return "-"

    for (shape, b, s, t), impls in sorted(rows.items()):
        ms = [f"{impls[k]['median_ms']:.3f}" if k in impls else "-" for k, _ in COLS]
        roof = f"{impls['deepcomp_codebook']['roofline_ms']:.2f}" if "deepcomp_codebook" in impls else "-"
        cells = [f"{shape[0]}x{shape[1]}", str(b), f"{s:.0%}", str(t), *ms,
                 ratio(impls, "torch_dense", "deepcomp_codebook"), ratio(impls, "torch_csr", "deepcomp_codebook"),
                 ratio(impls, "scipy_csr", "deepcomp_codebook"), ratio(impls, "fbgemm_int8", "deepcomp_codebook"),
                 ratio(impls, "fbgemm_int8", "deepcomp_int8"), roof]
        print("| " + " | ".join(cells) + " |")
    m = doc["meta"]
    bw = ", ".join(f"{k} thread(s) {v:.1f} GB/s" for k, v in m["bandwidth_gbps"].items())
    paths = f" ({m['paths']})" if m.get("paths") else ""
    print(f"\nisa {m['isa']}{paths}, torch {m['torch']}, {m['time']}, load average {m['load_average_start'][0]:.2f} "
          f"at start; measured read bandwidth {bw}. {m['note']}")


if __name__ == "__main__":
    main(sys.argv[1])
