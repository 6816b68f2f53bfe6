"""Declarative schemas of every input table and of result.json (TOML files beside this module)."""
