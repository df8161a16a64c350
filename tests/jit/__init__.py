"""Tests of linnx.jit."""
