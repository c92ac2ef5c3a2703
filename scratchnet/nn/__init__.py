"""Layers and networks, and what they are trained with.

    activations.py   the activation functions and their derivatives
    layers.py        the fully connected layer: inference and training forms
    network.py       the inference network (owns the parameters) and the
                     training network (owns every buffer of an epoch)
    costs.py         the quadratic cost and cross-entropy
    optim.py         SGD (momentum, Nesterov) and Adam
    checkpoint.py    save and load, checked before anything is allocated
    distributed.py   data-parallel training networks on torch.distributed
"""
