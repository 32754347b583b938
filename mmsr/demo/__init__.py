"""The demo: the whole pipeline in miniature, offline, and its report (``mmsr demo``).

``pipeline`` runs the stages in order (``DemoConfig``, ``run_demo``); ``stages`` makes each
stage's call and the ``mmsr`` command line that does the same; ``report`` reads the runs and
writes ``report.md`` and ``report.html``; ``cli`` is the command. It sits above training and
evaluation, which it drives.
"""
