"""Command-line tools for operators: `python -m recloop.tools.<name>`."""
