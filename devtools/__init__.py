"""Helpers shared by the test suite and the benchmarks: factories and loopback server processes.

Not part of the installed service; neither tests/ nor bench/ depends on the other.
"""
