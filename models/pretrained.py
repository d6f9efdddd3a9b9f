"""Pretrained weights: the ``imagenet`` name, whether a download can happen now, the weights' normalisation.

``pretrained_weights: imagenet`` means the architecture's ImageNet weights: timm's default tag (Hugging Face hub)
or torchvision's DEFAULT weights (torch.hub). They are read from the local cache; only when they are not there is
the server probed (one short TCP connection, remembered per host), so a machine with no network gets a clear
problem before any work instead of a download that retries for minutes.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Sequence
from urllib.parse import urlparse

IMAGENET = "imagenet"
PROBE_SECONDS = 3.0
LUMINANCE = (0.299, 0.587, 0.114)  # PIL's convert("L") weights: the grayscale image is this mix of R, G, B


@functools.cache
def host_reachable(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the URL's host opens within `timeout` seconds (remembered per URL)."""
    parsed = urlparse(url)
    if not parsed.hostname:
        return False
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def download_problem(what: str, url: str, cache: str, offline_reason: str | None = None) -> str | None:
    """None when `what` (weights not in the local `cache`) can be downloaded from `url` now, else why not."""
    host = urlparse(url).hostname or url
    if offline_reason is None and host_reachable(url):
        return None
    reason = offline_reason or f"{host} cannot be reached (no network?)"
    return (f"pretrained_weights: {what} are not in the local cache ({cache}) and {reason}; run once on a machine "
            "with network and copy its cache folder here, or set pretrained_weights to a weights file")


def grayscale_normalization(mean: Sequence[float], std: Sequence[float],
                            channels: int) -> tuple[list[float], list[float]]:
    """The weights' per-channel mean/std for `channels` inputs: RGB values as they are; for one channel, their
    luminance-weighted mix (the grayscale image is that mix of the RGB channels), rounded to 4 digits."""
    if channels == 3 or len(mean) != 3:
        return [float(value) for value in mean], [float(value) for value in std]
    return ([round(sum(w * m for w, m in zip(LUMINANCE, mean)), 4)],
            [round(sum(w * s for w, s in zip(LUMINANCE, std)), 4)])
