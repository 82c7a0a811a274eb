"""The benchmarks (``usher bench``, ``usher bench-web``): a package of the composition root
that imports the product and is never imported by it. Its dependencies (matplotlib) are in
the ``bench`` extra."""
