"""The 32×32 family (CIFAR-100 and any small-image dataset): importing registers its models."""
from models.cifar import mobilenetv2, resnet, resnetv2, shufflenetv1, shufflenetv2, vgg, wrn  # noqa: F401
