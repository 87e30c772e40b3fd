"""Holds the contextualizer's JSON Schema files (package data, loaded by ``validation``)."""
