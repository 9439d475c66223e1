"""Bring-up: start or join Ray, place the socket actors, hand out a node handle."""
