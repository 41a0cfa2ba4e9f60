"""The .dcz container: writer, reader, validation, Huffman tables (docs/FORMAT.md)."""
