"""The article's algorithm as a plain PyTorch loop (CPU): the contender `make bench` measures sweeper against.

Same model (3072 -> hidden ReLU -> 10, truncated-normal init, zero biases), loss (mean cross-entropy +
reg * sum(W^2)/2), plain SGD, batches of uint8 images converted per step from a per-epoch permutation.
Prints one JSON line. Usage: python benchmarks/torch_loop.py --data-root DIR [--steps 2000]
"""

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402

from sweeper.task import data  # noqa: E402  (numpy only: the same cached CIFAR-10 loader)


def trunc_normal(fan_in: int, fan_out: int) -> torch.Tensor:
    std = 1 / math.sqrt(fan_in)
    w = torch.empty(fan_in, fan_out)
    torch.nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
    return w.requires_grad_()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=120)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--reg", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import_s = time.perf_counter() - STARTED

    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    ds = data.load(SimpleNamespace(name="cifar10", root=args.data_root, url="", md5=None, val_size=0))
    images, labels = torch.from_numpy(ds.train_images), torch.from_numpy(ds.train_labels).long()
    mean = torch.from_numpy(ds.mean_image)
    w1, w2 = trunc_normal(3072, args.hidden), trunc_normal(args.hidden, 10)
    b1, b2 = torch.zeros(args.hidden, requires_grad=True), torch.zeros(10, requires_grad=True)
    params = [w1, b1, w2, b2]
    steps_per_epoch = len(images) // args.batch_size
    first_step_s = train_started = None
    for step in range(args.steps):
        if step % steps_per_epoch == 0:
            order = torch.randperm(len(images))
        idx = order[(step % steps_per_epoch) * args.batch_size :][: args.batch_size]
        x = images[idx].float() - mean
        logits = torch.relu(x @ w1 + b1) @ w2 + b2
        loss = (
            torch.nn.functional.cross_entropy(logits, labels[idx])
            + args.reg * (w1.pow(2).sum() + w2.pow(2).sum()) / 2
        )
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= args.lr * p.grad
                p.grad = None
        if step == 0:
            first_step_s = time.perf_counter() - STARTED
            train_started = time.perf_counter()
    train_s = time.perf_counter() - train_started
    with torch.no_grad():
        test_x = torch.from_numpy(ds.test_images).float() - mean
        predictions = (torch.relu(test_x @ w1 + b1) @ w2 + b2).argmax(1)
        test_accuracy = (predictions == torch.from_numpy(ds.test_labels).long()).float().mean().item()
    print(
        json.dumps(
            {
                "import_s": import_s,
                "time_to_first_step_s": first_step_s,
                "train_s": train_s,
                "steps_per_s": (args.steps - 1) / train_s,
                "test_accuracy": test_accuracy,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
