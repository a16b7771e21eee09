"""Typer command-line layer of specsr: one small module per command."""
