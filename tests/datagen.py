"""Small datasets written to disk in the real formats, for tests that load them through the same
code path real data take.

- ``write_cifar100``: ``ROOT/cifar-100-python/{train,test,meta}`` as in the official archive:
  Python 2 pickles (protocol 2) of dicts whose keys and strings are Python 2 ``str``, so that
  ``pickle.load(f, encoding="latin1")`` gives str keys (as torchvision reads them) and
  ``encoding="bytes"`` gives ``b"data"``; ``data`` is uint8 [N, 3072], each row the red, green
  and blue 32x32 planes in row-major order.
- ``write_image_folder``: JPEGs in ``ROOT/train/<class>/`` and ``ROOT/val/<class>/``
  (datasets/synthetic.py, where tools/gpu_check.py finds it too).
"""
import io
import pickle
import struct
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from datasets.synthetic import write_image_folder  # noqa: F401  (re-exported for the tests)


_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]  # numpy's array-unpickling function


class _Python2Pickler(pickle._Pickler):
    """Writes ``bytes`` with the opcodes of a Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as
    the Python 2 pickler that wrote the official CIFAR files did for keys, names and pixel data,
    and names numpy's array reconstructor where numpy 1.x kept it (``numpy.core.multiarray``)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str

    def save_global(self, obj, name=None) -> None:
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _write_python2_pickle(path: Path, obj) -> None:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue())


def cifar100_class_names() -> list[str]:
    return [f"class_{i:03d}" for i in range(100)]


def write_cifar100(root: Union[str, Path], n_train: int, n_test: int,
                   seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random images and fine labels in the official layout; returns, per split ("train",
    "test"), the images uint8 [N, 32, 32, 3] (HWC) and fine labels int64 [N] that were written."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = cifar100_class_names()
    written = {}
    for split, count, label in (("train", n_train, "training"), ("test", n_test, "testing")):
        images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, size=count).astype(np.int64)
        _write_python2_pickle(folder / split, {
            b"filenames": [f"{names[f]}_s_{i:06d}.png".encode() for i, f in enumerate(fine)],
            b"batch_label": f"{label} batch 1 of 1".encode(),
            b"fine_labels": [int(f) for f in fine],
            b"coarse_labels": [int(f) // 5 for f in fine],
            b"data": images.transpose(0, 3, 1, 2).reshape(count, 3072),
        })
        written[split] = (images, fine)
    _write_python2_pickle(folder / "meta", {
        b"fine_label_names": [name.encode() for name in names],
        b"coarse_label_names": [f"superclass_{i:02d}".encode() for i in range(20)],
    })
    return written
