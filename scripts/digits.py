"""Classify scikit-learn's 8×8 handwritten digits with a softmax network
trained by Adam in mini-batches: scratchnet beyond the series.

    python scripts/digits.py                       # CPU, seed 0: accuracy and confusion matrix
    python scripts/digits.py --seeds 0-5 --device opencl
    tensorboard --logdir runs/digits

The data (1,797 images, 64 pixels of 0..16 each, 10 classes) ships with
scikit-learn (sklearn.datasets.load_digits: no download).  It is split once,
75% / 25% stratified with a fixed seed, and scaled to [0, 1].  The network is
64-128-10 (tanh, softmax), trained on the cross-entropy with sn.Adam in
mini-batches of 32 reshuffled every epoch (sn.train); --activation picks
the hidden layer's activation.

Every seed of --seeds draws the initial weights and the batches of one run,
logged to TensorBoard in <run>/seed<s> (training cost and test accuracy per
epoch).  The script prints each run's test accuracy and time, the confusion
matrix of the first seed's run (sklearn.metrics.confusion_matrix) and a
summary table, also saved as <run>/summary.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (scripts/common.py, however this file is run)

SCRIPT = "digits"
ACTIVATIONS = ("tanh", "relu", "elu", "sigmoid")


def load(seed: int = 0):
    """(x_train, labels_train, x_test, labels_test): the fixed split."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, l_train, l_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    return x_train, l_train, x_test, l_test


def one_hot(labels, k: int = 10):
    import numpy as np

    return np.eye(k, dtype=np.float32)[labels]


def predict(net, x):
    import scratchnet as sn

    return sn.to_numpy(net(x)).argmax(axis=1)


def epoch_log(net, x_test, labels_test, writer=None):
    """A monitor (``scratchnet/monitors/base.py``): every epoch, the training
    cost and the test accuracy, kept in ``costs`` and ``accuracies`` and,
    with a writer, sent to TensorBoard."""
    import numpy as np

    import scratchnet as sn

    class EpochLog(sn.Monitor):
        chunk = 1

        def __init__(self):
            self.costs, self.accuracies = [], []

        def after_chunk(self, train, first_epoch, costs):
            accuracy = float(np.mean(predict(net, x_test) == labels_test))
            self.costs += costs
            self.accuracies.append(accuracy)
            if writer is not None:
                writer.add_scalar("cost/train", costs[-1], first_epoch + 1)
                writer.add_scalar("accuracy/test", accuracy, first_epoch + 1)

        def finish(self, train):
            if writer is not None:
                writer.flush()

    return EpochLog()


def run(device: str = "cpu", epochs: int = 30, hidden: int = 128, eta: float = 3e-3,
        batch_size: int = 32, seed: int = 0, log_dir=None, per_epoch: bool = False,
        activation: str = "tanh", lam: float = 0.0, progress: bool = False) -> dict:
    """Train and evaluate once; returns accuracy, confusion matrix, cost,
    time, the test predictions and the trained parameters (host copies).
    ``log_dir``: log per-epoch cost and test accuracy to TensorBoard there;
    ``per_epoch``: keep them (``result["log"]``) without logging."""
    import numpy as np
    from sklearn.metrics import confusion_matrix

    import scratchnet as sn

    x_train, l_train, x_test, l_test = load()
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(log_dir=str(log_dir))
    layers = [sn.fully_connected(hidden, activation), sn.fully_connected(10, sn.softmax)]
    with sn.inference_network(64, layers, device=device, seed=seed) as net:
        log = epoch_log(net, x_test, l_test, writer) if (writer or per_epoch) else None
        with common.Stopwatch() as t:
            cost = sn.train(net, x_train, one_hot(l_train), sn.cross_entropy, epochs,
                            sn.Adam(eta, lam), batch_size=batch_size, seed=seed,
                            monitors=[log] if log else [], progress=progress)
            predicted = predict(net, x_test)
        params = sn.to_numpy(net.params)
    accuracy = float(np.mean(predicted == l_test))
    if writer is not None:
        writer.add_scalar("accuracy/final_test", accuracy, epochs)
        writer.close()
    return {"accuracy": accuracy, "cost": cost,
            "confusion": confusion_matrix(l_test, predicted, labels=range(10)),
            "seconds": t.seconds, "predicted": predicted, "params": params,
            "n_train": len(l_train), "n_test": len(l_test), "log": log}


def build_parser():
    p = common.parser(__doc__)
    common.add_device(p)
    common.add_seeds(p, "0", "seeds of the initial weights and the batches, one run each")
    p.add_argument("--epochs", type=common.positive_int, default=30, help="epochs per run")
    p.add_argument("--hidden", type=common.positive_int, default=128, help="hidden neurons")
    p.add_argument("--activation", default="tanh", choices=ACTIVATIONS,
                   help="hidden activation")
    p.add_argument("--eta", type=common.positive_float, default=3e-3,
                   help="Adam's learning rate η")
    p.add_argument("--lam", type=common.nonnegative_float, default=0.0,
                   help="Adam's weight decay λ")
    p.add_argument("--batch-size", type=common.positive_int, default=32,
                   help="samples per mini-batch")
    common.add_threads(p, default=None)
    common.add_log_dir(p, SCRIPT, " (one TensorBoard run per seed, the summary)")
    return p


def main(argv=None) -> int:
    args, folder = common.start(build_parser(), argv, SCRIPT)

    import scratchnet as sn

    if args.threads is not None:
        sn.set_num_threads(args.threads)
    results = []
    with common.progress_bar(total=len(args.seeds), desc="digits", unit="run",
                             disable=None if len(args.seeds) > 1 else True) as bar:
        for seed in args.seeds:
            results.append(run(args.device, args.epochs, args.hidden, args.eta,
                               args.batch_size, seed, folder / f"seed{seed}",
                               activation=args.activation, lam=args.lam,
                               progress=len(args.seeds) == 1 and sys.stderr.isatty()))
            bar.update()
    first = results[0]
    out = [f"digits: 64-{args.hidden}-10 ({args.activation}, softmax), Adam(η={args.eta:g}, "
           f"λ={args.lam:g}), batch {args.batch_size}, {args.epochs} epochs on {args.device}: "
           f"{first['n_train']} training / {first['n_test']} test images",
           f"confusion matrix of seed {args.seeds[0]} (rows: true digit, columns: predicted)",
           common.table(["", *map(str, range(10))],
                        [[str(d), *map(str, row)] for d, row in enumerate(first["confusion"])]),
           ""]
    rows = [[str(seed), f"{r['cost']:.4f}", f"{100 * r['accuracy']:.2f}%",
             f"{round(r['accuracy'] * r['n_test'])}/{r['n_test']}", f"{r['seconds']:.2f}"]
            for seed, r in zip(args.seeds, results)]
    if len(results) > 1:
        acc = common.stats(r["accuracy"] for r in results)
        sec = common.stats(r["seconds"] for r in results)
        rows.append(["median", "", f"{100 * acc.median:.2f}%",
                     f"range {100 * acc.low:.2f}-{100 * acc.high:.2f}%", f"{sec.median:.2f}"])
    out.append(common.table(["seed", "training cost", "test accuracy", "correct",
                             "training s"], rows))
    text = "\n".join(out)
    print(text)
    common.write_summary(folder, text, SCRIPT, argv)
    print(f"\nRun folder: {folder}  (tensorboard --logdir {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
