"""Evaluation of frozen features: few-shot splits and curves, the paper's classifiers.

One module per job:

- `splits`: `FewShotSplit` (exactly ``N`` labels per class) and the class-label checks;
- `curve`: `few_shot_curve` and its `FewShotCurveResult`;
- `protocol`: `few_shot_scores`, the fixed protocol of the demo and the benchmarks, and
  `format_few_shot_table`;
- `classifiers`: `paper_classifiers`, the paper's three downstream classifiers;
- `semi_supervised`: `LabeledOnly`, a classifier fitted on the labeled samples only;
- `quality`: `rankme`, a label-free measure of embeddings (torch only, no scikit-learn).

The public import path is `sparsam.model_selection`. Nothing is imported here, so that
``sparsam.evaluation.quality`` (which the DINO loop uses) loads without scikit-learn.
"""
