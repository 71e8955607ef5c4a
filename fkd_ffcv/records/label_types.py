"""Label types resolved against a class count (soft_labels.py holds the math). Free of torch,
so that the option checks refuse an impossible label type before a teacher loads."""
from __future__ import annotations

import re
from dataclasses import dataclass

LABEL_TYPES = ('hard', 'smoothing', 'marginal_smoothing_k<K>', 'marginal_renorm_k<K>', 'full')
MAX_CLASSES = 32767  # class indices are stored as int16
MAX_FULL_CLASSES = 1000  # 'full' stores every class: meant for small class counts
TOP_K = 5  # the default label type's k (FKD's), lowered where there are fewer other classes


def default_label_type(num_classes: int) -> str:
    """The label type when none is given: FKD's marginal smoothing of the top 5, with k
    lowered to num_classes - 1 (the most k can be: one class must be left to smooth over)."""
    return marginal_smoothing(max(1, min(TOP_K, num_classes - 1)))


def marginal_smoothing(k: int) -> str:
    """The name of FKD's label type: the top `k` kept, the rest of the mass spread evenly."""
    return f"marginal_smoothing_k{k}"


@dataclass(frozen=True)
class LabelSpec:
    """A label type resolved against a class count: what is stored and how it is recovered."""
    name: str          # as given: 'hard', 'smoothing', 'marginal_smoothing_k5', ...
    k: int             # classes stored per record
    smoothing: bool    # True: spread the remaining mass; False: re-normalise the stored mass
    num_classes: int

    @classmethod
    def parse(cls, name: str, num_classes: int) -> 'LabelSpec':
        if not 2 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"{num_classes} classes: soft labels support 2 to {MAX_CLASSES}")
        if name == 'hard':
            return cls(name, 1, False, num_classes)
        if name == 'smoothing':
            return cls(name, 1, True, num_classes)
        if name == 'full':
            if num_classes > MAX_FULL_CLASSES:
                raise ValueError(f"label type 'full' stores all {num_classes} classes per crop; "
                                 f"use marginal_smoothing_k<K> above {MAX_FULL_CLASSES} classes")
            return cls(name, num_classes, False, num_classes)
        match = re.fullmatch(r'marginal_(smoothing|renorm)_k(\d+)', name)
        if not match:
            raise ValueError(f"unknown label type {name!r}; choose from {', '.join(LABEL_TYPES)}")
        k = int(match.group(2))
        if not 1 <= k < num_classes:
            raise ValueError(f"{name}: k must be in [1, {num_classes - 1}] for {num_classes} "
                             f"classes")
        return cls(name, k, match.group(1) == 'smoothing', num_classes)
