"""The per-tensor size table of `deepcomp info`: its rows add up to the file size."""
from __future__ import annotations

import math

from deepcomp.codec import layout as L
from deepcomp.codec.reader import DczFile


def _fp32_bytes(r) -> int:
    itemsize = L.DTYPES[r.dtype][1].itemsize
    return r.numel * (4 if r.dtype in ("float32", "float16", "bfloat16", "float64") else itemsize)


def table(f: DczFile) -> dict:
    p = f.parsed
    rows = []
    for r in p.tensors:
        row = {"name": r.name, "shape": list(r.shape), "encoding": r.encoding, "bytes": r.length,
               "dense_fp32_bytes": _fp32_bytes(r), "density": None, "weight_bits": None,
               "index_bits": None, "code_bits_per_symbol": None, "index_bits_per_symbol": None,
               "runner_up": None}
        if r.encoding == "ac_float":
            row["density"] = 1.0
            row["weight_bits"] = 32
            row["code_bits_per_symbol"] = 8 * r.length / r.numel
        elif r.encoding == "ac_shared":
            k = r.fields["k"]
            row["weight_bits"] = max(1, math.ceil(math.log2(k))) if k else 0
            nz = int((r.codebook.view("u4")[r.codes] != 0).sum())
            row["density"] = nz / r.numel
            # all bits of the tensor (codebook, positions, values) per non-zero element
            row["code_bits_per_symbol"] = 8 * r.length / max(nz, 1)
        elif r.encoding == "raw":
            row["weight_bits"] = 8 * L.DTYPES[r.fields["storage"]][1].itemsize
            if r.dtype == "bool":
                row["weight_bits"] = 8
            row["density"] = 1.0
        else:
            k = r.fields["k"]
            row["weight_bits"] = max(1, math.ceil(math.log2(k))) if k else 0
            s = r.streams["codes"]
            # payload bits, final-byte padding included
            row["code_bits_per_symbol"] = 8 * len(s.payload) / s.count if s.count else 0.0
            if r.encoding == "shared_sparse":
                row["density"] = r.fields["nnz"] / r.numel if r.numel else 0.0
                row["index_bits"] = r.fields["index_bits"]
                si = r.streams["index"]
                row["index_bits_per_symbol"] = 8 * len(si.payload) / si.count if si.count else 0.0
                row["fillers"] = r.fields["entries"] - r.fields["nnz"]
            else:
                row["density"] = float((r.codebook.view("u4")[r.codes] != 0).mean())
        if r.why:
            chosen = f"b{r.fields['index_bits']}" if r.encoding == "shared_sparse" else r.encoding
            others = {k: v for k, v in r.why.items() if k != chosen and isinstance(v, int)}
            if others:
                best = min(others, key=others.get)
                row["runner_up"] = {"encoding": best, "extra_bytes": others[best] - r.length}
        rows.append(row)
    sections = sum(r.length for r in p.tensors) + sum(p.extra_sections.values())
    padding = p.size - p.header_bytes - sections
    overhead = [{"name": "(prefix + header)", "bytes": p.header_bytes}]
    for key, ln in p.extra_sections.items():
        overhead.append({"name": f"({key} section)", "bytes": ln})
    overhead.append({"name": "(alignment padding)", "bytes": padding})
    dense = sum(r["dense_fp32_bytes"] for r in rows)
    total = sum(r["bytes"] for r in rows) + sum(o["bytes"] for o in overhead)
    assert total == p.size
    return {"file_bytes": p.size, "dense_fp32_bytes": dense, "ratio": dense / p.size,
            "tensors": rows, "overhead": overhead, "graph": graph_summary(f)}


def graph_summary(f: DczFile) -> dict | None:
    """The stored graph's inputs, outputs and op counts, after the validator has passed it."""
    if f.graph is None:
        return None
    from deepcomp.graph import summary, validate

    validate(f.graph, {r.name: (tuple(r.shape), r.dtype) for r in f.parsed.tensors})
    return summary(f.graph)


def _render_graph(g: dict) -> list:
    def shape(s):
        return "x".join("?" if d is None else str(d) for d in s) if s is not None else "any"
    lines = [f"graph (version {g['version']}): {g['nodes']} nodes, {len(g['ops'])} distinct ops"]
    for i in g["inputs"]:
        lines.append(f"  input  {i['name']}: {i['dtype']} {shape(i['shape'])}")
    for k, v in (g.get("symbols") or {}).items():
        lines.append(f"  symbol {k}: {v[0]}..{'' if v[1] is None else v[1]}")
    out = g.get("out")
    keys = out if isinstance(out, list) else [None] * len(g["outputs"])
    kind = "dict" if isinstance(out, list) else "tuple" if out == "tuple" else "tensor"
    lines.append(f"  output ({kind}): " + ", ".join(k if k else o for k, o in zip(keys, g["outputs"])))
    lines.append("  ops: " + ", ".join(f"{k} {v}" for k, v in g["ops"].items()))
    return lines


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def render(t: dict) -> str:
    head = (f"{'tensor':<28} {'shape':<16} {'density':>7} {'encoding':<13} {'w bits':>6} {'idx bits':>8} "
            f"{'avg code b/sym':>14} {'bytes':>10} {'ratio':>7}  runner-up")
    lines = [head, "-" * len(head)]
    for r in t["tensors"]:
        avg = _fmt(r["code_bits_per_symbol"], ".2f")
        if r["index_bits_per_symbol"] is not None:
            avg = f"{r['code_bits_per_symbol']:.2f}/{r['index_bits_per_symbol']:.2f}"
        ratio = r["dense_fp32_bytes"] / r["bytes"] if r["bytes"] else float("inf")
        ru = r["runner_up"]
        ru_s = f"{ru['encoding']} +{ru['extra_bytes']} B" if ru else ""
        lines.append(
            f"{r['name'][:28]:<28} {'x'.join(map(str, r['shape'])) or 'scalar':<16} "
            f"{_fmt(r['density'], '.1%'):>7} {r['encoding']:<13} {_fmt(r['weight_bits'], 'd'):>6} "
            f"{_fmt(r['index_bits'], 'd'):>8} {avg:>14} {r['bytes']:>10} {ratio:>6.1f}x  {ru_s}")
    for o in t["overhead"]:
        lines.append(f"{o['name']:<28} {'':<16} {'':>7} {'':<13} {'':>6} {'':>8} {'':>14} {o['bytes']:>10}")
    lines.append("-" * len(head))
    lines.append(f"{'total (= file size)':<28} {'':<16} {'':>7} {'':<13} {'':>6} {'':>8} {'':>14} "
                 f"{t['file_bytes']:>10} {t['ratio']:>6.1f}x")
    lines.append(f"dense fp32: {t['dense_fp32_bytes']} bytes; file: {t['file_bytes']} bytes; "
                 f"compression {t['ratio']:.1f}x. Avg code b/sym for sparse tensors is cluster/index.")
    if t.get("graph"):
        lines += _render_graph(t["graph"])
    return "\n".join(lines)
