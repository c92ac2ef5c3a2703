"""Classify scikit-learn's 8×8 handwritten digits with a softmax network
trained by Adam in mini-batches: scratchnet beyond the series.

    python scripts/digits.py                       # CPU, prints accuracy + confusion
    python scripts/digits.py --device opencl --log-dir runs/digits

The data (1,797 images, 64 pixels of 0..16 each, 10 classes) ships with
scikit-learn (``sklearn.datasets.load_digits``: no download).  It is split
once, 75% / 25% stratified with a fixed seed, and scaled to [0, 1].  The
network is 64-128-10 (tanh, softmax), trained on the cross-entropy with
``sn.Adam`` in mini-batches of 32 reshuffled every epoch (``sn.train``).
(tanh rather than relu: with the series' initialisation, b ~ N(0, 1) and
w ~ N(0, 1)/64, half the relu units start dead, and Adam moves the biases
by plain SGD; over six seeds tanh gave 97.3–98.4%, relu 96.9–98.0%.)
The script prints the test accuracy, the time and the confusion matrix, and
with ``--log-dir`` writes the per-epoch training cost and test accuracy for
TensorBoard.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import scratchnet as sn


def load(seed: int = 0):
    """(x_train, labels_train, x_test, labels_test): the fixed split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, l_train, l_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    return x_train, l_train, x_test, l_test


def one_hot(labels: np.ndarray, k: int = 10) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[labels]


def confusion(labels: np.ndarray, predicted: np.ndarray, k: int = 10) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


class EpochLog(sn.Monitor):
    """A monitor (``scratchnet/monitors/base.py``): every epoch, the training cost
    and the test accuracy, kept and, with a writer, sent to TensorBoard."""

    chunk = 1

    def __init__(self, net, x_test, labels_test, writer=None):
        self.net, self.x_test, self.labels_test, self.writer = net, x_test, labels_test, writer
        self.costs, self.accuracies = [], []


    def after_chunk(self, train, first_epoch, costs):
        accuracy = float(np.mean(predict(self.net, self.x_test) == self.labels_test))
        self.costs += costs
        self.accuracies.append(accuracy)
        if self.writer is not None:
            self.writer.add_scalar("cost/train", costs[-1], first_epoch + 1)
            self.writer.add_scalar("accuracy/test", accuracy, first_epoch + 1)

    def finish(self, train):
        if self.writer is not None:
            self.writer.flush()


def predict(net, x) -> np.ndarray:
    return sn.to_numpy(net(x)).argmax(axis=1)


def run(device: str = "cpu", epochs: int = 30, hidden: int = 128, eta: float = 3e-3,
        batch_size: int = 32, seed: int = 0, log_dir=None, per_epoch: bool = False,
        activation: str = "tanh", lam: float = 0.0) -> dict:
    """Train and evaluate once; returns accuracy, confusion, cost, time,
    the test predictions and the trained parameters (host copies)."""
    x_train, l_train, x_test, l_test = load()
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(log_dir=str(log_dir))
    layers = [sn.fully_connected(hidden, activation), sn.fully_connected(10, sn.softmax)]
    with sn.inference_network(64, layers, device=device, seed=seed) as net:
        log = EpochLog(net, x_test, l_test, writer) if (writer or per_epoch) else None
        start = time.perf_counter()
        cost = sn.train(net, x_train, one_hot(l_train), sn.cross_entropy, epochs,
                        sn.Adam(eta, lam), batch_size=batch_size, seed=seed,
                        monitors=[log] if log else [])
        predicted = predict(net, x_test)
        seconds = time.perf_counter() - start
        params = sn.to_numpy(net.params)
    if writer is not None:
        writer.add_scalar("accuracy/final_test", float(np.mean(predicted == l_test)), epochs)
        writer.close()
    return {"accuracy": float(np.mean(predicted == l_test)), "cost": cost,
            "confusion": confusion(l_test, predicted), "seconds": seconds,
            "predicted": predicted, "params": params, "n_train": len(l_train),
            "n_test": len(l_test), "log": log}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, opencl, ...")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=128, help="hidden neurons")
    parser.add_argument("--activation", default="tanh", help="hidden activation: tanh, relu, "
                        "elu, sigmoid")
    parser.add_argument("--lam", type=float, default=0.0, help="Adam's weight decay λ")
    parser.add_argument("--eta", type=float, default=3e-3, help="Adam's learning rate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and shuffling")
    parser.add_argument("--log-dir", default=None, help="TensorBoard run directory")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for training (default: scratchnet's rule, one "
                             "thread for products this small)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        sn.set_num_threads(args.threads)
    result = run(args.device, args.epochs, args.hidden, args.eta, args.batch_size, args.seed,
                 args.log_dir, activation=args.activation, lam=args.lam)
    print(f"digits: 64-{args.hidden}-10 ({args.activation}, softmax), Adam(eta={args.eta}, "
          f"lam={args.lam}), batch "
          f"{args.batch_size}, {args.epochs} epochs on {args.device}: "
          f"{result['n_train']} training / {result['n_test']} test images")
    print(f"training cost (cross-entropy, last epoch) {result['cost']:.4f}")
    print(f"test accuracy {100 * result['accuracy']:.2f}%  "
          f"({int(round(result['accuracy'] * result['n_test']))}/{result['n_test']}) "
          f"in {result['seconds']:.2f} s")
    print("confusion matrix (rows: true digit, columns: predicted)")
    print("     " + "".join(f"{d:4d}" for d in range(10)))
    for d, row in enumerate(result["confusion"]):
        print(f"  {d}  " + "".join(f"{c:4d}" for c in row))
    if args.log_dir:
        print(f"TensorBoard: tensorboard --logdir {args.log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
