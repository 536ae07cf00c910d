"""What a determined user still tries (issue 26): planted links and FIFOs in an image folder, values
that pass a type check but cannot run, YAML merge keys, paths that are not what a tool expects.
Each ends in one line and exit 2, or works, never in a traceback, a hang or a wrong count."""
import os
import threading
from pathlib import Path

import pytest

from datasets import imagenet
from tests.datagen import write_image_folder
from utils.errors import UserError


def _load_within(root, seconds=20):
    """``imagenet.load`` of ``root`` in a thread: what it returned or raised, and whether it
    finished within ``seconds`` (a FIFO opened for reading would block forever)."""
    outcome = {}

    def load():
        try:
            outcome["folders"] = imagenet.load("imagefolder", str(root), None, None)
        except UserError as err:
            outcome["error"] = str(err)
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"loading {root} hangs"
    return outcome


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "folder"
    names = write_image_folder(root, classes=3, per_class=2, size=8)
    return root, names


def test_link_looping_back_into_the_image_folder_is_refused_never_counted_twice(folder):
    root, names = folder
    loop = root / "train" / names[0] / "again"
    loop.symlink_to(root / "train", target_is_directory=True)
    error = _load_within(root)["error"]
    assert error.startswith(f"{loop} is a link to a folder inside a class folder: it is not followed")


def test_class_folder_linked_from_outside_is_read_but_one_linked_back_into_the_split_is_refused(folder, tmp_path):
    root, names = folder
    subset = tmp_path / "subset"
    for split in ("train", "val"):      # an ImageNet subset made of links to the full set's classes
        (subset / split).mkdir(parents=True)
        for name in names[:2]:
            (subset / split / name).symlink_to(root / split / name, target_is_directory=True)
    train, val = _load_within(subset)["folders"]
    assert train.classes == names[:2] and len(train.samples) == 4 and len(val.samples) == 4
    assert [target for _, target in train.samples] == [0, 0, 1, 1]
    back = root / "train" / "zz_all"
    back.symlink_to(root / "train", target_is_directory=True)
    assert _load_within(root)["error"].startswith(f"{back} is a link to {root / 'train'}, inside or above")


@pytest.mark.parametrize("make, kind", [(os.mkfifo, "a FIFO"),
                                        (lambda path: os.symlink("/nonexistent", path), "a broken link")])
def test_a_fifo_or_broken_link_named_like_an_image_is_refused_without_blocking(folder, make, kind):
    root, names = folder
    odd = root / "val" / names[1] / "photo.png"
    make(odd)
    assert _load_within(root)["error"] == f"{odd} is {kind}, not an image file: remove it"


def test_image_folder_samples_keep_torchvision_order_and_links_to_files_are_read(folder):
    from torchvision.datasets import ImageFolder
    root, names = folder
    nested = root / "train" / names[2] / "more"
    nested.mkdir()
    (nested / "x.JPEG").symlink_to(next((root / "val" / names[2]).iterdir()))
    (root / "train" / names[2] / "readme.txt").write_text("not an image name: ignored")
    train, _ = _load_within(root)["folders"]
    assert train.samples == ImageFolder(str(root / "train")).samples and len(train.samples) == 7


def test_class_folder_without_images_is_one_line_naming_it(folder):
    root, names = folder
    (root / "val" / "empty").mkdir()
    assert _load_within(root)["error"].startswith(f"{root / 'val'}: no image files in the class folders empty")
