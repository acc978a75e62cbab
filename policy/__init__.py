"""image-policy: decide whether container images may run, from rules written in YAML.

The public surface for scripts; everything else is internal.
"""

from policy.errors import PolicyError
from policy.evaluate import Decision, evaluate
from policy.loader import load_rules
from policy.reference import Reference, parse

__all__ = ["Decision", "PolicyError", "Reference", "evaluate", "load_rules", "parse"]
__version__ = "0.1.0"
