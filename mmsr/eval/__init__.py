"""Evaluation: methods (direct / rag / on-demand / oracle), the resumable loop, metrics, judge
and report; the ``mmsr eval``, ``mmsr report`` and ``mmsr rollout`` commands."""
