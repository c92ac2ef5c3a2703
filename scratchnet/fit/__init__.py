"""Training calls: one driver, two front ends.

    driver.py        the chunked loop over a schedule, with its monitors
    sgd.py           ``sgd``: full-batch training, the series' call
    minibatch.py     ``train``: mini-batches, resumable, data parallel
    common.py        what both check and build from their keywords
"""
