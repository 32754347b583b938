"""Evaluation: methods (direct / rag / on-demand / oracle), metrics, judge and report."""
