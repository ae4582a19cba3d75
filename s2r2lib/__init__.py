"""s2r2lib: Self-Supervised Ranking for Representation Learning (S2R2, Varamesh et al.).

Modules, one concept each:
  losses   the multi-view Smooth-AP objective (eqs. 1-3), exact AP, NT-Xent
  results  output folders, provenance, atomic writes of tables and records
  plots    figures shared by the notebooks
  bench    benchmarks (python -m s2r2lib.bench ...)
"""

__version__ = "0.1.0"
