"""Executors: the local threaded engine and the Apache Beam translation."""
