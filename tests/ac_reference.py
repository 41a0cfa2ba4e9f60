"""A tiny, slow, independent Python decoder for docs/FORMAT.md section 7 (tests only)."""
from __future__ import annotations

PROB_BITS, ONE, TOP = 15, 1 << 15, 1 << 24


class Bit:
    __slots__ = ("p0", "n")

    def __init__(self):
        self.p0, self.n = ONE // 2, 0


def adapt(b: Bit, bit: int, limit: int) -> None:
    """A context's update after coding `bit` (docs/FORMAT.md 7.4): a count-driven shift
    that settles at `limit`."""
    s = min((b.n + 2).bit_length() - 1, limit)
    b.p0 = b.p0 - (b.p0 >> s) if bit else b.p0 + ((ONE - b.p0) >> s)
    b.n = min(b.n + 1, 0xFFFF)


class RangeDecoder:
    def __init__(self, data: bytes, limit: int):
        self.data, self.pos, self.limit = data, 0, limit
        self.range, self.code, self.overrun = 0xFFFFFFFF, 0, False
        for _ in range(4):
            self.code = (self.code << 8) | self._next()

    def _next(self) -> int:
        if self.pos < len(self.data):
            self.pos += 1
            return self.data[self.pos - 1]
        self.overrun = True
        return 0

    def _norm(self):
        while self.range < TOP:
            self.range = (self.range << 8) & 0xFFFFFFFF
            self.code = ((self.code << 8) | self._next()) & 0xFFFFFFFF

    def bit(self, b: Bit) -> int:
        bound = (self.range >> PROB_BITS) * b.p0
        if self.code < bound:
            self.range, bit = bound, 0
        else:
            self.code -= bound
            self.range -= bound
            bit = 1
        adapt(b, bit, self.limit)
        self._norm()
        return bit

    def done(self) -> bool:
        return not self.overrun and self.pos == len(self.data) and self.code < self.range


def _tree(dec, nodes, depth):
    node = 1
    for _ in range(depth):
        node = (node << 1) | dec.bit(nodes[node])
    return node - (1 << depth)


class FloatModel:
    def __init__(self):
        self.sign, self.exp = Bit(), [Bit() for _ in range(256)]
        self.hi, self.lo = [Bit() for _ in range(16)], [Bit() for _ in range(19)]

    def decode(self, dec) -> int:
        s = dec.bit(self.sign)
        e = _tree(dec, self.exp, 8)
        mh = _tree(dec, self.hi, 4)
        ml = 0
        for i in range(18, -1, -1):
            ml = (ml << 1) | dec.bit(self.lo[i])
        return s << 31 | e << 23 | mh << 19 | ml


def decode_codebook(dec, nneg: int, npos: int) -> list:
    fm, lens = FloatModel(), [Bit() for _ in range(32)]
    top = [[Bit() for _ in range(4)] for _ in range(33)]
    book = []
    for n in (nneg, npos):
        for i in range(n):
            if i == 0:
                book.append(fm.decode(dec))
                continue
            nb = 1 + _tree(dec, lens, 5)
            v, node = 1, 1
            for _ in range(min(nb - 1, 2)):
                bit = dec.bit(top[nb][node])
                node, v = node << 1 | bit, v << 1 | bit
            for _ in range(nb - 1 - min(nb - 1, 2)):
                dec.range >>= 1
                bit = int(dec.code >= dec.range)
                if bit:
                    dec.code -= dec.range
                v = v << 1 | bit
                dec._norm()
            assert book[-1] + v <= 0xFFFFFFFF
            book.append(book[-1] + v)
    return book


def decode_floats(data: bytes, count: int, shift: int) -> list:
    dec, fm = RangeDecoder(data, shift), FloatModel()
    out = [fm.decode(dec) for _ in range(count)]
    assert dec.done()
    return out


