"""Bridges to other training frameworks; each subpackage is the only place that imports its
framework, and nothing in the core imports them."""
