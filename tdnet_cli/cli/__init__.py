"""The command-line layer: Typer and rich live here and nowhere else."""
