"""Write shapes.npz: 16x16 colour images of four shapes (square, cross, ring, bar) at random places, colours
and sizes, with noise; 4,000 training and 1,000 test images. Seconds, no download:

    python make_data.py            # -> shapes.npz
"""

from __future__ import annotations

import argparse

import numpy as np

SIZE, CLASSES = 16, 4


def image(kind: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 image (SIZE, SIZE, 3) of the shape `kind` on a noisy background."""
    canvas = rng.normal(128, 40, (SIZE, SIZE, 3))
    r = int(rng.integers(3, 6))
    cy, cx = (int(v) for v in rng.integers(r, SIZE - r, 2))
    y, x = np.ogrid[:SIZE, :SIZE]
    dy, dx = np.abs(y - cy), np.abs(x - cx)
    mask = [
        (dy <= r) & (dx <= r),  # square
        ((dy <= 1) & (dx <= r)) | ((dx <= 1) & (dy <= r)),  # cross
        np.abs(np.hypot(dy, dx) - r) <= 1,  # ring
        (dy <= r) & (dx <= 1),  # bar
    ][kind]
    canvas[mask] = rng.uniform(0, 255, 3)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def make(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, CLASSES, n)
    return np.stack([image(int(k), rng) for k in labels]), labels.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="shapes.npz")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    x_train, y_train = make(args.train, rng)
    x_test, y_test = make(args.test, rng)
    np.savez(args.out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    print(f"wrote {args.out}: x_train {x_train.shape}, x_test {x_test.shape}, {CLASSES} classes")


if __name__ == "__main__":
    main()
