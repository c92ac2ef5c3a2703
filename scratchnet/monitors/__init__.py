"""What watches training between chunks of epochs.

    base.py          the protocol: ``Monitor`` and ``Rewind``
    guard.py         the divergence guard
    checkpointer.py  periodic checkpoints of verified states
    tensorboard.py   TensorBoard logging
    progress.py      the progress bar
"""
