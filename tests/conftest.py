import pathlib
import sys

# The tests import the package from service/ even without an editable install.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "service"))
