"""The 224×224 ImageNet family: importing registers its models."""
from models.imagenet import mobilenetv1, resnet  # noqa: F401
