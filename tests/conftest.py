import os
import pathlib
import sys

from hypothesis import settings

# The tests import the package from service/ even without an editable install.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "service"))

# scripts/mutate.py runs the unit tests once per mutant: the same examples every run (a score
# must not depend on luck) and no deadline (a mutant may be slow without being wrong).
settings.register_profile("mutate", derandomize=True, deadline=None, database=None)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
