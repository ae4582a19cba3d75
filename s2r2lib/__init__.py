"""s2r2lib: Self-Supervised Ranking for Representation Learning (S2R2, Varamesh et al.).

Modules, one concept each:
  losses     the multi-view Smooth-AP objective (eqs. 1-3), exact AP, NT-Xent, SwAV
  views      SimCLR-style random views and SwAV multi-crop, per view (cpu) or batched on a device
  data       STL10, COCO, image folders, Fashion-MNIST, the embedded default, the on-disk cache
  synthetic  the procedural generator behind the embedded default
  models     encoders (narrow CNN, ResNet18/50) and the projection head
  train      the training engine for S2R2, SimCLR and SwAV (python -m s2r2lib.train)
  probe      frozen features, the linear probe, kNN, retrieval mAP
  study      train-and-probe experiments: the Figure 1 sweep, the matched-budget miniature study
  results    output folders, provenance, atomic writes of tables and records
  plots      figures shared by the notebooks
  reproduce  every notebook through papermill (make reproduce)
  bench      benchmarks (python -m s2r2lib.bench ...)
"""

__version__ = "0.1.0"
