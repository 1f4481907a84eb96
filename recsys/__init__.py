"""recsys: personalized recommendations that understand item text.

Importing this package has no side effects and imports neither torch nor transformers.
"""

__version__ = "0.1.0"
