"""Fault and bandwidth injection: scenario YAML -> timed events -> typed state changes."""
