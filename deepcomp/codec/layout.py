"""Constants and limits of the .dcz v1 container (docs/FORMAT.md is the specification)."""
from __future__ import annotations

import struct

import numpy as np
import torch

MAGIC = b"\x89DCZ\r\n\x1a\n"  # PNG-style: catches text-mode and 7-bit mangling
VERSION = 1  # the JSON-header layout of deepcomp/codec/writer.assemble
VERSION2 = 2  # compact header, arithmetic coding (deepcomp/codec/v2.py)
READ_VERSIONS = (1, 2)
WRITE_VERSION = 2  # what write_state_dict writes unless asked otherwise
PREFIX = struct.Struct("<8sHHII")  # magic, version, flags, header_len, header_crc32
FLAG_HEADER_DICT = 1  # version 2: the header is deflated with codec/hdict.HEADER_DICT
FLAG_HEADER_DICT_2 = 2  # version 2: ... with codec/hdict.HEADER_DICT_2 (at most one of the two)
PREFIX_FLAGS = {1: 0, 2: FLAG_HEADER_DICT | FLAG_HEADER_DICT_2}  # per version, the flag bits a reader accepts
ALIGN = 64  # every section starts on a multiple of this, so raw data can be mapped

MAX_HEADER_BYTES = 16 << 20
MAX_GRAPH_BYTES = 16 << 20
MAX_META_BYTES = 1 << 20
MAX_TENSORS = 1 << 20
MAX_NDIM = 8
MAX_NAME_CHARS = 1024
MAX_NUMEL = 1 << 40
# Shared encodings expand: a tiny file may describe a big tensor (a single-symbol stream
# costs no payload bits). The decoded size of all tensors together is capped at
# max(MIN_DENSE_CAP, EXPANSION_CAP * file size) so a hostile file cannot ask for more
# memory than a real model of its size could need.
MIN_DENSE_CAP = 256 << 20
EXPANSION_CAP = 1 << 16

MAX_CODEBOOK = 256
INDEX_BITS = range(2, 9)

# stream header: count, alphabet, mode, reserved, payload_len, aux
STREAM_HEADER = struct.Struct("<IHBBIH")
MODE_EMPTY, MODE_SINGLE, MODE_HUFFMAN = 0, 1, 2
MAX_ALPHABET = 257  # sparse cluster codes: up to 256 centroids plus the filler code

ENCODINGS = ("raw", "shared_dense", "shared_sparse")

# dtype name -> (torch dtype, little-endian numpy dtype of the stored bytes)
DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float32": (torch.float32, np.dtype("<f4")),
    "float16": (torch.float16, np.dtype("<f2")),
    "bfloat16": (torch.bfloat16, np.dtype("<u2")),
    "float64": (torch.float64, np.dtype("<f8")),
    "int64": (torch.int64, np.dtype("<i8")),
    "int32": (torch.int32, np.dtype("<i4")),
    "int16": (torch.int16, np.dtype("<i2")),
    "int8": (torch.int8, np.dtype("i1")),
    "uint8": (torch.uint8, np.dtype("u1")),
    "bool": (torch.bool, np.dtype("u1")),
}
TORCH_TO_NAME = {v[0]: k for k, v in DTYPES.items()}


def align_up(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN
