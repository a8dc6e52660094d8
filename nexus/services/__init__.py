"""Nexus behaviour: plain functions and classes, the acting user passed in."""
