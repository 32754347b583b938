"""Warm starts as one command: a recipe file names every training stage (SFT, vision) with
step budgets; the runner chains them and then measures the result with the evaluation's own
methods on validation questions from the train split.

Above both ``mmsr.train`` (the trainers) and ``mmsr.eval`` (the methods), as the demo is.
``recipe``: parsing and running a recipe; ``checks``: the evaluation and the checks' values;
``cli``: ``mmsr train warmstart``; ``recipes/``: the packaged recipe files.
"""