def decode_weights(data: bytes, rows, cols, nneg, npos, sp, cm, vc, sc, sh, pp=0):
    dec = RangeDecoder(data, sh)
    book = decode_codebook(dec, nneg, npos)
    base = 1 if sp else 0
    gmax = max(1, nneg, npos)
    depth = max(nneg, npos, 1).bit_length() - 1 if max(nneg, npos) & (max(nneg, npos) - 1) == 0 else max(nneg, npos).bit_length()
    nctx = (1, 4, 16)[vc]
    tree = [[Bit() for _ in range(1 << depth)] for _ in range(nctx)]
    per = 96 if sc else 8
    sig = [Bit() for _ in range(per * (2 if pp else 1))]
    rowb, sign = [Bit(), Bit()], [Bit() for _ in range(9)]
    R, C = (cols, rows) if cm else (rows, cols)
    out = [0] * (rows * cols)
    at = (lambda r, c: c * cols + r) if cm else (lambda r, c: r * cols + c)
    seen = [0] * C
    state = {"prev_mag": 0, "prev_sign": 0}

    def mag_of(v):
        if v < base:
            return 0
        t = v - base
        return t + 1 if t < nneg else t - nneg + 1

    def bucket(m):
        return 0 if m == 0 else 1 + (m - 1) * 3 // gmax

    def sign_of(v):
        return 0 if v < base else (-1 if v - base < nneg else 1)

    def nbr(r, c):  # pp > 0: signs of the image neighbours left and the three above
        if not pp:
            return 0
        s = sign_of(out[at(r, c - 1)]) if c else 0
        if c >= pp:
            u = c - pp
            s += sign_of(out[at(r, u)])
            s += sign_of(out[at(r, u - 1)]) if u else 0
            s += sign_of(out[at(r, u + 1)]) if u + 1 < c else 0
        return 1 if s > 0 else 2 if s < 0 else 0

    def value(above, n):
        neg = dec.bit(sign[3 * state["prev_sign"] + n]) if nneg and npos else int(nneg != 0)
        group = nneg if neg else npos
        ctx = 0
        if vc == 1:
            ctx = bucket(state["prev_mag"])
        elif vc == 2:
            ctx = bucket(state["prev_mag"]) * 4 + (0 if above is None else bucket(mag_of(above)))
        x = _tree(dec, tree[ctx], depth)
        assert x < group, "value outside its group"
        m = x + 1
        state["prev_mag"], state["prev_sign"] = m, 2 if neg else 1
        return base + (m - 1 if neg else nneg + m - 1)

    prev_empty = 0
    for r in range(R):
        if sp:
            anyv = dec.bit(rowb[prev_empty])
            prev_empty = 1 - anyv
            if not anyv:
                continue
            row_has = left = row_nz = 0
            for c in range(C):
                up = int(r > 0 and out[at(r - 1, c)] != 0)
                img = pp and c >= pp and out[at(r, c - pp)] != 0
                if c + 1 == C and not row_has:
                    s = 1
                elif sc == 0:
                    s = dec.bit(sig[(left | up << 1 | int(seen[c] != 0) << 2) + (per if img else 0)])
                else:
                    x, y = seen[c] * 64 // (r + 1), row_nz * 64 // (c + 1)
                    cb = 0 if seen[c] == 0 else 1 if x < 2 else 2 if x < 4 else 3 if x < 8 else 4 if x < 16 else 5
                    rb = 0 if row_nz == 0 else 1 if y < 4 else 2 if y < 10 else 3
                    s = dec.bit(sig[(left | up << 1 | cb << 2) + 24 * rb + (per if img else 0)])
                if s:
                    above = (out[at(r, c - pp)] if c >= pp else 0) if pp else (out[at(r - 1, c)] if up else 0)
                    out[at(r, c)] = value(above, nbr(r, c))
                    seen[c] += 1
                    row_has = 1
                    row_nz += 1
                left = s
        else:
            for c in range(C):
                if pp:
                    above = out[at(r, c - pp)] if c >= pp else None
                else:
                    above = out[at(r - 1, c)] if r else None
                out[at(r, c)] = value(above, nbr(r, c))
    assert dec.done()
    return out, book
