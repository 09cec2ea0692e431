"""Subcommands of the ``slimnas`` CLI, one module per area. Each module has ``register(subparsers)``.

To add an area, add its module name to :data:`MODULES`; a module imports heavy dependencies inside its handlers only,
so ``slimnas --help`` stays fast.
"""

MODULES = ("pipeline", "jobs", "models", "lut", "train", "search", "export", "ui", "profile")
