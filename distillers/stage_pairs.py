"""Which student/teacher pairs the stage-by-stage methods can take, decided at construction.

AT, NST and KDSVD pair the maps ``feats[1:]`` (the stage outputs after the stem) of the two
networks stage by stage; where one network has more stages, the shallowest ``min(n_s, n_t)`` pair
up and the rest are left out, as the original's ``zip`` does (mdistiller's ImageNet AT config
distils ResNet50's 4 stages into MobileNetV1's 3 that way). ``tapped`` gives the slice of
``feats`` a method then reads, and its text for ``describe()``. Whether a pair of networks fits is known from the probed shapes
(``student_feature_shapes`` / ``teacher_feature_shapes``) before the first step, so a pair
that cannot work is one line naming the pair here rather than a shape error inside a loss
at step one. Each check returns the ``(student, teacher)`` shape pairs it accepted.
"""
from typing import List, Sequence, Tuple

import torch

from distillers.losses import pool_to_common_size
from utils.errors import UserError

Shape = Tuple[int, ...]
FIRST_STAGE = 1   # feats[0] is the stem's output: the benchmark's methods tap feats[1:]

_CHOOSE = "choose another student.arch / teacher.arch pair"


def stage_pairs(method: str, student_shapes: Sequence[Shape],
                teacher_shapes: Sequence[Shape]) -> List[Tuple[Shape, Shape]]:
    """``feats[1:]`` of both networks, paired stage by stage from the shallowest (the original's
    ``zip``: the deeper network's extra stages are left out)."""
    student, teacher = list(student_shapes[FIRST_STAGE:]), list(teacher_shapes[FIRST_STAGE:])
    if not student or not teacher:
        raise UserError(f"distiller '{method}' pairs feats[1:] stage by stage, but the student has "
                        f"{len(student)} such maps and the teacher {len(teacher)}: {_CHOOSE}")
    return list(zip(student, teacher))


def tapped(pairs) -> Tuple[slice, str]:
    """The slice of ``feats`` the accepted pairs cover, and how ``describe()`` writes it."""
    stop = FIRST_STAGE + len(pairs)
    return slice(FIRST_STAGE, stop), f"[{FIRST_STAGE}:{stop}]"


def common_size_pairs(method: str, student_shapes, teacher_shapes):
    """AT, NST: stage pairs whose maps reach one spatial size once the larger map is pooled to
    the smaller one's height, as a square (``pool_to_common_size``, run on one-channel zero maps
    so that the rule is the loss's own, not a copy); channels may differ."""
    pairs = stage_pairs(method, student_shapes, teacher_shapes)
    for index, (student, teacher) in enumerate(pairs, start=FIRST_STAGE):
        student_size, teacher_size = (tuple(m.shape[2:]) for m in pool_to_common_size(
            torch.zeros(1, 1, *student[1:]), torch.zeros(1, 1, *teacher[1:])))
        if student_size != teacher_size:
            raise UserError(f"distiller '{method}': feats[{index}] of the student {tuple(student)} "
                            f"and of the teacher {tuple(teacher)} reach no common size "
                            f"({student_size} vs {teacher_size} after pooling): {_CHOOSE}")
    return pairs


def equal_width_pairs(method: str, student_shapes, teacher_shapes):
    """KDSVD: stage pairs of equal width W (its SVD reads a map as ``(C·H) × W`` matrices and
    compares right singular vectors, which have W entries)."""
    pairs = stage_pairs(method, student_shapes, teacher_shapes)
    for index, (student, teacher) in enumerate(pairs, start=FIRST_STAGE):
        if student[2] != teacher[2]:
            raise UserError(f"distiller '{method}' needs maps of equal width stage by stage, but "
                            f"feats[{index}] of the student is {tuple(student)} and of the teacher "
                            f"{tuple(teacher)}: {_CHOOSE}")
    return pairs
