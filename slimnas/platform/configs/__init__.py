"""Pipeline configs shipped inside the package (``slimnas quickstart`` reads ``quickstart.yaml`` from here)."""
