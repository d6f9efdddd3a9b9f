"""Hand-written architectures: GhostNet, SqueezeNext, HarDNet."""

from models.architectures.ghostnet import GhostNet, ghostnet
from models.architectures.hardnet import HarDNet, hardnet
from models.architectures.squeezenext import SqueezeNext, squeezenext23

__all__ = ["GhostNet", "HarDNet", "SqueezeNext", "ghostnet", "hardnet", "squeezenext23"]
