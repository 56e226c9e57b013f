"""Smoke runs of every bench in bench/ on a few generated images."""
