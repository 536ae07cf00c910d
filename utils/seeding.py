"""Seeds derived from a run's seed, for every stream that must not depend on anything else.

Lives in utils/ because the data (per-sample augmentation, datasets/samplers.py) and the methods
(CRD's negatives, distillers/crd.py) both draw from streams keyed by the run seed, and neither
may import the other.
"""
import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (run seed, epoch, sample index, a tag).

    A hash, not ``seed + epoch``, so that neighbouring seeds and epochs never share a stream.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
