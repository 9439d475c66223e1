"""Experiment drivers behind the CLI: each turns a config into rows, plots and traces."""
