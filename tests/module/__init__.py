"""Tests of linnx.module: Linen-style NNX modules."""
