"""A plug-in package for slimnas, written as an outside package would be (see ``space``, ``backend``, ``method``).

Installed for the tests by putting its folder on ``sys.path`` / ``PYTHONPATH``: ``importlib.metadata`` then finds
``slimnas_toyplugin-0.1.dist-info`` and its ``entry_points.txt``.
"""
