"""ImageNet and users' own image folders: ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*``.

Both go through torchvision's ``ImageFolder`` with a scan that follows no loop
(``datasets.image_files``); class indices follow the sorted folder names, so the
train and val trees must hold the same class folders. Images are read by ``read_rgb``: a
truncated or non-image file is a one-line ``UserError`` naming the file (raised in a DataLoader
worker, it reaches the main process as that line too: ``utils.errors.one_line``).
"""
import hashlib
from pathlib import Path
from typing import Callable, Optional

from PIL import Image
from torchvision.datasets import ImageFolder

from datasets.image_files import LinkSafeImageFolder
from utils.errors import UserError

SPLITS = ("train", "val")


def read_rgb(path: str) -> Image.Image:
    """The image at ``path`` decoded in full, as RGB (what ImageFolder's default loader gives)."""
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"cannot read image {path}: {reason}; replace or remove the file") from error


def _missing_message(dataset: str, root: str, split_dir: Path) -> str:
    if dataset == "imagenet":
        return (f"ImageNet not found: {split_dir} is missing; put ILSVRC2012 under {root} as "
                f"train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (val images sorted into their class "
                f"folders), or set data.root")
    return (f"image folder not found: {split_dir} is missing; put your images under {root} as "
            f"train/<class>/* and val/<class>/*, or set data.root")


def _image_folder(dataset: str, root: str, split: str,
                  transform: Optional[Callable] = None) -> ImageFolder:
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise UserError(_missing_message(dataset, root, split_dir))
    try:
        return LinkSafeImageFolder(str(split_dir), transform=transform, loader=read_rgb)
    except FileNotFoundError as error:  # no class folders
        raise UserError(f"{split_dir}: {' '.join(str(error).split())}") from error


def _class_difference(train: list[str], val: list[str]) -> str:
    parts = []
    for split, names in (("train", set(train) - set(val)), ("val", set(val) - set(train))):
        if names:
            shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
            parts.append(f"only in {split}: {shown}")
    return "; ".join(parts)


def load(dataset: str, root: str, train_transform: Callable,
         val_transform: Callable) -> tuple[ImageFolder, ImageFolder]:
    """The train and val folders with their transforms; their class lists must be equal."""
    train = _image_folder(dataset, root, "train", train_transform)
    val = _image_folder(dataset, root, "val", val_transform)
    if train.classes != val.classes:
        raise UserError(f"{root}/train and {root}/val hold different class folders "
                        f"({_class_difference(train.classes, val.classes)}): give both splits "
                        f"the same class folders")
    return train, val


def fingerprint(dataset: str, root: str) -> dict:
    """Per split: image and class counts, and a sha256 of the sorted relative file paths."""
    splits = {}
    for split in SPLITS:
        folder = _image_folder(dataset, root, split)
        paths = sorted(Path(path).relative_to(folder.root).as_posix() for path, _ in folder.samples)
        splits[split] = {"images": len(paths), "classes": len(folder.classes),
                         "files_sha256": hashlib.sha256("\n".join(paths).encode()).hexdigest()}
    return {"dataset": dataset, "root": str(root), "splits": splits}
