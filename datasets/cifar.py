"""CIFAR-100 from the official ``cifar-100-python/`` pickles (www.cs.toronto.edu/~kriz/cifar.html).

We read the files ourselves, with the semantics of ``torchvision.datasets.CIFAR100`` (rows of 3072
bytes, channel-major, turned into HWC images; ``fine_labels`` as targets), because that class
checks every file against the official md5 on construction, so it refuses any other copy (a
re-encoded archive, the small files our tests generate). Torchvision still provides the download,
the archive checksum and the official file checksums that ``fingerprint`` compares against.
Unpickling is restricted to the numpy array types these files hold.
"""
import hashlib
import pickle
import tarfile
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import download_and_extract_archive

from datasets.arrays import ImageArrays
from utils.errors import UserError

FOLDER = CIFAR100.base_folder  # "cifar-100-python"
TRAIN, TEST, META = "train", "test", CIFAR100.meta["filename"]
FILES = (TRAIN, TEST, META)
OFFICIAL_MD5 = {name: md5 for name, md5 in CIFAR100.train_list + CIFAR100.test_list}
OFFICIAL_MD5[META] = CIFAR100.meta["md5"]
HOME_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"

_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]  # numpy's array-unpickling function
_ALLOWED_GLOBALS = {  # what numpy's pickles of uint8 arrays refer to, in numpy 1.x and 2.x
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return _ALLOWED_GLOBALS[(module, name)]


def _read_pickle(path: Path, *keys: str) -> dict:
    """One official file: a dict written by Python 2, so its byte strings decode as latin-1."""
    try:
        with open(path, "rb") as file:
            entry = _ArrayUnpickler(file, encoding="latin1").load()
        if not isinstance(entry, dict) or not set(keys) <= set(entry):
            raise ValueError(f"expected a dict with keys {', '.join(keys)}")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise UserError(f"{path} is not a CIFAR-100 python pickle ({error}): "
                        f"extract the official {CIFAR100.filename} again") from error
    return entry


ROW_BYTES = 3 * 32 * 32


def read_split(root: str, split: str, num_classes: int = 100) -> ImageArrays:
    """``split`` is "train" or "test": uint8 images [N, 32, 32, 3] and fine labels [N], checked
    here (rows of 3072 bytes, one label per row, labels in [0, num_classes)) so a damaged file is
    refused when the data is loaded, not in the middle of an epoch."""
    path = Path(root) / FOLDER / split
    entry = _read_pickle(path, "data", "fine_labels")
    rows = np.asarray(entry["data"])
    if rows.ndim != 2 or rows.shape[1] != ROW_BYTES or rows.dtype != np.uint8:
        raise UserError(f"{path}: 'data' must be uint8 rows of {ROW_BYTES} bytes (32x32 RGB), "
                        f"got {rows.dtype} of shape {list(rows.shape)}: extract the official "
                        f"{CIFAR100.filename} again")
    labels = np.asarray(entry["fine_labels"])
    if labels.shape != (len(rows),) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: 'fine_labels' must hold one integer label per image ({len(rows)}), "
                        f"got {labels.dtype} of shape {list(labels.shape)}")
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(outside):
        raise UserError(f"{path}: label {labels[outside[0]]} of image {outside[0]} is outside the "
                        f"{num_classes} classes (+{len(outside) - 1} more): the file is damaged")
    images = np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return ImageArrays(images, labels.astype(np.int64))


def read_class_names(root: str) -> list[str]:
    meta = _read_pickle(Path(root) / FOLDER / META, "fine_label_names")
    return list(meta["fine_label_names"])


def download(root: str, *, url: str = CIFAR100.url, md5: Optional[str] = CIFAR100.tgz_md5) -> None:
    """Fetches and extracts the official archive into ``root`` with torchvision's utilities."""
    try:
        download_and_extract_archive(url, str(root), filename=CIFAR100.filename, md5=md5)
    except (OSError, RuntimeError, ValueError, tarfile.TarError) as error:
        reason = " ".join(str(error).split())
        raise UserError(f"could not download CIFAR-100 from {url} into {root} ({reason}): download "
                        f"{CIFAR100.filename} from {HOME_PAGE} and extract it in {root}") from error


def require_files(root: str, *, download_missing: bool = False) -> Path:
    """The folder holding the three official files, downloading them first if asked and absent."""
    folder = Path(root) / FOLDER
    if download_missing and not all((folder / name).is_file() for name in FILES):
        download(root)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        what = "" if len(missing) == len(FILES) else f" (missing {', '.join(missing)})"
        raise UserError(f"CIFAR-100 not found under {folder}{what}: download {CIFAR100.filename} "
                        f"from {HOME_PAGE} and extract it in {root}, or set data.download=true")
    return folder


def load(root: str, *,
         download_missing: bool = False) -> tuple[ImageArrays, ImageArrays, list[str]]:
    """Train split, test split (the validation set of every recipe) and the 100 class names."""
    require_files(root, download_missing=download_missing)
    names = read_class_names(root)
    return read_split(root, TRAIN, len(names)), read_split(root, TEST, len(names)), names


def _md5(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def fingerprint(root: str, official_md5: Mapping[str, str] = OFFICIAL_MD5) -> dict:
    """The md5 of each file, and whether all equal the official ones (torchvision's list)."""
    folder = require_files(root)
    files = {name: _md5(folder / name) for name in FILES}
    official = all(files[name] == official_md5.get(name) for name in FILES)
    return {"dataset": "cifar100", "root": str(root), "files": files, "official": official}
