"""ffem: Face Feature Embedding Module.

Photos of faces to a trained, evaluated and exported face-embedding model.
The ``ffem`` command (``ffem_cli.cli``) is a thin layer over this package:
every command's work is importable and testable without the CLI.
"""

__version__ = "0.1.0"
