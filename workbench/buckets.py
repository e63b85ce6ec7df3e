"""Aspect-ratio buckets: the sizes an export writes and the trainer batches by (pure arithmetic)."""

from __future__ import annotations

import math


def bucket_sizes(resolution: int) -> list[tuple[int, int]]:
    """Aspect buckets: about ``resolution²`` pixels, aspect 1:2 to 2:1, sides multiples of 64
    (of 8 below 512 px, where steps of 64 would leave only the square)."""
    step = 64 if resolution >= 512 and resolution % 64 == 0 else 8
    area = resolution * resolution
    sizes = set()
    for height in range(step, 2 * resolution + 1, step):
        width = (area // height) // step * step
        if width >= step and 0.5 <= width / height <= 2.0:
            sizes.add((width, height))
    return sorted(sizes)


def output_size(width: int, height: int, resolution: int, buckets: bool) -> tuple[int, int]:
    """The output size of a ``width x height`` photo: a square, or its nearest aspect bucket."""
    if not buckets:
        return (resolution, resolution)
    aspect = math.log(width / height)
    return min(bucket_sizes(resolution), key=lambda s: (abs(math.log(s[0] / s[1]) - aspect), s))
