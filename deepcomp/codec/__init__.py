"""The .dcz container: writer, reader, validation, Huffman tables (docs/FORMAT.md)."""
from deepcomp.codec.reader import DczFile, decode, open_dcz, validate
from deepcomp.codec.tensors import RawTensor, SharedDense, SharedSparse
from deepcomp.codec.writer import save, tensor_bytes, write_state_dict

__all__ = [
    "save", "decode", "open_dcz", "validate", "write_state_dict", "tensor_bytes",
    "DczFile", "RawTensor", "SharedDense", "SharedSparse",
]
