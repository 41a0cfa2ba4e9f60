"""Compressed modules and the graph executor that run a .dcz file directly."""
