"""The image files of an ImageFolder split, found without following the links that loop or lead back.

torchvision's scan walks with ``followlinks=True`` and keeps any name with an image extension: a
link inside a class folder that points back at the split multiplies the images, each labelled by
the folder it was reached through, and a FIFO named ``.png`` blocks the first read forever. Here a
class folder may itself be a link to a folder outside the split (an ImageNet subset made of links
to the full set's class folders), but a link to a folder *inside* a class folder is refused, as
is a class link back into the split; an image name must be a regular file (a link to one is
fine). Refusals are one line naming the path; the order of the samples is torchvision's.
"""
import os

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from utils.errors import UserError
from utils.input_files import file_kind


def _check_class_link(class_dir: str, split_real: str) -> None:
    """A class folder that is a link must lead out of the split, not back into it or above it."""
    target = os.path.realpath(class_dir)
    inside = os.path.commonpath([target, split_real]) in (target, split_real)
    if inside:
        raise UserError(f"{class_dir} is a link to {target}, inside or above the split folder "
                        f"{split_real}: the images would be counted twice under another class; "
                        "remove the link")


def class_images(class_dir: str) -> list[str]:
    """The image files under ``class_dir`` in torchvision's order (folders sorted by path, names
    sorted within each), following no link to a folder and reading only regular files."""
    found, pending = [], [class_dir]
    while pending:
        folder = pending.pop()
        names = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_symlink() and os.path.isdir(entry.path):
                    raise UserError(f"{entry.path} is a link to a folder inside a class folder: "
                                    "it is not followed (it can loop back into the data or leave "
                                    "it); replace it by the folder itself or remove it")
                elif entry.name.lower().endswith(IMG_EXTENSIONS):
                    if not entry.is_file(follow_symlinks=True):
                        raise UserError(f"{entry.path} is {file_kind(entry.path)}, not an image "
                                        "file: remove it")
                    names.append(entry.name)
        found.append((folder, sorted(names)))
    return [os.path.join(folder, name) for folder, names in sorted(found) for name in names]


class LinkSafeImageFolder(ImageFolder):
    """``ImageFolder`` whose samples come from ``class_images`` (see the module's docstring)."""

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None,
                     allow_empty=False):
        split_real = os.path.realpath(directory)
        samples, empty = [], []
        for name in sorted(class_to_idx, key=class_to_idx.get):
            class_dir = os.path.join(directory, name)
            if os.path.islink(class_dir):
                _check_class_link(class_dir, split_real)
            files = class_images(class_dir)
            empty += [] if files else [name]
            samples += [(path, class_to_idx[name]) for path in files]
        if empty and not allow_empty:
            shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
            raise UserError(f"{directory}: no image files in the class folders {shown} (image "
                            f"names end in {', '.join(IMG_EXTENSIONS)})")
        return samples
