"""``python -m models [--dataset cifar100|imagenet]``: every registered model with its parameter
count and its MACs per image at its family's resolution (32 or 224 pixels).

Models are built on the meta device, so the table costs no memory and no arithmetic.
"""
import argparse

import torch

from models import build_model, input_size, list_models
from models.profile import count_macs, count_params

FAMILIES = ("cifar100", "imagenet")


def human(count: int) -> str:
    return f"{count / 1e9:.2f} G" if count >= 1e9 else f"{count / 1e6:.2f} M"


def rows(dataset: str):
    num_classes = 1000 if dataset == "imagenet" else 100
    for name in list_models(dataset):
        with torch.device("meta"):
            model = build_model(name, num_classes=num_classes, dataset=dataset)
        yield dataset, name, count_params(model), count_macs(model, input_size(dataset))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=FAMILIES, help="only this family")
    args = parser.parse_args(argv)
    print(f"{'dataset':<9} {'model':<14} {'params':>9} {'MACs':>10}")
    for dataset in [args.dataset] if args.dataset else FAMILIES:
        for family, name, params, macs in rows(dataset):
            print(f"{family:<9} {name:<14} {params / 1e6:>7.2f} M {human(macs):>10}")


if __name__ == "__main__":
    main()
