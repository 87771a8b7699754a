"""Which images to label first: budget-aware selection on (self-supervised) features.

`select_to_label` picks the ``n`` images whose labels should help most when nothing is
labeled yet, or the next ``n`` after a first round; `select_images_to_label` does the same
from images and a fitted featurizer. Four methods: TypiClust (the most typical image of each
of ``n`` k-means clusters; Hacohen, Dekel and Weinshall, ICML 2022), ProbCover (greedy
coverage of δ-balls; Yehuda et al., NeurIPS 2022), the image closest to each k-means centroid
(Pourahmadi et al., 2021) and random selection, the baseline. `write_contact_sheet` puts
the chosen images on one HTML page or PNG for the person who labels them.
"""

from .contact_sheet import write_contact_sheet
from .select import METHODS, select_images_to_label, select_to_label

__all__ = ["METHODS", "select_images_to_label", "select_to_label", "write_contact_sheet"]
